"""The benchmarks: scripts that print timings, memory and scores, run from the repository root as modules
(``python -m benchmarks NAME ...``, or ``python -m benchmarks.MODULE ...``); what each measures is in
``benchmarks/README.md`` and the committed figures in ``benchmarks/results/``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_command(name: str) -> list[str]:
    """The command that runs benchmark module ``name`` in a child process (with :func:`child_env`)."""
    return [sys.executable, "-m", f"benchmarks.{name}"]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: the repository root first on its import path, wherever the parent was
    started from, so that ``benchmarks`` and the toolkit's packages resolve."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}
