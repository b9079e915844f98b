"""Many invocations of the cross-family benchmark at once, on a machine with room for them (a GPU machine).

On 2 CPU cores a distill run of the benchmark takes about 20 minutes; a table with three seeds, null-source
twins and a validation grid for each option is days of work there.  The part that needs the source experts'
base models (training the experts, scoring them, their answers to the unlabelled prompts) is done once on the
CPU and cached in the work folder::

    python benchmarks/bench_cross_family.py --mode cpu --methods distill-lora --prepare --work W [--variant ...]

and this script then runs the invocations that train and score the target's runs, ``--jobs`` at a time, each
with its own log, on that folder (the benchmark's steps share it under a lock, and every step is skipped when
its output exists).  The numbers are the benchmark's: float32 (``--dtype``), the same splits, grids and seeds.

    python benchmarks/gpu_cross_family.py --work W --runs RUNS_FILE [--jobs 8] [--limit 540] [--pack OUT.tgz]

RUNS_FILE holds one invocation per line (``bench_cross_family.py`` arguments after ``--mode cpu --work W``;
``#`` starts a comment); the longest first.  At ``--limit`` seconds what still runs is stopped (its finished
steps stay recorded; run again to resume), the report is rendered and, with ``--pack``, the results, step
records, evaluations (predictions included, for the paired intervals) and logs are packed into one file.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--limit", type=float, default=540.0, help="seconds; then every run still going is stopped")
    parser.add_argument("--data-dir", type=Path, default=None, help="bench_cross_family.py's --data-dir")
    parser.add_argument("--pack", type=Path, default=None)
    args = parser.parse_args()
    started = time.monotonic()
    bench = [sys.executable, str(HERE / "bench_cross_family.py"), "--mode", "cpu", "--work", str(args.work),
             *(["--data-dir", str(args.data_dir)] if args.data_dir else [])]
    lines = [line.split("#")[0].strip() for line in args.runs.read_text().splitlines()]
    queue = [shlex.split(line) for line in lines if line]
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # plans and null sources first, once (every invocation needs them; made in parallel they would race)
    subprocess.run([*bench, "--methods", "project", "--prepare"], stdout=open(logs / "prepare.log", "w"),
                   stderr=subprocess.STDOUT, check=True)
    running: dict[int, tuple[subprocess.Popen, float]] = {}
    results: dict[int, int | None] = {}
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    next_run = 0
    while (next_run < len(queue) or running) and time.monotonic() - started < args.limit:
        while next_run < len(queue) and len(running) < args.jobs:
            log = open(logs / f"run{next_run}.log", "w")
            log.write(" ".join(queue[next_run]) + "\n")
            log.flush()
            running[next_run] = (subprocess.Popen([*bench, *queue[next_run]], stdout=log, stderr=subprocess.STDOUT, env=env,
                                                  start_new_session=True), time.monotonic())
            next_run += 1
        time.sleep(2)
        for i, (proc, since) in list(running.items()):
            if proc.poll() is not None:
                results[i] = proc.returncode
                sys.stderr.write(f"run {i} ({' '.join(queue[i])}): exit {proc.returncode} after "
                                 f"{time.monotonic() - since:.0f} s\n")
                del running[i]
    for i, (proc, _) in running.items():  # out of time: stop the whole run (its hf-fuse / hf-eval children too)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        results[i] = None
        sys.stderr.write(f"run {i} ({' '.join(queue[i])}): stopped at the limit\n")
    subprocess.run([sys.executable, str(HERE / "report_cross_family.py"), str(args.work)], check=False)
    if args.pack:
        with tarfile.open(args.pack, "w:gz") as tar:
            for name in ("results.json", "results.md", "steps.json", "logs"):
                if (args.work / name).exists():
                    tar.add(args.work / name, arcname=name)
            for folder in sorted(args.work.glob("eval-*")):
                for item in ("results.json", "predictions"):
                    if (folder / item).exists():
                        tar.add(folder / item, arcname=f"{folder.name}/{item}")
            for report in sorted(args.work.glob("*/fusion_report.json")):
                tar.add(report, arcname=f"{report.parent.name}/fusion_report.json")
    done = sum(1 for rc in results.values() if rc == 0)
    sys.stderr.write(f"{done} of {len(queue)} invocations finished in {time.monotonic() - started:.0f} s\n")
    sys.exit(0 if done == len(queue) else 1)


if __name__ == "__main__":
    main()
