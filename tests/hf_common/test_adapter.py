import json
import shutil

import numpy as np
import pytest
from factories import make_peft_adapter, read_config, write_config
from safetensors.numpy import load_file, save_file

from hf_common.adapter import load_adapter
from hf_common.errors import AdapterFormatError, FileAccessError, HFError, UnsupportedAdapterError


def _copy(adapter, tmp_path):
    return shutil.copytree(adapter, tmp_path / "copy")


def test_reads_peft_adapter_and_values_match_torch(adapters):
    import torch
    from safetensors.torch import load_file as load_torch

    adapter = load_adapter(adapters["llama"])
    assert adapter.family.name == "llama" and adapter.family_note.startswith("config.json")
    assert adapter.n_layers == 6 and adapter.rank == 4
    module = adapter.modules["model.layers.2.mlp.down_proj"]
    assert (module.rank, module.d_in, module.d_out, module.scale) == (4, 64, 32, 2.0)
    a, b = adapter.factors(module)
    state = load_torch(adapters["llama"] / "adapter_model.safetensors")
    assert torch.equal(torch.from_numpy(a), state[module.a_key]) and torch.equal(torch.from_numpy(b), state[module.b_key])


@pytest.mark.parametrize("name, dtype", [("gemma3", "BF16"), ("mistral16", "F16")])
def test_half_precision_adapters(adapters, name, dtype):
    from safetensors.torch import load_file as load_torch

    adapter = load_adapter(adapters[name])
    module = next(iter(adapter.modules.values()))
    assert adapter.tensors.dtype(module.a_key) == dtype
    expected = load_torch(adapters[name] / "adapter_model.safetensors")[module.b_key].float().numpy()
    np.testing.assert_array_equal(adapter.factors(module)[1], expected)


def test_family_without_model_config_comes_from_auto_mapping(adapters):
    adapter = load_adapter(adapters["mistral16"])
    assert adapter.family.name == "mistral" and "auto_mapping" in adapter.family_note
    assert adapter.n_layers == 8 and adapter.n_layers_note == "adapter keys"
    assert adapter.modules["model.layers.0.self_attn.q_proj"].scale == 4.0


def test_family_from_module_names_when_nothing_else_says(adapters, tmp_path):
    folder = _copy(adapters["gpt2"], tmp_path)
    config = read_config(folder)
    config.update(base_model_name_or_path=None, auto_mapping=None)
    write_config(folder, config)
    adapter = load_adapter(folder)
    assert adapter.family.name == "gpt2" and adapter.family_note == "module names"


def test_legacy_bin_adapter(tmp_path):
    folder = make_peft_adapter(tmp_path / "bin", "qwen2", n_layers=2, safe=False)
    assert (folder / "adapter_model.bin").exists()
    adapter = load_adapter(folder)
    assert adapter.family.name == "qwen2" and len(adapter.modules) == 14


def test_rslora_and_rank_pattern(tmp_path):
    folder = make_peft_adapter(tmp_path / "rs", "llama", n_layers=2, rank=4, alpha=8, use_rslora=True,
                               rank_pattern={"q_proj": 2}, alpha_pattern={"down_proj": 32})
    adapter = load_adapter(folder)
    q = adapter.modules["model.layers.0.self_attn.q_proj"]
    down = adapter.modules["model.layers.0.mlp.down_proj"]
    assert q.rank == 2 and q.scale == pytest.approx(8 / 2 ** 0.5)
    assert down.rank == 4 and down.scale == pytest.approx(32 / 2)


# ---- bad input: one clear error naming the file ----------------------------------------------------------------------

def _corrupt(adapters, tmp_path, how):
    folder = _copy(adapters["llama"], tmp_path)
    weights = folder / "adapter_model.safetensors"
    if how == "missing_config":
        (folder / "adapter_config.json").unlink()
    elif how == "malformed_json":
        (folder / "adapter_config.json").write_text("{ not json")
    elif how == "no_weights":
        weights.unlink()
    elif how == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif how == "nan":
        state = load_file(weights)
        state["base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"][0, 0] = np.nan
        save_file(state, weights)
    elif how == "wrong_shape":
        state = load_file(weights)
        state["base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"] = np.zeros((64, 3), np.float32)
        save_file(state, weights)
    elif how == "rank_mismatch_config":
        config = read_config(folder)
        config["r"] = 8
        write_config(folder, config)
    elif how == "missing_b":
        state = load_file(weights)
        del state["base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"]
        save_file(state, weights)
    elif how == "dora":
        config = read_config(folder)
        config["use_dora"] = True
        write_config(folder, config)
    elif how == "not_lora":
        config = read_config(folder)
        config["peft_type"] = "IA3"
        write_config(folder, config)
    elif how == "bad_alpha":
        config = read_config(folder)
        config["lora_alpha"] = "sixteen"
        write_config(folder, config)
    elif how in PATTERNS:
        config = read_config(folder)
        config.update(PATTERNS[how])
        (folder / "adapter_config.json").write_text(json.dumps(config))  # json.dumps writes NaN as NaN, as PEFT reads it
    return folder


