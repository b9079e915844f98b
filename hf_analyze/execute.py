"""Run an analysis: materialise every group and write the plan (or only check, with ``--check``)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from hf_common.adapter import CONFIG_NAME, Adapter
from hf_common.errors import AdapterFormatError
from hf_common.plan_writer import MemorySink, PlanWriter
from hf_common.safetensors_io import FLOAT_DTYPES, SafetensorsFile, all_finite, to_float32, write_safetensors

from . import __version__
from .planner import Analysis, materialize

logger = logging.getLogger(__name__)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _provenance(analysis: Analysis, hashes: dict[Path, str]) -> dict:
    def entry(role: str, adapter: Adapter) -> dict:
        return {
            "role": role,
            "path": str(adapter.folder.resolve()),
            "base_model": adapter.base_model,
            "family": adapter.family.name,
            "files": [{"name": p.name, "bytes": p.stat().st_size, "sha256": hashes[p]} for p in adapter.files],
            # hf-eval null-source marks its noise in the weights' metadata: fusions made from it say they are controls
            "null_source": getattr(adapter.tensors, "metadata", {}).get("heterofusion") == "null-source",
        }

    return {
        "tool": f"hf-analyze {__version__}",
        "inputs": [entry("target", analysis.target)] + [entry("source", s) for s in analysis.sources],
    }


def _adapter_blob(target: Adapter) -> np.ndarray:
    """Check every tensor of an adapter is finite; return its tensors as safetensors bytes."""
    for key in target.tensors.keys():
        raw, dtype = target.raw(key)
        if dtype in FLOAT_DTYPES and not all_finite(to_float32(raw, dtype) if dtype == "BF16" else raw):
            raise AdapterFormatError(f"tensor {key!r} has non-finite values (NaN or inf)", target.weights_path)
    if isinstance(target.tensors, SafetensorsFile):
        return target.tensors.blob
    buffer = io.BytesIO()  # a legacy .bin target: convert, so the plan always holds safetensors
    write_safetensors(buffer, {k: target.raw(k)[0] for k in target.tensors.keys()},
                      dtypes={k: target.raw(k)[1] for k in target.tensors.keys()})
    return np.frombuffer(buffer.getvalue(), np.uint8)


def execute(analysis: Analysis, report: dict, output: Path | None, *, force: bool = False,
            config_text: str | None = None,
            on_group: Callable[[str], None] = lambda name: None) -> dict[str, dict[str, np.ndarray]]:
    """Write the plan to ``output`` atomically; with ``output=None`` only validate all tensor data.

    Returns, with ``output=None``, each group's small arrays (everything but the rows) for the HTML report."""
    adapters = [analysis.target, *analysis.sources]
    files = [path for adapter in adapters for path in adapter.files]
    with ThreadPoolExecutor(max_workers=1) as pool:  # hashing releases the GIL: it overlaps the numpy work
        futures = {path: pool.submit(sha256_file, path) for path in files}
        if output is None:
            for adapter in adapters:
                _adapter_blob(adapter)
            small = {}
            for group in analysis.groups:
                sink = MemorySink()
                materialize(analysis, group, sink)
                on_group(group.name)
                small[group.name] = {k: v for k, v in sink.arrays.items() if not k.endswith("rows")}
            return small
        with PlanWriter(output, force=force, created_by=f"hf-analyze {__version__}") as writer:
            settings = dict(report["settings"])
            writer.write_text("settings", json.dumps(settings))
            writer.write_text("report", json.dumps(report))
            if config_text is not None:  # the resolved hf-analyze options (``--config`` re-runs them)
                writer.write_text("config", config_text)
            writer.write_text("target_config", (analysis.target.folder / CONFIG_NAME).read_text())
            writer.add_target_adapter(_adapter_blob(analysis.target))
            for index, source in enumerate(analysis.sources):
                writer.add_source_adapter(index, (source.folder / CONFIG_NAME).read_text(), _adapter_blob(source))
            for index, pairs in enumerate(analysis.layer_maps):
                writer.add_layer_map(index, pairs)
            for group in analysis.groups:
                logger.info("materialising group %s", group.name)
                sink = writer.group(group.name, group.role, group.rank)
                materialize(analysis, group, sink)
                sink.close()
                on_group(group.name)
            hashes = {path: future.result() for path, future in futures.items()}
            writer.write_text("provenance", json.dumps(_provenance(analysis, hashes)))
    return {}
