"""Glue shared by the command-line entry points: error mapping and atomic text output."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator
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


# -- options every tool shares, declared once (each tool may word its help for its own output) ------------------------
def _shared() -> dict[str, tuple[tuple[str, ...], dict]]:
    return {
        "base_model": (("--base-model",), dict(required=True, type=click.Path(path_type=Path), metavar="PATH",
                       help="Base model: a Hugging Face model folder, a .gguf file, a folder with one .gguf, or "
                            "smollm2 / gemma3 (the registry-installed models).")),
        "base_model_id": (("--base-model-id",), dict(default=None, metavar="ORG/NAME",
                          help="The base model's Hub id, written into the adapter's config and card (default: the "
                               "registry's id, or the one the model's files state).")),
        "device": (("--device",), dict(default=None, help="cuda, cuda:1, cpu... (default: CUDA if available).")),
        "dtype": (("--dtype",), dict(type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
                  help="Model dtype (default: bfloat16 on GPU, float32 on CPU).")),
        "checkpoint_dir": (("--checkpoint-dir",), dict(type=click.Path(path_type=Path), default=None,
                           help="Where checkpoints go (default: OUT_DIR.ckpt beside the output).")),
        "resume": (("--resume",), dict(is_flag=True, help="Continue from the last checkpoint (written every "
                                                          "--checkpoint-every steps and on Ctrl-C).")),
        "report_to": (("--report-to",), dict(type=click.Choice(["none", "tensorboard", "wandb"]), default="none",
                      show_default=True, help="Log every optimiser step (losses, lr, α per group where there is one) "
                                              "to TensorBoard event files or an offline W&B run, through Accelerate's "
                                              "trackers.")),
        "tracker_dir": (("--tracker-dir",), dict(type=click.Path(path_type=Path), default=None,
                        help="Where the tracker writes (default: OUT_DIR.runs beside the output).")),
        "force": (("--force",), dict(is_flag=True, help="Replace an existing output.")),
        "quiet": (("-q", "--quiet"), dict(is_flag=True, help="Print only errors.")),
        "debug": (("--debug",), dict(is_flag=True, help="Show tracebacks and debug logging.")),
    }


def shared_options(*names: str, **helps: str) -> Callable:
    """A decorator adding the shared options ``names`` (in that order) to a command; ``helps`` rewords one for it."""
    table = _shared()

    def decorate(func: Callable) -> Callable:
        for name in reversed(names):
            decls, kwargs = table[name]
            func = click.option(*decls, **{**kwargs, **({"help": helps[name]} if name in helps else {})})(func)
        return func

    return decorate


def generated_options(params: list[click.Parameter]) -> Callable:
    """A decorator adding ready-made parameters (``hf_common.settings.click_options``) to a command."""
    def decorate(func: Callable) -> Callable:
        # what click's own decorators do: the command reads the function's __click_params__, innermost first
        func.__dict__.setdefault("__click_params__", []).extend(reversed(params))
        return func

    return decorate
