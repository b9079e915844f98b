"""``--method project-hypernet`` on tiny models: the projection is the starting point, the HyperNet trains on top."""

import json
import warnings
from pathlib import Path

import jsonschema
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file
from tiny_models import make_source_model

from hf_analyze.execute import execute
from hf_analyze.planner import AnalyzeSettings, analyze
from hf_analyze.report import build_report
from hf_common.plan import Plan
from hf_fuse.cli import main
from hf_fuse.methods.project import add_to_base, append_projection, links_of
from hf_runtime.model import load_model_and_tokenizer, resolve_base_model, tensors_from_plan

ROOT = Path(__file__).resolve().parents[3]


def _fuse(fusion, plan, source_base, out, method, *extra):
    return CliRunner().invoke(main, [str(plan), "--base-model", str(fusion["base"]), "--replay", str(fusion["replay"]),
                                     "-o", str(out), "--method", method, "--source-model", f"0={source_base}",
                                     "--max-steps", "3", "--batch-size", "2", *map(str, extra)])


@pytest.fixture(scope="module")
def qwen_plan(fusion, tmp_path_factory):
    root = tmp_path_factory.mktemp("project-hypernet")
    source = make_source_model(root / "qwen2", "qwen2")
    analysis = analyze(fusion["target"], [source["expert"]], AnalyzeSettings(block_size="auto"))
    execute(analysis, build_report(analysis), root / "plan.h5")
    return root / "plan.h5", source["base"]


def test_the_hypernet_trains_on_top_of_the_projection_and_both_are_exported(fusion, qwen_plan, tmp_path):
    from peft import PeftModel

    plan, source_base = qwen_plan
    assert _fuse(fusion, plan, source_base, tmp_path / "project", "project").exit_code == 0
    result = _fuse(fusion, plan, source_base, tmp_path / "out", "project-hypernet")
    assert result.exit_code == 0, result.output
    fused, projected = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("out", "project"))
    target = load_file(fusion["target"] / "adapter_model.safetensors")
    assert fused.keys() == projected.keys()
    trained = 0
    for key_a in (k for k in target if ".lora_A." in k):
        key_b, r = key_a.replace("lora_A", "lora_B"), target[key_a].shape[0]
        assert fused[key_a].shape == projected[key_a].shape
        assert torch.equal(fused[key_a], projected[key_a])  # A: the target's rows, then the projected ones
        assert torch.equal(fused[key_b][:, r:], projected[key_b][:, r:])  # the projection's B, exactly as project's
        trained += not torch.equal(fused[key_b][:, :r], target[key_b])  # the HyperNet's B_t + αΔB
    assert trained == 21  # the 3 Qwen2 layers' 7 modules are aligned, so their groups are trained
    report = json.loads((tmp_path / "out/fusion_report.json").read_text())
    assert report["method"] == "project-hypernet" and report["project"]["then"] == "hypernet"
    assert report["tasks"][0]["steps"] == 3 and report["tasks"][0]["hypernet_parameters"] > 0
    jsonschema.validate(report, json.loads((ROOT / "schemas/fusion-report.schema.json").read_text()))
    model, _ = load_model_and_tokenizer(resolve_base_model(fusion["base"]), torch.device("cpu"), torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PeftModel.from_pretrained(model, tmp_path / "out")
    assert not [w for w in caught if "key" in str(w.message).lower()]


def test_adding_the_projection_to_the_base_model_equals_loading_it_as_extra_rank(fusion, qwen_plan, tmp_path):
    # What project-hypernet trains on (base weights + projected updates, target LoRA on top) must be what the
    # exported adapter gives on the untouched base model.  Random projected factors stand in for fitted ones.
    from peft import PeftModel

    plan = Plan(qwen_plan[0])
    links = links_of(plan)
    generator = torch.Generator().manual_seed(0)
    target = tensors_from_plan(plan)
    for link in links:
        r_s, d_in = 8, target[link.key_a].shape[1]
        link.stats.update(a=torch.randn(r_s, d_in, generator=generator),
                          b=0.1 * torch.randn(len(link.rows), r_s, generator=generator))
    tensors, config = append_projection(plan, target, links)
    (tmp_path / "adapter").mkdir()
    save_file(tensors, tmp_path / "adapter/adapter_model.safetensors")
    (tmp_path / "adapter/adapter_config.json").write_text(json.dumps(config))

    def merged(adapter, fold):
        model, _ = load_model_and_tokenizer(resolve_base_model(fusion["base"]), torch.device("cpu"), torch.float32)
        if fold:
            add_to_base(model, links)
        return {k: v.clone() for k, v in PeftModel.from_pretrained(model, adapter).merge_and_unload().state_dict().items()}

    exported, folded = merged(tmp_path / "adapter", False), merged(fusion["target"], True)
    target_only = merged(fusion["target"], False)
    assert exported.keys() == folded.keys()
    for key, value in exported.items():
        torch.testing.assert_close(folded[key], value, rtol=1e-5, atol=1e-5)  # float32 sums of the same terms
    changed = {key for key, value in exported.items() if not torch.allclose(value, target_only[key], atol=1e-3)}
    assert len(changed) == 21  # every aligned module of the 3 Qwen2-mapped layers carries a projected update


@pytest.mark.parametrize("argv, message", [
    (["--ridge", "0"], "--ridge must be a positive number"),
    (["--source-model", "1=X"], "source index 1 is not in the plan"),
])
def test_project_hypernet_refuses_bad_settings(fusion, tmp_path, argv, message):
    base = [str(fusion["plan_qwen"]), "--base-model", str(fusion["base"]), "--replay", str(fusion["replay"]), "-o",
            str(tmp_path / "out"), "--method", "project-hypernet"]
    extra = argv if argv[0] == "--source-model" else ["--source-model", f"0={fusion['base']}", *argv]
    result = CliRunner().invoke(main, base + extra)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (tmp_path / "out").exists()


def test_project_hypernet_without_source_models_is_refused(fusion, tmp_path):
    result = CliRunner().invoke(main, [str(fusion["plan_qwen"]), "--base-model", str(fusion["base"]), "--replay",
                                       str(fusion["replay"]), "-o", str(tmp_path / "out"), "--method", "project-hypernet"])
    assert result.exit_code == 2 and "--source-model" in result.stderr, result.output
