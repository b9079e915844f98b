"""Three experts of three families in one distill plan: every source's expert answers its own prompts, the replay is
repeated 2 per source (--replay-repeat auto: 6), and the fused adapter exports with the target's keys and dtypes."""

import json

import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from tiny_models import make_source_model

from hf_analyze.execute import execute
from hf_analyze.planner import AnalyzeSettings, analyze
from hf_analyze.report import build_report
from hf_fuse.cli import main


def test_a_three_source_plan_trains_and_exports(fusion, tmp_path):
    families = ("qwen2", "llama", "gemma3")
    sources = [make_source_model(tmp_path / f, f, seed=10 + k) for k, f in enumerate(families)]
    analysis = analyze(fusion["target"], [s["expert"] for s in sources], AnalyzeSettings(block_size="auto"))
    execute(analysis, build_report(analysis), tmp_path / "plan.h5")
    rows = json.loads(fusion["replay"].read_text())
    prompts = []
    for k in range(3):  # a prompt file per source
        path = tmp_path / f"prompts-{k}.json"
        path.write_text(json.dumps([{"instruction": r["instruction"], "input": r["input"]} for r in rows[k::3][:3]]))
        prompts += ["--source-model", f"{k}={sources[k]['base']}", "--unlabeled", f"{k}={path}"]
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(tmp_path / "plan.h5"), "--base-model", str(fusion["base"]), "--replay",
                                       str(fusion["replay"]), "-o", str(out), "--method", "distill", *prompts,
                                       "--gen-max-new-tokens", "3", "--gen-batch-size", "4", "--max-steps", "2",
                                       "--batch-size", "2", "--grad-accum", "1", "--max-examples-per-file", "4"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "fusion_report.json").read_text())
    d = report["distill"]
    assert sorted(d["sources"]) == ["0", "1", "2"] and all(s["prompts"] == 3 for s in d["sources"].values())
    assert d["replay_repeat"] == 6  # auto: 2 per source adapter of the plan
    assert [e["role"] for e in report["inputs"][0]] == ["target", "source", "source", "source"]
    assert {e["input"] for e in report["terms"]} >= {f"source {k} base model" for k in range(3)}
    fused, target = load_file(out / "adapter_model.safetensors"), load_file(fusion["target"] / "adapter_model.safetensors")
    assert fused.keys() == target.keys() and all(fused[k].dtype == target[k].dtype for k in target)
    assert any(not torch.equal(fused[k], target[k]) for k in target)
