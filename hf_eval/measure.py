"""Run a command as a child, passing its output through, and record wall time and peak memory: the one wrapper the
experiment runner and the benchmarks measure commands with.

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
from pathlib import Path

from hf_common.atomic import write_text_atomic


def main() -> int:
    result_path, cmd = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    returncode = subprocess.run(cmd).returncode
    record = {"rc": returncode, "seconds": round(time.perf_counter() - started, 2),
              "peak_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}
    write_text_atomic(Path(result_path), json.dumps(record), force=True)
    return returncode


def measured(cmd: list) -> dict:
    """Measure ``cmd`` in a fresh wrapper process (its output captured): ``rc``, ``seconds``, ``peak_mib`` and the tail
    of its standard error."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hf-measure-") as tmp:
        result = Path(tmp) / "measure.json"
        done = subprocess.run([sys.executable, "-m", "hf_eval.measure", str(result), *map(str, cmd)], capture_output=True,
                              text=True)
        if not result.exists():
            raise RuntimeError(f"the measuring wrapper wrote no record: {done.stderr[-2000:]}")
        return {**json.loads(result.read_text()), "stderr": done.stderr[-2000:]}


if __name__ == "__main__":
    raise SystemExit(main())
