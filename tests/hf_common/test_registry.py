import numpy as np
import pytest

from hf_common.registry import ROLES, ModelDims, SplitError, families


def test_every_family_maps_only_to_known_roles():
    known = families()
    assert {"llama", "qwen2", "mistral", "gemma", "phi3", "gpt2", "gpt_neox", "falcon"} <= set(known)
    for family in known.values():
        for spec in family.modules.values():
            assert set(spec.roles) <= set(ROLES), (family.name, spec.suffix)


@pytest.mark.parametrize("family, path, expected", [
    ("llama", "model.layers.12.self_attn.q_proj", (12, "self_attn.q_proj")),
    ("gemma", "model.language_model.layers.3.mlp.down_proj", (3, "mlp.down_proj")),
    ("gpt2", "transformer.h.7.attn.c_attn", (7, "attn.c_attn")),
    ("gpt2", "h.0.mlp.c_fc", (0, "mlp.c_fc")),
    ("gpt_neox", "gpt_neox.layers.2.attention.query_key_value", (2, "attention.query_key_value")),
    ("llama", "lm_head", None),
])
def test_locate_layer_and_suffix(family, path, expected):
    assert families()[family].locate(path) == expected


def _rows(family, suffix, d_in, d_out, dims=None):
    return dict(families()[family].spec_for(suffix).role_rows(d_in, d_out, dims or ModelDims()))


def test_phi3_qkv_split_from_config_and_without():
    dims = ModelDims.from_config({"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2})
    with_config = _rows("phi3", "self_attn.qkv_proj", 32, 64, dims)
    without = _rows("phi3", "self_attn.qkv_proj", 32, 64)
    for rows in (with_config, without):
        assert list(rows) == ["q_proj", "k_proj", "v_proj"]
        np.testing.assert_array_equal(rows["q_proj"], np.arange(32))
        np.testing.assert_array_equal(rows["k_proj"], np.arange(32, 48))
        np.testing.assert_array_equal(rows["v_proj"], np.arange(48, 64))
    gate_up = _rows("phi3", "mlp.gate_up_proj", 32, 128)
    np.testing.assert_array_equal(gate_up["up_proj"], np.arange(64, 128))


def test_gpt2_c_attn_splits_in_thirds():
    rows = _rows("gpt2", "attn.c_attn", 32, 96)
    assert [len(r) for r in rows.values()] == [32, 32, 32] and rows["v_proj"][0] == 64


def test_neox_interleaved_heads_needs_config():
    with pytest.raises(SplitError, match="num_attention_heads"):
        _rows("gpt_neox", "attention.query_key_value", 32, 96)
    rows = _rows("gpt_neox", "attention.query_key_value", 32, 96, ModelDims.from_config(
        {"hidden_size": 32, "num_attention_heads": 4}))
    # per head h: rows [h*24, h*24+8) are q, then 8 of k, then 8 of v
    np.testing.assert_array_equal(rows["q_proj"][:10], [0, 1, 2, 3, 4, 5, 6, 7, 24, 25])
    np.testing.assert_array_equal(rows["k_proj"][:2], [8, 9])
    assert sorted(np.concatenate(list(rows.values()))) == list(range(96))


def test_falcon_layouts_follow_config():
    mq = ModelDims.from_config({"hidden_size": 32, "num_attention_heads": 4, "multi_query": True})
    rows = _rows("falcon", "self_attention.query_key_value", 32, 48, mq)
    assert [len(r) for r in rows.values()] == [32, 8, 8]
    grouped = ModelDims.from_config({"hidden_size": 32, "num_attention_heads": 4, "num_kv_heads": 2,
                                     "new_decoder_architecture": True})
    rows = _rows("falcon", "self_attention.query_key_value", 32, 64, grouped)
    # two KV groups of [q q k v] heads of 8 rows
    np.testing.assert_array_equal(rows["q_proj"], list(range(16)) + list(range(32, 48)))
    np.testing.assert_array_equal(rows["k_proj"], list(range(16, 24)) + list(range(48, 56)))
    np.testing.assert_array_equal(rows["v_proj"], list(range(24, 32)) + list(range(56, 64)))


def test_impossible_split_is_reported():
    with pytest.raises(SplitError, match="cannot split"):
        _rows("gpt2", "attn.c_attn", 32, 97)
