"""Glue shared by the command-line entry points: error mapping and atomic text output."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import click

from .atomic import check_output_path, destination_of, write_text_atomic
from .console import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, Console
from .errors import HFError, one_line


@contextlib.contextmanager
def errors_to_exit_codes(console: Console) -> Iterator[None]:
    """Map the toolkit's exceptions to one clear line and exit code 2, anything unexpected to exit code 4
    (tracebacks with --debug)."""
    try:
        yield
    except HFError as exc:
        if console.debug:
            raise
        console.abort(str(exc), EXIT_BAD_INPUT)
    except OSError as exc:  # file-system errors outside our own checks (permissions, full disk...)
        if console.debug:
            raise
        where = f"{destination_of(exc.filename)}: " if getattr(exc, "filename", None) else ""
        console.abort(f"{where}{exc.strerror or exc}", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        console.abort("interrupted", EXIT_INTERRUPTED)
    except (click.ClickException, click.exceptions.Abort, click.exceptions.Exit):
        raise  # usage errors: click prints them and exits 2
    except Exception as exc:  # a bug of ours or of a library: its own exit code, so no pipeline reads it as a verdict
        if console.debug:
            raise
        console.abort(f"unexpected error ({type(exc).__name__}: {one_line(exc)}); please report it, with the output of "
                      "--debug", EXIT_INTERNAL)


class OneLineUsageErrors:
    """Mixin for a click command or group: a usage error (unknown option, bad choice, missing argument) prints one
    line, ``error: ...`` with the command's name, and exits 2, like every other refusal (click's own three-line
    ``Usage: / Try ... / Error:`` block is for interactive shells; ``--help`` still shows the usage)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            name = exc.ctx.command_path if exc.ctx is not None else (prog_name or "")
            Console().abort(f"{name}: {exc.format_message()}" if name else exc.format_message(), EXIT_BAD_INPUT)
        except click.ClickException as exc:
            Console().abort(exc.format_message(), exc.exit_code)
        except click.exceptions.Abort:
            Console().abort("interrupted", EXIT_INTERRUPTED)
        raise SystemExit(rv if isinstance(rv, int) else 0)


class Command(OneLineUsageErrors, click.Command):
    pass


class Group(OneLineUsageErrors, click.Group):
    pass


def check_json_target(json_path: str | None, force: bool) -> None:
    if json_path and json_path != "-":
        check_output_path(Path(json_path), force, "JSON report", file=True)


def write_json(json_path: str | None, payload: dict, *, force: bool) -> None:
    """Write ``payload`` to a path atomically, or to stdout for ``-``."""
    if not json_path:
        return
    text = json.dumps(payload, indent=2) + "\n"
    if json_path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_text_atomic(Path(json_path), text, force=force, what="JSON report")


def default_checkpoint_dir(output: Path) -> Path:
    """Where a training command's checkpoints go without ``--checkpoint-dir``: ``OUT.ckpt`` beside its output (hf-fuse,
    hf-eval train-expert and replay-tune; the benchmark's runner looks there to resume a step)."""
    return output.with_name(output.name + ".ckpt")


def int_or_auto(value: str) -> int | str:
    """Parse an option that takes a whole number or the word ``auto`` (range checks belong to the settings)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter("must be a positive integer or 'auto'") from None


def library_environment() -> None:
    """What hf-fuse and hf-eval set before any model library is imported: nothing downloaded at run time, only
    transformers' errors, no Hub or weight-loading bars (the commands draw their own), no deprecation notices."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
