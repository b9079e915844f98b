"""Test fixtures made on the fly: real PEFT adapters of tiny random models of several families."""

from __future__ import annotations

import json
from pathlib import Path

TINY = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, vocab_size=96)
LLAMA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_model(family: str, n_layers: int, hidden: int = 32, seed: int = 0):
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    sizes = dict(TINY, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layers)
    if family == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**sizes))
    if family == "qwen2":
        return tf.Qwen2ForCausalLM(tf.Qwen2Config(**sizes))
    if family == "mistral":
        return tf.MistralForCausalLM(tf.MistralConfig(**sizes))
    if family == "gemma3":
        return tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**sizes, head_dim=16))
    if family == "phi3":
        return tf.Phi3ForCausalLM(tf.Phi3Config(**sizes, pad_token_id=0))
    if family == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=hidden, n_layer=n_layers, n_head=4, vocab_size=96, n_positions=64))
    raise ValueError(family)


def default_modules(family: str) -> list[str]:
    return {"phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
            "gpt2": ["c_attn", "c_proj", "c_fc"]}.get(family, LLAMA_MODULES)


def make_peft_adapter(
    folder: Path, family: str = "llama", *, n_layers: int = 4, hidden: int = 32, rank: int = 4, alpha: float = 8,
    seed: int = 0, dtype: str = "float32", modules: list[str] | None = None, with_model_config: bool = True,
    safe: bool = True, **lora_kwargs,
) -> Path:
    """Save a real PEFT LoRA adapter with random (non-zero) A and B for a tiny model."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = tiny_model(family, n_layers, hidden, seed)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=modules or default_modules(family),
                        fan_in_fan_out=family == "gpt2", **lora_kwargs)
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    if dtype != "float32":
        peft_model = peft_model.to(getattr(torch, dtype))
    folder = Path(folder)
    if with_model_config:
        model.config.save_pretrained(folder / "base")
        peft_model.peft_config["default"].base_model_name_or_path = str(folder / "base")
    peft_model.save_pretrained(folder / "adapter", safe_serialization=safe)
    return folder / "adapter"


def read_config(adapter: Path) -> dict:
    return json.loads((adapter / "adapter_config.json").read_text())


def write_config(adapter: Path, config: dict) -> None:
    (adapter / "adapter_config.json").write_text(json.dumps(config))
