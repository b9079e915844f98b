"""Run a command as a child process and print its wall time and peak resident memory as JSON.

Usage: python benchmarks/_measure.py CMD [ARGS...]
"""

import json
import resource
import subprocess
import sys
import time

start = time.perf_counter()
completed = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
seconds = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
sys.stdout.write(json.dumps({"rc": completed.returncode, "seconds": seconds, "peak_mib": peak_kib / 1024,
                             "stderr": completed.stderr[-2000:]}) + "\n")
