import json

import pytest
from click.testing import CliRunner

from hf_common.model_card import card
from hf_eval.controls import differences, identity, pairs


def _adapter(folder, method=None, control=False):
    folder.mkdir(parents=True)
    tags = ["null-source-control"] if control else []
    (folder / "README.md").write_text(card(title="t", base_model=None, how="h", tags=tags))
    if method:
        (folder / "fusion_report.json").write_text(json.dumps({"method": method}))
    return folder


def test_a_fusion_pairs_with_the_control_of_its_own_method(tmp_path):
    found = {name: identity(_adapter(tmp_path / name, method, control)) for name, method, control in (
        ("distill", "distill", False), ("distill-null", "distill", True), ("hypernet", "hypernet", False),
        ("hypernet-null", "hypernet", True), ("null-adapter", None, True), ("replay-tune", None, False))}
    found["base"] = identity(None)
    assert found["distill-null"] == {"method": "distill", "control": True}
    assert found["replay-tune"] == {"method": None, "control": False}
    assert pairs(found) == [("distill", "distill-null"), ("hypernet", "hypernet-null")]
    (tmp_path / "hypernet/fusion_report.json").write_text("{not json")  # an unreadable report: no method, no pair
    assert identity(tmp_path / "hypernet") == {"method": None, "control": False}


def test_the_difference_is_the_fusion_minus_its_twin_on_the_same_examples(tmp_path):
    found = {"a": {"method": "m", "control": False}, "c": {"method": "m", "control": True}}
    right, wrong = {"n_pred": 1, "n_gold": 1, "n_correct": 1}, {"n_pred": 1, "n_gold": 1, "n_correct": 0}
    predictions = {("a", "t"): [right] * 6 + [wrong] * 2, ("c", "t"): [right] * 2 + [wrong] * 6}
    (entry,) = differences(found, predictions)
    assert entry["adapter"] == "a" and entry["control"] == "c" and entry["n_examples"] == {"t": 8}
    t = entry["difference"]["t"]
    assert t["diff"] == pytest.approx(0.75 - 0.25) and t["low"] <= t["diff"] <= t["high"]
    assert differences({"a": found["a"]}, predictions) == []  # no twin evaluated: nothing to compare


def test_evaluate_shows_each_fusion_beside_its_null_source_twin(fusion, tmp_path):
    from html_check import check_report

    from hf_analyze.execute import execute
    from hf_analyze.planner import AnalyzeSettings, analyze
    from hf_analyze.report import build_report
    from hf_eval.cli import main as hf_eval
    from hf_eval.null_source import write_null_source
    from hf_fuse.cli import main as hf_fuse

    write_null_source(fusion["qwen"], tmp_path / "null", seed=0, force=False)
    analysis = analyze(fusion["target"], [tmp_path / "null"], AnalyzeSettings(block_size="auto"))
    execute(analysis, build_report(analysis), tmp_path / "null-plan.h5")
    for plan, out in ((fusion["plan"], "fused"), (tmp_path / "null-plan.h5", "control")):
        made = CliRunner().invoke(hf_fuse, [str(plan), "--base-model", str(fusion["base"]), "--replay",
                                            str(fusion["replay"]), "-o", str(tmp_path / out), "--max-steps", "2",
                                            "--grad-accum", "1", "--lr", "1e-2", "--n-heads", "2", "--n-proj", "16"])
        assert made.exit_code == 0, made.output
    result = CliRunner().invoke(hf_eval, ["evaluate", "--base-model", str(fusion["base"]), "--data", str(fusion["replay"]),
                                          "--adapter", f"target={fusion['target']}", "--adapter", f"fused={tmp_path / 'fused'}",
                                          "--adapter", f"control={tmp_path / 'control'}", "-o", str(tmp_path / "results"),
                                          "--max-new-tokens", "8", "--max-examples", "6"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "results/results.json").read_text())
    (entry,) = results["differences"]
    assert (entry["adapter"], entry["control"], entry["method"]) == ("fused", "control", "hypernet")
    scores = results["adapters"]
    assert entry["difference"]["replay"]["diff"] == pytest.approx(scores["fused"]["tasks"]["replay"]["f1"]
                                                                  - scores["control"]["tasks"]["replay"]["f1"])
    held = check_report(tmp_path / "results/report.html")
    assert "each fusion minus its null-source twin" in held["text"] and "fused − control" in held["text"]
    assert "replay P / R / F1 (n = 6)" in held["text"]
