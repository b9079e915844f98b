"""One exception tree for the whole toolkit.

Library code raises these; only the CLI layer turns them into exit codes
(see ``hf_common.console.EXIT_*``).  Each subclass also inherits the builtin
exception a Python caller would expect (``ValueError`` for bad content,
``OSError`` for file-system problems), as PEFT does.
"""

from __future__ import annotations

import re

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # terminal colour and cursor codes some libraries put in messages


def one_line(exc: object, limit: int = 300) -> str:
    """An exception (or any text) as one plain line: escape codes dropped, whitespace collapsed, length capped."""
    text = " ".join(_ESCAPES.sub("", str(exc)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class HFError(Exception):
    """Base class of every error the toolkit raises on purpose."""

    def __init__(self, message: str, path: str | None = None):
        self.path = str(path) if path is not None else None
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(HFError, ValueError):
    """An input file exists but its content is wrong (shape, dtype, NaN, JSON...)."""


class AdapterFormatError(InputError):
    """A PEFT adapter folder is malformed or inconsistent."""


class UnsupportedAdapterError(InputError):
    """A well-formed adapter of a kind we cannot fuse (DoRA, non-LoRA PEFT types...)."""


class PlanFormatError(InputError):
    """A fusion plan file is not a valid plan (layout, checksum, version)."""


class PlanVersionError(PlanFormatError):
    """A plan written by a newer or unknown format version."""


class ConfigError(HFError, ValueError):
    """Invalid settings; the message names the command-line flag."""


class FileAccessError(HFError, OSError):
    """A file or folder is missing, unreadable, or would be overwritten."""


class OutputExistsError(FileAccessError):
    """The output exists and ``--force`` was not given."""


def require_int(flag: str, value: object, low: int = 1, high: int | None = None, *, auto: bool = False) -> None:
    """The settings' whole-number check: a :class:`ConfigError` naming ``flag`` unless ``value`` is an int (not a
    bool) from ``low`` to ``high``, or the word ``auto`` where ``auto`` allows it."""
    if auto and value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        wanted = "a positive integer" if (low, high) == (1, None) else f"an integer from {low} to {high}"
        raise ConfigError(f"{flag} must be {wanted}{' or auto' if auto else ''} (got {value!r})")
