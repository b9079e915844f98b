"""Many invocations of the cross-family benchmark at once, on a machine with room for them (a GPU machine).

On 2 CPU cores a distill run of the benchmark takes about 20 minutes; a table with three seeds, null-source
twins and a validation grid for each option is days of work there.  On a GPU each run takes seconds and the
machine has room for several at once, so this script runs benchmark invocations ``--jobs`` at a time, each with
its own log, phase by phase: lines ``---`` cut RUNS_FILE into phases, each run to its end before the next
starts (e.g. ``--prepare`` of each work folder first: experts, plans, null sources, answers; then the runs that
use them).  Invocations on one work folder share it under its lock, every step is skipped when its output
exists, and answer caches are locked, so nothing is done twice.  The numbers are the benchmark's: float32
(``--dtype``), the same splits, grids and seeds.

    python -m benchmarks runs --runs RUNS_FILE [--jobs 8] [--limit 540] [--pack OUT.tgz]

RUNS_FILE holds one invocation per line (``bench_cross_family.py`` arguments; ``#`` starts a comment), the longest
first.  At ``--limit`` seconds what still runs is stopped (its finished steps stay recorded, a training stopped
part-way keeps its last checkpoint: run again to resume), each work folder's report is rendered and, with ``--pack``,
their results, step records, evaluations (predictions included, for the paired intervals) and logs are packed into
one file.
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

from benchmarks import child_env, module_command

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--limit", type=float, default=540.0, help="seconds; then every run still going is stopped")
    parser.add_argument("--pack", type=Path, default=None)
    args = parser.parse_args()
    started = time.monotonic()
    phases = read_runs(args.runs)
    works = sorted({argv[argv.index("--work") + 1] for phase in phases for argv in phase if "--work" in argv})
    logs = Path(works[0] if works else ".") / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, int | None] = {}
    for number, phase in enumerate(phases):
        results |= run_all(phase, f"p{number}-", logs, args.jobs, started + args.limit)
    for work in works:
        subprocess.run([*module_command("report_cross_family"), work], check=False, env=child_env())
    if args.pack:
        with tarfile.open(args.pack, "w:gz") as tar:
            for work in map(Path, works):
                pack(tar, work)
    done = sum(1 for rc in results.values() if rc == 0)
    sys.stderr.write(f"{done} of {len(results)} invocations finished in {time.monotonic() - started:.0f} s\n")
    sys.exit(0 if done == len(results) else 1)


def read_runs(path: Path) -> list[list[list[str]]]:
    """A runs file's invocations (argument lists), in phases: ``---`` on a line of its own starts the next phase;
    ``#`` starts a comment."""
    phases: list[list[list[str]]] = [[]]
    for line in (raw.split("#")[0].strip() for raw in path.read_text().splitlines()):
        if line == "---":
            phases.append([])
        elif line:
            phases[-1].append(shlex.split(line))
    return phases


def run_all(queue: list[list[str]], prefix: str, logs: Path, jobs: int, deadline: float) -> dict[str, int | None]:
    """Every invocation of ``queue``, ``jobs`` at a time; what runs at ``deadline`` is stopped (result None)."""
    bench = module_command("bench_cross_family")
    running: dict[int, tuple[subprocess.Popen, float]] = {}
    results: dict[str, int | None] = {}
    env = child_env({"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    next_run = 0
    while (next_run < len(queue) or running) and time.monotonic() < deadline:
        while next_run < len(queue) and len(running) < jobs:
            log = open(logs / f"{prefix}{next_run}.log", "w")
            log.write(" ".join(queue[next_run]) + "\n")
            log.flush()
            running[next_run] = (subprocess.Popen([*bench, *queue[next_run]], stdout=log, stderr=subprocess.STDOUT, env=env,
                                                  start_new_session=True), time.monotonic())
            next_run += 1
        time.sleep(1)
        for i, (proc, since) in list(running.items()):
            if proc.poll() is not None:
                results[f"{prefix}{i}"] = proc.returncode
                sys.stderr.write(f"{prefix}{i} ({' '.join(queue[i])}): exit {proc.returncode} after "
                                 f"{time.monotonic() - since:.0f} s\n")
                del running[i]
    for i, (proc, _) in running.items():  # out of time: stop the whole run (its hf-fuse / hf-eval children too)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        results[f"{prefix}{i}"] = None
        sys.stderr.write(f"{prefix}{i} ({' '.join(queue[i])}): stopped at the limit\n")
    for i in range(next_run, len(queue)):
        results[f"{prefix}{i}"] = None
    return results


def pack(tar: tarfile.TarFile, work: Path) -> None:
    """A work folder's results, step records, evaluations (with predictions) and logs; no adapters."""
    for path in [*sorted(work.glob("results*.json")), *sorted(work.glob("results*.md")), work / "steps.json", work / "logs"]:
        if path.exists():
            tar.add(path, arcname=f"{work.name}/{path.name}")
    for folder in sorted(work.glob("eval-*")):
        for item in ("results.json", "predictions"):
            if (folder / item).exists():
                tar.add(folder / item, arcname=f"{work.name}/{folder.name}/{item}")
    for report in sorted(work.glob("*/fusion_report.json")):
        tar.add(report, arcname=f"{work.name}/{report.parent.name}/fusion_report.json")


if __name__ == "__main__":
    main()
