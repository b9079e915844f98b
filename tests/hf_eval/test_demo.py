"""The demo end to end on tiny models of two families (another tokenizer, depth and width), twice: the second run
finds every step done and runs nothing (the steps keep their cache keys)."""

import json
import os

from tiny_models import make_source_model

from hf_common.console import Console
from hf_eval.demo import ROWS, main


def test_the_demo_runs_every_row_and_a_second_run_skips_every_step(fusion, tmp_path):
    source = make_source_model(tmp_path / "qwen2", "qwen2")
    work = tmp_path / "demo"
    scores = main(work, target_base=str(fusion["base"]), source_base=str(source["base"]), console=Console(quiet=True))
    assert list(scores) == list(ROWS)
    assert all(set(s["tasks"]) == {"ner", "relations"} for s in scores.values())
    steps = json.loads((work / "steps.json").read_text())
    assert len(steps) == 14 and all(r["rc"] == 0 for r in steps.values())
    if (os.cpu_count() or 1) > 1:  # the two lanes ran side by side, their output in files
        assert (work / "fused-null-source.out").exists() and (work / "fused.out").exists()
    report = json.loads((work / "distill" / "fusion_report.json").read_text())
    assert report["distill"]["sources"]["0"]["prompts"] == 40

    again = main(work, target_base=str(fusion["base"]), source_base=str(source["base"]), console=Console(quiet=True))
    assert again == scores
    assert json.loads((work / "steps.json").read_text()) == steps  # nothing ran again
