import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hf_common.adapter import load_adapter
from hf_eval.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("which", ["llama", "gemma3", "mistral16"])  # float32, bfloat16, float16
def test_null_source_keeps_keys_shapes_dtypes_and_norms_but_not_values(adapters, tmp_path, which):
    source = adapters[which]
    result = run("null-source", source, "-o", tmp_path / "null", "--seed", 3)
    assert result.exit_code == 0, result.output
    before, after = load_adapter(source), load_adapter(tmp_path / "null")
    assert json.loads((tmp_path / "null/adapter_config.json").read_text()) == before.config
    assert sorted(after.tensors.keys()) == sorted(before.tensors.keys())
    for key in before.tensors.keys():
        assert after.tensors.dtype(key) == before.tensors.dtype(key)
        assert after.tensors.shape(key) == before.tensors.shape(key)
        original, noise = before.tensors.float32(key), after.tensors.float32(key)
        assert np.linalg.norm(noise) == pytest.approx(np.linalg.norm(original), rel=1e-3)
        assert not np.allclose(noise, original)
        # noise, not a rescaled copy: essentially uncorrelated with the expert's tensor
        cosine = float((noise * original).sum() / (np.linalg.norm(noise) * np.linalg.norm(original)))
        assert abs(cosine) < 0.5


def test_null_source_depends_on_the_seed_only(adapters, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert run("null-source", adapters["llama"], "-o", tmp_path / name, "--seed", seed).exit_code == 0
    blobs = {n: (tmp_path / n / "adapter_model.safetensors").read_bytes() for n in "abc"}
    assert blobs["a"] == blobs["b"] != blobs["c"]


def test_null_source_loads_in_peft_without_key_warnings(fusion, tmp_path):
    from peft import PeftModel

    from hf_runtime.model import load_model_and_tokenizer, resolve_base_model

    assert run("null-source", fusion["target"], "-o", tmp_path / "null").exit_code == 0
    model, _ = load_model_and_tokenizer(resolve_base_model(fusion["base"]), torch.device("cpu"), torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(model, tmp_path / "null")
    assert not [w for w in caught if "key" in str(w.message).lower()], [str(w.message) for w in caught]
    weights = dict(peft_model.named_parameters())
    b_key = next(k for k in weights if "lora_B" in k)
    assert weights[b_key].abs().sum() > 0


def _one_line_error(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output


def test_null_source_refuses_bad_input_and_writes_nothing(adapters, tmp_path):
    missing = run("null-source", tmp_path / "nope", "-o", tmp_path / "out")
    assert _one_line_error(missing) and "nope" in missing.stderr and not (tmp_path / "out").exists()

    ia3 = tmp_path / "ia3"
    ia3.mkdir()
    (ia3 / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3", "r": 8, "lora_alpha": 16}))
    (ia3 / "adapter_model.safetensors").write_bytes(b"")
    refused = run("null-source", ia3, "-o", tmp_path / "out")
    assert _one_line_error(refused) and "LoRA" in refused.stderr and not (tmp_path / "out").exists()

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    exists = run("null-source", adapters["llama"], "-o", existing)
    assert _one_line_error(exists) and "--force" in exists.stderr
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert run("null-source", adapters["llama"], "-o", existing, "--force").exit_code == 0
    assert (existing / "adapter_model.safetensors").exists() and not (existing / "keep.txt").exists()


def test_null_source_card_says_what_it_is_and_keeps_the_licence(adapters, tmp_path):
    import shutil

    from hf_common.model_card import read_front_matter

    source = shutil.copytree(adapters["llama"], tmp_path / "licensed")
    (source / "README.md").write_text("---\nlicense: apache-2.0\nbase_model: some/model\n---\n")
    assert run("null-source", source, "-o", tmp_path / "null").exit_code == 0
    front = read_front_matter(tmp_path / "null")
    assert front["license"] == "apache-2.0" and front["library_name"] == "peft" and "null-source" in front["tags"]
    assert front["base_model"] == "some/model"  # the source card's Hub id; its adapter_config names a local folder
    assert str(tmp_path) not in (tmp_path / "null/README.md").read_text()
    assert "NULL-SOURCE CONTROL, not for use" in (tmp_path / "null/README.md").read_text()


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_out_of_range_is_refused_naming_the_flag(adapters, tmp_path, seed):
    result = CliRunner().invoke(main, ["null-source", str(adapters["llama"]), "-o", str(tmp_path / "null"), "--seed", seed])
    assert result.exit_code == 2 and "--seed" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "null").exists()
