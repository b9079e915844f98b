"""``--method project`` on tiny models: a source that is the target itself, and a Qwen2 source of another size,
depth and tokenizer."""

import json
import warnings

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from tiny_models import make_source_model

from hf_analyze.execute import execute
from hf_analyze.planner import AnalyzeSettings, analyze
from hf_analyze.report import build_report
from hf_fuse.cli import main


def _plan(target, sources, path):
    analysis = analyze(target, sources, AnalyzeSettings(block_size="auto"))
    execute(analysis, build_report(analysis), path)
    return path


def _project(fusion, plan, source_base, out, *extra):
    return CliRunner().invoke(main, [str(plan), "--base-model", str(fusion["base"]), "--replay", str(fusion["replay"]),
                                     "-o", str(out), "--method", "project", "--source-model", f"0={source_base}",
                                     *map(str, extra)])


def test_a_source_that_is_the_target_itself_comes_back_unchanged(fusion, tmp_path):
    # Same model, same adapter: every neuron correlates perfectly with itself, so the matching is the identity,
    # and each matched gain is var / (var + ridge * mean var), 1 up to about ridge * (mean var / min var); with
    # ridge 1e-6 and neuron variances within a factor 1e3 of each other that is < 1e-3, so the projected
    # update must match the source's to 1e-2 relative (Frobenius), float32 export included.
    plan = _plan(fusion["target"], [fusion["target"]], tmp_path / "self.h5")
    result = _project(fusion, plan, fusion["base"], tmp_path / "out", "--ridge", "1e-6")
    assert result.exit_code == 0, result.output
    fused = load_file(tmp_path / "out/adapter_model.safetensors")
    target = load_file(fusion["target"] / "adapter_model.safetensors")
    config = json.loads((tmp_path / "out/adapter_config.json").read_text())
    a_keys = [k for k in target if ".lora_A." in k]
    assert len(a_keys) == 28
    for key_a in a_keys:
        key_b = key_a.replace("lora_A", "lora_B")
        r = target[key_a].shape[0]
        assert fused[key_a].shape[0] == 2 * r and torch.equal(fused[key_a][:r], target[key_a])
        assert torch.equal(fused[key_b][:, :r], target[key_b])
        original = target[key_b] @ target[key_a]
        projected = fused[key_b][:, r:] @ fused[key_a][r:]
        assert float((projected - original).norm() / original.norm()) < 1e-2, key_a
    assert set(config["rank_pattern"].values()) == {8} and set(config["alpha_pattern"].values()) == {16.0}
    report = json.loads((tmp_path / "out/fusion_report.json").read_text())
    stats = report["project"]["sources"]["0"]
    assert report["method"] == "project" and stats["modules"] == 28
    assert stats["input_maps"] == 4 * 4  # per layer: attention input (q, k, v), o_proj, MLP input (gate, up), down_proj


def test_project_across_families_exports_an_adapter_peft_loads(fusion, tmp_path):
    from peft import PeftModel

    from hf_runtime.model import load_model_and_tokenizer, resolve_base_model

    source = make_source_model(tmp_path / "qwen2", "qwen2")
    plan = _plan(fusion["target"], [source["expert"]], tmp_path / "plan.h5")
    result = _project(fusion, plan, source["base"], tmp_path / "out", "--project-weight", "0.5")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out/fusion_report.json").read_text())
    stats = report["project"]["sources"]["0"]
    assert stats["aligned_tokens"] > 50 and stats["modules"] == 3 * 7  # the Qwen2 source has 3 layers
    model, _ = load_model_and_tokenizer(resolve_base_model(fusion["base"]), torch.device("cpu"), torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(model, tmp_path / "out")
    assert not [w for w in caught if "key" in str(w.message).lower()]
    ranks = {name: p.shape[0] for name, p in peft_model.named_parameters() if "lora_A" in name}
    assert sorted(set(ranks.values())) == [4, 8]  # untouched layers keep r 4; aligned ones gain the source's r 4
    assert sum(r == 8 for r in ranks.values()) == 21


@pytest.mark.parametrize("flag, value, message", [
    ("--ridge", "0", "--ridge must be a positive number"),
    ("--project-weight", "nan", "--project-weight must be a positive number"),
    ("--align-tokens", "0", "--align-tokens must be a positive integer"),
    ("--source-model", "1=X", "source index 1 is not in the plan"),
])
def test_project_refuses_bad_settings(fusion, tmp_path, flag, value, message):
    argv = [str(fusion["plan_qwen"]), "--base-model", str(fusion["base"]), "--replay", str(fusion["replay"]), "-o",
            str(tmp_path / "out"), "--method", "project", "--source-model", f"0={fusion['base']}", flag, value]
    if flag == "--source-model":
        argv = argv[:-4] + [flag, value]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (tmp_path / "out").exists()