PATTERNS = {  # rank_pattern / alpha_pattern that PEFT would choke on or silently misread
    "alpha_nan": {"lora_alpha": float("nan")},
    "rank_pattern_list": {"rank_pattern": [4]},
    "rank_pattern_text": {"rank_pattern": {"q_proj": "four"}},
    "rank_pattern_zero": {"rank_pattern": {"q_proj": 0}},
    "rank_pattern_fraction": {"rank_pattern": {"q_proj": 2.5}},
    "alpha_pattern_nan": {"alpha_pattern": {"q_proj": float("nan")}},
    "alpha_pattern_regex": {"alpha_pattern": {"q_proj(": 8}},
}


CASES = {
    "missing_config": (FileAccessError, "adapter_config.json: file not found"),
    "malformed_json": (AdapterFormatError, "adapter_config.json: malformed JSON"),
    "no_weights": (FileAccessError, "no adapter_model.safetensors or adapter_model.bin"),
    "truncated": (AdapterFormatError, "adapter_model.safetensors: truncated"),
    "nan": (AdapterFormatError, "non-finite"),
    "wrong_shape": (AdapterFormatError, "lora_A is 4 x 32 but lora_B is 64 x 3"),
    "rank_mismatch_config": (AdapterFormatError, "has rank 4, adapter_config.json says 8"),
    "missing_b": (AdapterFormatError, "has no lora_B tensor"),
    "dora": (UnsupportedAdapterError, "DoRA"),
    "not_lora": (UnsupportedAdapterError, "IA3"),
    "bad_alpha": (AdapterFormatError, "'lora_alpha' must be a positive number"),
    "alpha_nan": (AdapterFormatError, "'lora_alpha' must be a positive number"),
    "rank_pattern_list": (AdapterFormatError, "'rank_pattern' must be an object"),
    "rank_pattern_text": (AdapterFormatError, "'rank_pattern': the value for 'q_proj' must be a positive whole number"),
    "rank_pattern_zero": (AdapterFormatError, "'rank_pattern': the value for 'q_proj' must be a positive whole number"),
    "rank_pattern_fraction": (AdapterFormatError, "must be a positive whole number, found 2.5"),
    "alpha_pattern_nan": (AdapterFormatError, "'alpha_pattern': the value for 'q_proj' must be a positive number"),
    "alpha_pattern_regex": (AdapterFormatError, "is not a valid pattern"),
}


@pytest.mark.parametrize("how", sorted(CASES))
def test_bad_adapters_raise_one_clear_error(adapters, tmp_path, how):
    folder = _corrupt(adapters, tmp_path, how)
    error, message = CASES[how]
    with pytest.raises(error) as info:
        adapter = load_adapter(folder)
        for module in adapter.modules.values():  # values are checked lazily, when read
            adapter.factors(module)
    assert message in str(info.value)
    assert str(folder) in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, HFError)


def test_missing_folder(tmp_path):
    with pytest.raises(FileAccessError, match="no such adapter folder"):
        load_adapter(tmp_path / "nope")


def test_config_is_a_json_object(adapters, tmp_path):
    folder = _copy(adapters["llama"], tmp_path)
    (folder / "adapter_config.json").write_text(json.dumps([1, 2]))
    with pytest.raises(AdapterFormatError, match="expected a JSON object"):
        load_adapter(folder)


class _NotATensor:
    pass


def test_refused_legacy_bin_says_so_in_one_plain_line(adapters, tmp_path):
    import torch

    folder = tmp_path / "legacy"
    shutil.copytree(adapters["llama"], folder)
    (folder / "adapter_model.safetensors").unlink()
    torch.save({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": _NotATensor()},
               folder / "adapter_model.bin")
    with pytest.raises(AdapterFormatError) as info:
        load_adapter(folder)
    message = str(info.value)
    assert "cannot read PyTorch weights" in message and "\n" not in message and "\x1b" not in message
    assert len(message) < 400 + len(str(folder))
