"""A resumable experiment: named steps, each one command that writes one output; finished steps are skipped.

Used by ``benchmarks/bench_cross_family.py`` and the demo.  Every step runs in its own process
through ``hf_eval.measure``, so its wall time and peak memory are recorded; a step counts as done
when its output exists (all outputs are written atomically) and its record says it succeeded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
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

    def tool(self, name: str) -> str:
        """A console script of ours: the one beside this interpreter (a virtual environment), else the one on PATH."""
        beside = Path(sys.executable).with_name(name)
        return str(beside) if beside.exists() else shutil.which(name) or str(beside)

    def run(self, name: str, cmd: list[str], output: Path) -> dict:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")  # step names are prose; file names are not
        # one invocation runs a step at a time: another that needs it meanwhile waits, then finds it done
        with locked(self.work, f".{slug}.lock"):
            with locked(self.work):
                if self.records_path.exists():
                    self.records.update(json.loads(self.records_path.read_text()))
            return self._run(name, slug, cmd, output)

    def _run(self, name: str, slug: str, cmd: list[str], output: Path) -> dict:
        record = self.records.get(name)
        # the same step: the same arguments (where the program is installed differs from machine to machine)
        same = record is not None and record.get("cmd", [str(c) for c in cmd])[1:] == [str(c) for c in cmd][1:]
        if output.exists() and record and record["rc"] == 0 and same:
            self.console.info(f"· {name}: done earlier ({record['seconds']:.0f} s), skipped")
            return record
        if output.exists() and record and not same:
            self.console.info(f"· {name}: its command changed since it was done; running it again")
        self.console.rule(name)
        measure = self.work / f".{slug}.measure.json"
        subprocess.run([sys.executable, "-m", "hf_eval.measure", str(measure), *map(str, cmd)])
        if not measure.exists():
            raise StepFailed(f"step {name}: the measuring wrapper wrote no record; rerun to resume from it")
        record = {**json.loads(measure.read_text()), "cmd": [str(c) for c in cmd]}
        measure.unlink()
        with locked(self.work):  # another invocation may be working in the same folder: merge, never overwrite
            on_disk = json.loads(self.records_path.read_text()) if self.records_path.exists() else {}
            self.records = {**on_disk, **self.records, name: record}
            write_text_atomic(self.records_path, json.dumps(self.records, indent=2) + "\n", force=True)
        if record["rc"] != 0 or not output.exists():
            raise StepFailed(f"step {name} failed (exit {record['rc']}); rerun to resume from it")
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
