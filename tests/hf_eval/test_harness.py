"""hf-eval harness: lm-evaluation-harness on adapters, with a local task (nothing downloaded)."""

import json
import shutil
import sys

import pytest
from click.testing import CliRunner

from hf_eval.cli import main

pytest.importorskip("lm_eval")


def _task(folder, name="colours", extra=""):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"question": f"Which colour is item {i}?", "choices": ["red", "green", "blue"], "answer": i % 3}
            for i in range(9)]
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {folder / f'{name}.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
        f"doc_to_choice: choices\ndoc_to_target: answer\n{extra}metric_list:\n  - metric: acc\n"
        "    aggregation: mean\n    higher_is_better: true\n")
    return folder


def _marked(folder, method, control):
    """The identity hf-fuse writes (fusion_report.json's method, the card's control tag) on a real adapter."""
    from hf_common.model_card import card

    (folder / "fusion_report.json").write_text(json.dumps({"method": method}))
    (folder / "README.md").write_text(card(title="t", base_model=None, how="h",
                                           tags=["null-source-control"] if control else []))
    return folder


def run(*args):
    return CliRunner().invoke(main, ["harness", *map(str, args)], catch_exceptions=False)


def test_harness_scores_each_adapter_and_each_fusion_against_its_twin(fusion, tmp_path):
    from html_check import check_report

    from hf_eval.null_source import write_null_source

    fused = _marked(shutil.copytree(fusion["target"], tmp_path / "fused"), "distill", False)
    write_null_source(fusion["target"], tmp_path / "control", seed=1, force=False)
    _marked(tmp_path / "control", "distill", True)
    tasks = _task(tmp_path / "tasks")
    result = run("--base-model", fusion["base"], "--adapter", f"fused={fused}", "--adapter", f"control={tmp_path / 'control'}",
                 "--tasks", "colours", "--include-path", tasks, "-o", tmp_path / "out", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out/results.json").read_text())
    acc = {name: a["results"]["colours"]["acc,none"] for name, a in results["adapters"].items()}
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    (entry,) = results["differences"]
    assert (entry["adapter"], entry["control"]) == ("fused", "control")
    difference = entry["difference"]["colours"]["acc"]
    assert difference["n"] == 9 and difference["diff"] == pytest.approx(acc["fused"] - acc["control"])
    assert difference["low"] <= difference["diff"] <= difference["high"]
    rows = (tmp_path / "out/samples/fused/colours.jsonl").read_text().splitlines()
    assert len(rows) == 9 and {"doc_id", "acc"} <= set(json.loads(rows[0]))
    held = check_report(tmp_path / "out/report.html")
    assert "fused − control" in held["text"] and "samples/control/colours.jsonl" in held["links"]
    again = run("--base-model", fusion["base"], "--tasks", "colours", "--include-path", tasks, "-o", tmp_path / "out")
    assert again.exit_code == 2 and "--force" in again.stderr


@pytest.mark.parametrize("case", ["unknown task", "task code", "not installed"])
def test_harness_refuses_in_one_line_before_loading_anything(fusion, tmp_path, monkeypatch, case):
    tasks = _task(tmp_path / "tasks", extra="process_docs: !function utils.keep\n" if case == "task code" else "")
    if case == "not installed":
        monkeypatch.setitem(sys.modules, "lm_eval", None)  # what an install without the extra sees
    result = run("--base-model", fusion["base"], "--tasks", "nope" if case == "unknown task" else "colours",
                 "--include-path", tasks, "-o", tmp_path / "out")
    expected = {"unknown task": "--tasks: unknown task 'nope'", "task code": f"{tasks / 'colours.yaml'}: line 11 names "
                "Python code with a !function tag", "not installed": "pip install 'heterofusion[harness]'"}[case]
    assert result.exit_code == 2 and expected in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_trusted_task_code_passes_the_check(tmp_path):
    from hf_eval.harness import check_task_code

    tasks = _task(tmp_path / "tasks", extra="process_docs: !function utils.keep  # the user's own\n")
    with pytest.raises(ValueError, match="--trust-task-code"):
        check_task_code([tasks], trust=False)
    check_task_code([tasks], trust=True)
    (tasks / "colours.yaml").write_text("task: colours\n# a comment may say !function\n")
    check_task_code([tasks], trust=False)
