"""Read a user's JSON file with one clear error line for a missing, undecodable or malformed file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import FileAccessError, InputError


def read_json(path: Path, *, what: str = "file", error: type[InputError] = InputError) -> Any:
    """Parse ``path``; a missing file raises FileAccessError, bad content ``error`` (both name the path)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileAccessError(f"{what} not found", path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"malformed JSON ({exc})", path) from None
