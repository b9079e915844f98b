"""A local cache of GGUF models converted to ordinary Hugging Face model folders.

transformers reads a ``.gguf`` file by parsing its metadata and tokenizer and de-quantizing every
tensor, every time: about 22 s for SmolLM2-135M and over a minute for Gemma-3-270M on 2 CPU cores,
paid by every process (expert training, hf-fuse, each evaluation).  The de-quantized fp32 weights,
config and tokenizer are therefore saved once, with transformers' own ``save_pretrained``, and later
loads read that folder (under a second).  The weights are bit-identical to a direct GGUF load.

Location: ``$HETEROFUSION_CACHE`` (default ``$XDG_CACHE_HOME/heterofusion`` or ``~/.cache/heterofusion``),
one folder per GGUF file, keyed by its path, size, modification time and the transformers version.
``HETEROFUSION_CACHE=none`` turns the cache off; a cache that cannot be written is skipped with a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

DONE = ".complete"  # written last inside the folder; a folder without it is never used


def cache_root() -> Path | None:
    value = os.environ.get("HETEROFUSION_CACHE")
    if value is not None:
        return None if value.strip().lower() in ("none", "off", "0", "") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "heterofusion"


def cache_folder(gguf: Path) -> Path | None:
    """The cache folder for one GGUF file (it may not exist yet), or None when caching is off."""
    import transformers

    root = cache_root()
    if root is None:
        return None
    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    return root / "gguf" / f"{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def cached(gguf: Path) -> Path | None:
    """The converted folder if it is complete, else None."""
    folder = cache_folder(gguf)
    return folder if folder is not None and (folder / DONE).is_file() else None


def store(gguf: Path, model, tokenizer) -> Path | None:
    """Save a model and tokenizer loaded from ``gguf`` into the cache; return the folder, or None if caching is
    off or failed.  Written under a temporary name and renamed, so concurrent runs never see half a folder.

    Not ``hf_common.atomic.atomic_folder``: that replaces an existing destination, whereas here a copy
    another process finished first is kept (it may be being read) and ours is dropped."""
    folder = cache_folder(gguf)
    if folder is None:
        return None
    tmp = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        # A model loaded from GGUF is flagged as quantized, and save_pretrained refuses it; its weights are
        # already de-quantized, so the flag and the GGUF quantization config are dropped from the copy.
        quantizer, config = model.hf_quantizer, model.config
        saved = {k: getattr(config, k) for k in ("quantization_config", "_is_quantized") if hasattr(config, k)}
        try:
            model.hf_quantizer = None
            for k in saved:
                delattr(config, k)
            model.save_pretrained(tmp)
        finally:
            model.hf_quantizer = quantizer
            for k, v in saved.items():
                setattr(config, k, v)
        tokenizer.save_pretrained(tmp)
        (tmp / DONE).write_text(f"{gguf.resolve()}\n")
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first: keep its copy
            if not (folder / DONE).is_file():
                raise
        logger.info("cached the converted GGUF model in %s", folder)
        return folder
    except OSError as exc:
        logger.warning("could not cache the converted GGUF model in %s (%s); it will be converted again next time",
                       folder, exc)
        return None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
