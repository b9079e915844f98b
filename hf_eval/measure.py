"""Run a command as a child, passing its output through, and record wall time and peak memory.

    python -m hf_eval.measure RESULT.json CMD [ARGS...]

Peak resident memory is per process tree only when measured from a fresh parent, hence this
tiny wrapper (``RUSAGE_CHILDREN`` of this process covers exactly the one command).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def main() -> int:
    result_path, cmd = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    returncode = subprocess.run(cmd).returncode
    record = {"rc": returncode, "seconds": round(time.perf_counter() - started, 2),
              "peak_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}
    with open(result_path, "w") as handle:
        json.dump(record, handle)
    return returncode


if __name__ == "__main__":
    raise SystemExit(main())
