"""The null-source control: an adapter shaped like a source expert that knows nothing.

``hf-eval null-source SRC -o OUT --seed N`` writes a PEFT adapter with SRC's config, keys, shapes and
dtypes, every tensor replaced by Gaussian noise scaled to that tensor's Frobenius norm.  Fusing it
instead of SRC keeps everything a fusion method sees about the source (shapes, scales, norms) and
removes what the expert learned, so the difference between the two fusions is what came from the
source's knowledge; what the null-source run still gains came from the replay data.

numpy only (no torch): the adapter is read with ``hf_common.adapter`` (validated as a LoRA adapter)
and written with ``hf_common.safetensors_io`` (bf16 kept as bf16, which the safetensors numpy API
cannot do).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hf_analyze.execute import sha256_file
from hf_common.adapter import CONFIG_NAME, load_adapter
from hf_common.atomic import atomic_folder
from hf_common.model_card import CARD_NAME, card, license_of, read_front_matter
from hf_common.safetensors_io import float32_to_bf16_bits, write_safetensors
from hf_common.terms import public_name

WEIGHTS_NAME = "adapter_model.safetensors"
_NUMPY = {"F64": np.float64, "F32": np.float32, "F16": np.float16}


def noise_like(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of ``values``' shape whose Frobenius norm equals ``values``' (float64 arithmetic)."""
    target = float(np.linalg.norm(values.astype(np.float64)))
    noise = rng.standard_normal(values.shape)
    norm = float(np.linalg.norm(noise))
    return noise * (target / norm) if norm > 0 else noise * 0.0


def write_null_source(source: Path, output: Path, *, seed: int = 0, force: bool = False) -> dict:
    """Write the null-source of adapter folder ``source`` to ``output``; returns a summary of what was replaced."""
    adapter = load_adapter(source)  # refuses what is not a valid LoRA adapter, before anything is written
    rng = np.random.default_rng(seed)
    tensors, dtypes = {}, {}
    for key in sorted(adapter.tensors.keys()):
        dtype = adapter.tensors.dtype(key)
        if dtype not in (*_NUMPY, "BF16"):  # integer buffers (none in LoRA adapters) are kept as they are
            tensors[key], dtypes[key] = np.array(adapter.tensors.raw(key)), dtype
            continue
        noise = noise_like(adapter.float32(key), rng)  # float32() checks the values are finite
        if dtype == "BF16":
            tensors[key], dtypes[key] = float32_to_bf16_bits(noise.astype(np.float32)), "BF16"
        else:
            tensors[key], dtypes[key] = noise.astype(_NUMPY[dtype]), dtype
    provenance = {"heterofusion": "null-source", "null_source_of": str(source), "seed": str(seed), "format": "pt"}
    with atomic_folder(output, force=force, what="output folder") as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps(adapter.config, indent=2) + "\n")
        write_safetensors(tmp / WEIGHTS_NAME, tensors, dtypes=dtypes, metadata=provenance)
        (tmp / CARD_NAME).write_text(card(
            title="NULL-SOURCE CONTROL, not for use: noise in the shape of an expert",
            base_model=read_front_matter(source).get("base_model") or adapter.base_model,
            how="Every tensor of the source adapter replaced by Gaussian noise of that tensor's Frobenius norm "
                "(`hf-eval null-source`). Fuse it in place of the source: what that fusion still gains came from the "
                "replay data, not from the expert. Not for use as a model.",
            details={"null-source of": f"{public_name(str(source))} (sha256 {sha256_file(adapter.weights_path)})",
                     "seed": seed, "tensors": len(tensors)},
            tags=["null-source-control", "null-source", "control"], license=license_of(source)))
    return {"source": str(source), "output": str(output), "seed": seed, "tensors": len(tensors),
            "weights_from": adapter.weights_path.name}
