"""A resumable experiment: named steps, each one command that writes one output; finished steps are skipped.

Used by ``benchmarks/bench_cross_family.py`` and the demo.  Every step runs in its own process
through ``hf_eval.measure``, so its wall time and peak memory are recorded; a step counts as done
when its output exists (all outputs are written atomically) and its record says it succeeded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hf_common.atomic import write_text_atomic
from hf_common.console import Console


class StepFailed(RuntimeError):
    pass


class Experiment:
    def __init__(self, work: Path, console: Console):
        self.work = work
        self.console = console
        work.mkdir(parents=True, exist_ok=True)
        self.records_path = work / "steps.json"
        self.records: dict[str, dict] = json.loads(self.records_path.read_text()) if self.records_path.exists() else {}
        self._sharing = threading.local()  # inside ``together``: this thread's share of the cores

    def together(self, *calls: Callable):
        """Run independent steps (each call runs one or more of them) at the same time, the CPU cores split among them:
        on 2 cores two one-thread processes get through short-sequence training and generation about 1.3x faster than
        one two-thread process after the other (their start-up, loading and generation are mostly single-threaded).
        Each step's output then goes to ``WORK/NAME.out`` instead of the terminal.  Returns the calls' results."""
        cores = os.cpu_count() or 1
        if len(calls) < 2 or cores < 2:
            return [call() for call in calls]

        def share(call):
            self._sharing.threads = max(1, cores // len(calls))
            return call()

        with ThreadPoolExecutor(len(calls)) as pool:
            return [future.result() for future in [pool.submit(share, call) for call in calls]]

    def tool(self, name: str) -> str:
        """A console script of ours: the one beside this interpreter (a virtual environment), else the one on PATH."""
        beside = Path(sys.executable).with_name(name)
        return str(beside) if beside.exists() else shutil.which(name) or str(beside)

    def run(self, name: str, cmd: list[str], output: Path, *, checkpoints: Path | None = None) -> dict:
        """Run step ``name`` unless it is done with the same command.  ``checkpoints``: the folder where the step's
        training writes its checkpoints; a step stopped part-way (a session's end, ``--limit``, a crash) then
        continues from its last one (``--resume``) instead of step 0."""
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")  # step names are prose; file names are not
        # one invocation runs a step at a time: another that needs it meanwhile waits, then finds it done
        with locked(self.work, f".{slug}.lock"):
            with locked(self.work):
                if self.records_path.exists():
                    self.records.update(json.loads(self.records_path.read_text()))
            return self._run(name, slug, cmd, output, checkpoints)

    def _run(self, name: str, slug: str, cmd: list[str], output: Path, checkpoints: Path | None) -> dict:
        record = self.records.get(name)
        # the same step: the same arguments (where the program is installed differs from machine to machine)
        same = record is not None and record.get("cmd", [str(c) for c in cmd])[1:] == [str(c) for c in cmd][1:]
        if output.exists() and record and record["rc"] == 0 and same:
            self.console.info(f"· {name}: done earlier ({record['seconds']:.0f} s), skipped")
            return record
        if output.exists() and record and not same:
            self.console.info(f"· {name}: its command changed since it was done; running it again")
        measure = self.work / f".{slug}.measure.json"
        # Resume only a step that never finished: a finished one whose command changed starts again from step 0.  The
        # tool refuses a checkpoint made with other inputs or settings, so a resumed step never mixes two trainings;
        # the flag is not part of the step's identity (its recorded command stays the one asked for).
        resume = (checkpoints is not None and not (record and record["rc"] == 0)
                  and checkpoints.is_dir() and any(checkpoints.iterdir()))
        if resume:
            self.console.info(f"· {name}: continuing from its checkpoint in {checkpoints}")
        wrapped = [sys.executable, "-m", "hf_eval.measure", str(measure), *map(str, cmd), *(["--resume"] if resume else [])]
        threads = getattr(self._sharing, "threads", None)
        if threads is None:
            self.console.rule(name)
            subprocess.run(wrapped)
        else:  # beside other steps: its own share of the cores, its output in a file
            log = self.work / f"{slug}.out"
            self.console.info(f"· {name}: running beside other steps on {threads} thread(s), output in {log}")
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            with open(log, "w") as handle:
                subprocess.run(wrapped, stdout=handle, stderr=subprocess.STDOUT, env=env)
        if not measure.exists():
            raise StepFailed(f"step {name}: the measuring wrapper wrote no record; rerun to resume from it")
        record = {**json.loads(measure.read_text()), "cmd": [str(c) for c in cmd]}
        if resume:  # its seconds are the resumed part's only
            record["resumed"] = True
        measure.unlink()
        with locked(self.work):  # another invocation may be working in the same folder: merge, never overwrite
            on_disk = json.loads(self.records_path.read_text()) if self.records_path.exists() else {}
            self.records = {**on_disk, **self.records, name: record}
            write_text_atomic(self.records_path, json.dumps(self.records, indent=2) + "\n", force=True)
        if record["rc"] != 0 or not output.exists():
            where = f" (its output: {self.work / (slug + '.out')})" if threads is not None else ""
            raise StepFailed(f"step {name} failed (exit {record['rc']}){where}; rerun to resume from it")
        if threads is not None:
            self.console.info(f"· {name}: done ({record['seconds']:.0f} s)")
        return record


@contextlib.contextmanager
def locked(work: Path, name: str = ".lock") -> Iterator[None]:
    """An exclusive lock on a work folder (or on one step of it: ``name``), for read-modify-write of its shared files
    (``steps.json``, ``results.json``) by several invocations at once (e.g. one method per core)."""
    with open(work / name, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
