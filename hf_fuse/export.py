"""Writing the fused adapter folder atomically (every method's output): the PEFT files, the report, the card."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hf_common.atomic import atomic_folder
from hf_runtime.model import write_adapter_folder


def write_adapter(out_dir: Path, config: dict, tensors: dict[str, torch.Tensor], *, force: bool,
                  extra_files: dict[str, dict] | None = None, extra_texts: dict[str, str] | None = None,
                  extra_bytes: dict[str, bytes] | None = None) -> None:
    """Write the adapter folder to a temporary name, then rename it into place."""
    with atomic_folder(out_dir, force=force) as tmp:
        write_adapter_folder(tmp, config, tensors)
        for name, payload in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(payload, indent=2) + "\n")
        for name, text in (extra_texts or {}).items():
            (tmp / name).write_text(text)
        for name, data in (extra_bytes or {}).items():
            (tmp / name).write_bytes(data)
