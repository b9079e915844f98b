"""Glue shared by the command-line entry points: error mapping and atomic text output."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from .console import EXIT_BAD_INPUT, EXIT_INTERRUPTED, Console
from .errors import HFError
from .plan import check_output_path


@contextlib.contextmanager
def errors_to_exit_codes(console: Console) -> Iterator[None]:
    """Map the toolkit's exceptions to one clear line and exit code 2 (tracebacks with --debug)."""
    try:
        yield
    except HFError as exc:
        if console.debug:
            raise
        console.abort(str(exc), EXIT_BAD_INPUT)
    except OSError as exc:  # file-system errors outside our own checks (permissions, full disk...)
        if console.debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        console.abort(f"{where}{exc.strerror or exc}", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        console.abort("interrupted", EXIT_INTERRUPTED)


def check_json_target(json_path: str | None, force: bool) -> None:
    if json_path and json_path != "-":
        check_output_path(Path(json_path), force, "JSON report")


def write_json(json_path: str | None, payload: dict, *, force: bool) -> None:
    """Write ``payload`` to a path atomically, or to stdout for ``-``."""
    if not json_path:
        return
    text = json.dumps(payload, indent=2) + "\n"
    if json_path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(json_path)
    check_output_path(path, force, "JSON report")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
