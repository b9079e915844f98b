"""Synthetic PEFT adapters with real key names and real-model shapes.

Used by the README's example, the benchmarks and the torch-free smoke test: it
needs only numpy.  The tensors are random (A ~ N(0, 1/d_in), B ~ N(0, σ_B²)), the
keys and ``adapter_config.json`` are exactly what PEFT writes for the family.

    python -m hf_analyze.example OUT_DIR   # SmolLM2-shaped target, Gemma-3- and Qwen-shaped sources
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hf_common.peft_keys import LORA_A, LORA_B, saved_key
from hf_common.safetensors_io import float32_to_bf16_bits, write_safetensors


@dataclass(frozen=True)
class AdapterShape:
    """The shape of a model's LoRA-able projections (Llama-style names unless ``layout`` says otherwise)."""

    base_model: str
    architecture: str
    n_layers: int
    hidden: int
    q_dim: int
    kv_dim: int
    mlp: int
    layout: str = "llama"  # llama | phi3 | gpt2
    modules: tuple[str, ...] = field(default=())

    def module_dims(self) -> dict[str, tuple[int, int]]:
        h, q, kv, m = self.hidden, self.q_dim, self.kv_dim, self.mlp
        table = {
            "llama": {"self_attn.q_proj": (h, q), "self_attn.k_proj": (h, kv), "self_attn.v_proj": (h, kv),
                      "self_attn.o_proj": (q, h), "mlp.gate_proj": (h, m), "mlp.up_proj": (h, m),
                      "mlp.down_proj": (m, h)},
            "phi3": {"self_attn.qkv_proj": (h, q + 2 * kv), "self_attn.o_proj": (q, h),
                     "mlp.gate_up_proj": (h, 2 * m), "mlp.down_proj": (m, h)},
            "gpt2": {"attn.c_attn": (h, 3 * h), "attn.c_proj": (h, h), "mlp.c_fc": (h, m), "mlp.c_proj": (m, h)},
        }[self.layout]
        return {k: v for k, v in table.items() if not self.modules or k.rsplit(".", 1)[-1] in self.modules}

    @property
    def layer_prefix(self) -> str:
        return "transformer.h" if self.layout == "gpt2" else "model.layers"


SHAPES = {
    "llama-3.1-8b": AdapterShape("meta-llama/Llama-3.1-8B-Instruct", "LlamaForCausalLM", 32, 4096, 4096, 1024, 14336),
    "qwen2.5-7b": AdapterShape("Qwen/Qwen2.5-7B-Instruct", "Qwen2ForCausalLM", 28, 3584, 3584, 512, 18944),
    "mistral-7b": AdapterShape("mistralai/Mistral-7B-v0.3", "MistralForCausalLM", 32, 4096, 4096, 1024, 14336),
    "smollm2-135m": AdapterShape("HuggingFaceTB/SmolLM2-135M-Instruct", "LlamaForCausalLM", 30, 576, 576, 192, 1536),
    "gemma3-270m": AdapterShape("google/gemma-3-270m-it", "Gemma3ForCausalLM", 18, 640, 1024, 256, 2048),
    "phi3-mini": AdapterShape("microsoft/Phi-3-mini-4k-instruct", "Phi3ForCausalLM", 32, 3072, 3072, 3072, 8192,
                              layout="phi3"),
}


def write_synthetic_adapter(
    folder: str | Path, shape: AdapterShape, *, rank: int = 8, alpha: float = 16, dtype: str = "F32",
    seed: int = 0, b_scale: float = 0.02,
) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` for ``shape`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    dims = shape.module_dims()
    for layer in range(shape.n_layers):
        for suffix, (d_in, d_out) in dims.items():
            module = f"{shape.layer_prefix}.{layer}.{suffix}"
            tensors[saved_key(module, LORA_A)] = (rng.standard_normal((rank, d_in)) / np.sqrt(d_in)).astype(np.float32)
            tensors[saved_key(module, LORA_B)] = (rng.standard_normal((d_out, rank)) * b_scale).astype(np.float32)
    dtypes = {}
    if dtype == "BF16":
        tensors = {k: float32_to_bf16_bits(v) for k, v in tensors.items()}
        dtypes = dict.fromkeys(tensors, "BF16")
    elif dtype == "F16":
        tensors = {k: v.astype(np.float16) for k, v in tensors.items()}
    write_safetensors(folder / "adapter_model.safetensors", tensors, dtypes=dtypes, metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": shape.base_model,
        "auto_mapping": {"base_model_class": shape.architecture, "parent_library": "transformers"},
        "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": shape.layout == "gpt2",
        "target_modules": sorted({s.rsplit(".", 1)[-1] for s in dims}), "use_rslora": False, "use_dora": False,
        "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": None, "inference_mode": True,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


ENTITIES = {
    "person": ["ada lovelace", "alan turing", "grace hopper", "marie curie", "nikola tesla"],
    "city": ["paris", "lisbon", "nairobi", "kyoto", "lima"],
    "vehicle": ["tram", "ferry", "bicycle", "cargo van", "glider"],
}
TEMPLATES = ["{person} took the {vehicle} to {city}.", "In {city}, {person} repaired a {vehicle}.",
             "{person} never saw a {vehicle} in {city}."]


def replay_records(n: int, seed: int = 0) -> list[dict]:
    """A small synthetic extraction task in the paper's Alpaca form (``type: span; type: span``)."""
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(n):
        picks = {kind: values[rng.integers(len(values))] for kind, values in ENTITIES.items()}
        text = TEMPLATES[rng.integers(len(TEMPLATES))].format(**picks)
        instruction = ("Please list all entity words in the text that fit the category. Output format is "
                       f"\"type1: word1; type2: word2\". \nOption: person, city, vehicle \nText: {text} \nAnswer:")
        answer = "; ".join(f"{kind}: {picks[kind]}" for kind in ENTITIES if picks[kind] in text)
        records.append({"instruction": instruction, "input": text, "output": " " + answer})
    return records


def write_example(out_dir: str | Path) -> dict[str, Path]:
    """The built-in example: a SmolLM2-shaped target with Gemma-3- and Qwen-shaped sources, and replay data."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.json").write_text(json.dumps(replay_records(48), indent=1) + "\n")
    return {
        "replay": out / "replay.json",
        "target": write_synthetic_adapter(out / "smollm2-target", SHAPES["smollm2-135m"], seed=1),
        "gemma3": write_synthetic_adapter(out / "gemma3-source", SHAPES["gemma3-270m"], rank=16, alpha=32, seed=2),
        "qwen": write_synthetic_adapter(out / "qwen-source", SHAPES["qwen2.5-7b"], rank=4, alpha=8, dtype="BF16",
                                        seed=3),
    }


if __name__ == "__main__":
    for name, path in write_example(sys.argv[1] if len(sys.argv) > 1 else "example-output").items():
        sys.stdout.write(f"{name}: {path}\n")
