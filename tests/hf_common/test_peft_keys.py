import pytest

from hf_common import peft_keys as pk


@pytest.mark.parametrize(
    "key, module, part, param, adapter",
    [
        ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "model.layers.0.self_attn.q_proj", pk.LORA_A,
         "weight", None),
        ("base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight", "model.layers.0.self_attn.q_proj",
         pk.LORA_B, "weight", "default"),
        ("model.layers.3.mlp.down_proj.lora_B.weight", "model.layers.3.mlp.down_proj", pk.LORA_B, "weight", None),
        ("transformer.h.1.attn.c_attn.lora_A.expert.weight", "transformer.h.1.attn.c_attn", pk.LORA_A, "weight", "expert"),
        ("base_model.model.model.embed_tokens.lora_embedding_A", "model.embed_tokens", pk.EMBEDDING_A, "", None),
        ("base_model.model.model.embed_tokens.lora_embedding_B.default", "model.embed_tokens", pk.EMBEDDING_B, "", "default"),
        ("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", "model.layers.0.self_attn.q_proj",
         pk.MAGNITUDE, "", None),
        ("base_model.model.lm_head.weight", "lm_head.weight", pk.OTHER, "", None),
        ("base_model.model.model.layers.0.mlp.up_proj.lora_B.bias", "model.layers.0.mlp.up_proj", pk.LORA_B, "bias", None),
    ],
)
def test_parse_key_normalises_every_form(key, module, part, param, adapter):
    parsed = pk.parse_key(key)
    assert (parsed.module, parsed.part, parsed.param, parsed.adapter_name) == (module, part, param, adapter)
    assert parsed.key == key


def test_saved_key_round_trips_through_parse():
    key = pk.saved_key("model.layers.2.self_attn.o_proj", pk.LORA_B)
    assert key == "base_model.model.model.layers.2.self_attn.o_proj.lora_B.weight"
    assert pk.parse_key(key).module == "model.layers.2.self_attn.o_proj"


def test_keys_match_what_peft_saves(adapters):
    from safetensors import safe_open

    with safe_open(adapters["llama"] / "adapter_model.safetensors", "np") as handle:
        keys = list(handle.keys())
    parsed = [pk.parse_key(k) for k in keys]
    assert all(p.part in (pk.LORA_A, pk.LORA_B) for p in parsed)
    assert {p.module for p in parsed} >= {"model.layers.0.self_attn.q_proj", "model.layers.5.mlp.down_proj"}
    assert all(pk.saved_key(p.module, p.part) == p.key for p in parsed)
