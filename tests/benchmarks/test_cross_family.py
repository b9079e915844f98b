"""Pieces of the cross-family benchmark: the data split and the report (means, spreads, bootstrap intervals)."""

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from benchmarks import bench_cross_family as bench
from benchmarks import child_env
from benchmarks import report_cross_family as report
from benchmarks.cross_family_setup import FILES


def test_split_never_shares_an_example_between_training_validation_and_held_out(tmp_path):
    data = tmp_path / "uie"
    data.mkdir()
    for task, name in FILES.items():
        rows = [{"instruction": f"{task} {i}", "input": "", "output": f" t: {i}", "history": [["q", "a"]]} for i in range(300)]
        (data / name).write_text(json.dumps(rows))
    mode = bench.MODES["cpu"]
    paths = bench.split(data, tmp_path / "work", mode)
    for task in (bench.TARGET_TASK, *mode.sources):
        parts = {part: json.loads(paths[task][part].read_text()) for part in ("train", "val", "heldout")}
        ids = {part: {r["instruction"] for r in rows} for part, rows in parts.items()}
        assert len(ids["train"]) == 216 and len(ids["val"]) == mode.n_validation and len(ids["heldout"]) == mode.n_heldout
        assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["heldout"]) and not (ids["val"] & ids["heldout"])
        assert ids["heldout"] <= {f"{task} {i}" for i in range(240, 300)}  # the last 60 stay held out
        assert all("history" not in r for rows in parts.values() for r in rows)  # zero-shot in cpu mode
        assert paths[task]["heldout"].stem == task
    subset = json.loads(paths["findvehicle"]["train-16"].read_text())
    assert [r["instruction"] for r in subset] == [f"findvehicle {i}" for i in range(16)]


def _eval_dir(root: Path, name: str, per_task: dict[str, list[tuple[int, int, int]]]) -> str:
    folder = root / f"eval-{name}"
    (folder / "predictions" / name).mkdir(parents=True)
    for task, counts in per_task.items():
        rows = [{"n_pred": p, "n_gold": g, "n_correct": c} for p, g, c in counts]
        (folder / "predictions" / name / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(folder)


def _run(root, name, method, seed, null, counts, labels=0):
    import numpy as np

    from hf_eval.compare import f1_of_counts

    tasks = {t: {"precision": 0.0, "recall": 0.0, "f1": float(f1_of_counts(np.array(c).sum(axis=0)))}
             for t, c in counts.items()}
    return {"name": name, "method": method, "seed": seed, "lr": 1e-4, "source_labels_per_task": labels,
            "null_source": null, "tasks": tasks, "macro": {"f1": sum(t["f1"] for t in tasks.values()) / len(tasks)},
            "eval_dir": _eval_dir(root, name, counts), "train_seconds": 10.0, "train_peak_mib": 100.0}


def test_report_gives_means_shares_and_paired_intervals(tmp_path):
    right, wrong = (1, 1, 1), (1, 1, 0)
    runs = [_run(tmp_path, "target", "target", 0, False, {"a": [right, wrong], "b": [wrong, wrong]}, labels=None)]
    for seed in range(3):  # fusion gets task b's first example right; its null-source twin never does
        runs.append(_run(tmp_path, f"hn-s{seed}", "hypernet", seed, False, {"a": [right, wrong], "b": [right, wrong]}))
        runs.append(_run(tmp_path, f"null-s{seed}", "hypernet", seed, True, {"a": [right, wrong], "b": [wrong, wrong]}))
        runs.append(_run(tmp_path, f"rt-s{seed}", "replay-tune", seed, False, {"a": [right, right], "b": [wrong, wrong]}))
    for seed in range(2):  # a longer budget of distill: its own rows, compared with replay-tune of the same steps
        runs.append({**_run(tmp_path, f"d-s{seed}", "distill-lora", seed, False, {"a": [right, wrong], "b": [right, right]}),
                     "steps": 60, "n_unlabeled": 100})
        runs.append({**_run(tmp_path, f"dn-s{seed}", "distill-lora", seed, True, {"a": [right, wrong], "b": [wrong, wrong]}),
                     "steps": 60, "n_unlabeled": 100})
        runs.append({**_run(tmp_path, f"rt60-s{seed}", "replay-tune", seed, False, {"a": [right, wrong], "b": [wrong, wrong]}),
                     "steps": 60})
        # the labelled ceiling: every labelled source example of the pool (smoke mode's pool: 8), the same steps
        runs.append({**_run(tmp_path, f"rt60-L8-s{seed}", "replay-tune", seed, False,
                            {"a": [right, wrong], "b": [right, right]}, labels=8), "steps": 60})
    for seed in range(3):  # a named variant (--variant): its own rows and its own twin; an epoch budget is named so
        extra = {"steps": None, "epochs": 2.0, "n_unlabeled": 100, "variant": "auto", "fuse_args": ["--x"]}
        runs.append({**_run(tmp_path, f"v-s{seed}", "distill-lora", seed, False, {"a": [right, wrong], "b": [right, wrong]}),
                     **extra})
        runs.append({**_run(tmp_path, f"vn-s{seed}", "distill-lora", seed, True, {"a": [right, wrong], "b": [wrong, wrong]}),
                     **extra})
    runs[1]["train_resumed"] = True  # hn-s0: its training was stopped part-way and resumed
    results = {"mode": "test", "settings": asdict(bench.MODES["smoke"]), "commit": "abc", "date": "d",
               "device": "cpu", "target_task": "a", "source_tasks": ["b"], "experts": {"b": 1.0},
               "expert_scores": {"b": {"precision": 1.0, "recall": 1.0, "f1": 1.0}}, "runs": runs,
               "chosen_lr": {"L0": {"hypernet": 1e-4, "replay-tune": 3e-4}},
               "validation": {"L0": {"hypernet": {"0.0001": 0.5}, "replay-tune": {"0.0003": 0.6}}}}
    report.write_report(tmp_path, results)
    every_run = (tmp_path / "results.md").read_text().split("## Every run")[1]
    assert "| 10 (resumed: the last part only) | - | 100 |" in every_run.split("| hn-s0 |")[1].splitlines()[0]
    assert "resumed" not in every_run.split("| hn-s1 |")[1].splitlines()[0]
    written = json.loads((tmp_path / "results.json").read_text())
    by = {c["comparison"]: c for c in written["comparisons"]}
    assert by["hypernet - null-source"]["seeds"] == [0, 1, 2]
    assert by["hypernet - null-source"]["tasks"]["b"]["diff"] == pytest.approx(0.5)  # F1 1/2 vs 0 on task b
    assert by["hypernet - null-source"]["tasks"]["a"] == {"diff": 0.0, "low": 0.0, "high": 0.0}
    assert by["hypernet - replay-tune"]["tasks"]["a"]["diff"] == pytest.approx(0.5 - 1.0)
    longer = by["distill-lora [60 steps, 100 prompts] - replay-tune [60 steps]"]
    assert longer["seeds"] == [0, 1] and longer["tasks"]["b"]["diff"] == pytest.approx(1.0)
    assert by["distill-lora [60 steps, 100 prompts] - null-source"]["tasks"]["b"]["diff"] == pytest.approx(1.0)
    text = (tmp_path / "results.md").read_text()
    assert "| 0 | hypernet (null sources) | 3 | 0.0001 | 50.0 ± 0.0 | 0.0 ± 0.0 |" in text
    assert "b 50 %" in text  # fusion recovers half of the expert's F1 on its task
    assert "+50.0 [+0.0, +100.0]" in text  # the two-example interval of task b
    # the first transfer bar: 50 % of the expert, 50 above null; the target alone scores 0 on b, so half the gap is closed
    first_bar, second_bar = text.split("## The bar of the first transfer")[1].split("## The bar of the second transfer")
    assert "| hypernet | 3 / 3 | b 50.0 ± 0.0 (50 %; gap closed 50 %) | 0.0 | +50.0 | +0.0 | +0.0 | yes |" in first_bar
    # all conditions hold, but with 2 seeds the bar (3 seeds at least) is not met
    assert "| distill-lora [60 steps, 100 prompts] | 2 / 2 | b 100.0 ± 0.0 (100 %; gap closed 100 %; 100 % of labelled) | " \
           "0.0 | +100.0 | +0.0 | +0.0 | no |" in first_bar
    assert "| hypernet | 3 / 3 | b 50.0 ± 0.0 (50 %; gap closed 50 %) | 0.0 | +50.0 | +0.0 | +0.0 | no |" in second_bar  # < 80 %
    assert "b 50 % (gap closed 50 %)" in text
    variant = by["distill-lora [2 epochs, 100 prompts, auto] - null-source"]
    assert variant["seeds"] == [0, 1, 2] and variant["tasks"]["b"]["diff"] == pytest.approx(0.5)
    assert "| distill-lora [2 epochs, 100 prompts, auto] | 3 / 3 | b 50.0 ± 0.0 (50 %; gap closed 50 %) | 0.0 | +50.0 |" \
           in first_bar


def test_results_accumulate_across_invocations_with_the_same_settings(tmp_path):
    from dataclasses import asdict

    settings = asdict(bench.MODES["cpu"])
    earlier = {"mode": "cpu", "settings": settings, "runs": [{"name": "hypernet-L0-lr0.0003-s0"}], "experts": {"x": 0.5}}
    (tmp_path / "results.json").write_text(json.dumps(earlier))
    other_labels = {"mode": "cpu", "settings": asdict(replace(bench.MODES["cpu"], labels=(0,)))}
    kept = report.earlier_results(tmp_path / "results.json", other_labels)
    assert kept["runs"] == earlier["runs"] and kept["experts"] == {"x": 0.5}
    further = {"mode": "cpu", "settings": asdict(replace(bench.MODES["cpu"], beyond=bench.MODES["cpu"].beyond + 1,
                                                         grid=(1e-3, 3e-3)))}
    assert report.earlier_results(tmp_path / "results.json", further)["runs"] == earlier["runs"]  # the same runs
    other_budget = {"mode": "cpu", "settings": asdict(replace(bench.MODES["cpu"], n_heldout=24))}
    assert report.earlier_results(tmp_path / "results.json", other_budget) == {}
    assert report.earlier_results(tmp_path / "missing.json", other_labels) == {}


def test_results_of_two_invocations_merge_and_each_keeps_its_own_entries():
    mine = {"runs": [{"name": "a", "x": 1}], "experts": {"t": 0.5}, "chosen_lr": {"L0": {"hypernet": 1e-4}},
            "validation": {"L0": {"hypernet": {"0.0001": 0.1}}}}
    other = {"runs": [{"name": "a", "x": 2}, {"name": "b"}], "experts": {"u": 0.7},
             "chosen_lr": {"L0": {"hypernet": 3e-4, "project": 1.0}}, "validation": {"L0": {"project": {"1": 0.2}}}}
    report.merge_results(mine, other)
    assert mine["runs"] == [{"name": "a", "x": 1}, {"name": "b"}]
    assert mine["experts"] == {"t": 0.5, "u": 0.7}
    assert mine["chosen_lr"] == {"L0": {"hypernet": 1e-4, "project": 1.0}}
    assert mine["validation"]["L0"] == {"hypernet": {"0.0001": 0.1}, "project": {"1": 0.2}}


def test_a_run_recorded_again_with_its_cached_scores_keeps_when_it_was_first_measured():
    first, today = {"commit": "c1", "date": "d1", "device": "cpu"}, {"commit": "c2", "date": "d2", "device": "cpu"}
    same, other = {"a": {"f1": 0.5}}, {"a": {"f1": 0.6}}
    mine = {"runs": [{"name": "cached", "tasks": same, "measured": today},
                     {"name": "again", "tasks": other, "measured": today},
                     {"name": "old", "tasks": same, "measured": today}]}
    earlier = {"runs": [{"name": "cached", "tasks": same, "measured": first},
                        {"name": "again", "tasks": same, "measured": first},
                        {"name": "old", "tasks": same}]}  # recorded before runs kept a stamp
    report.merge_results(mine, earlier)
    by = {r["name"]: r for r in mine["runs"]}
    assert by["cached"]["measured"] == first and by["again"]["measured"] == today and "measured" not in by["old"]


def test_a_fresh_work_folder_merges_into_a_published_table_and_keeps_what_it_cannot_recompute(tmp_path):
    import shutil

    right, wrong = (1, 1, 1), (1, 1, 0)
    base = {"mode": "test", "settings": asdict(bench.MODES["smoke"]), "commit": "abc", "date": "d", "device": "cpu",
            "target_task": "a", "source_tasks": ["b"], "experts": {"b": 1.0}, "expert_scores": {}, "chosen_lr": {},
            "validation": {}}
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    # the published table: a row and its twin, whose evaluations were on another machine (removed below)
    runs = [_run(old, "d-s0", "distill-lora", 0, False, {"a": [right, wrong], "b": [right, wrong]}),
            _run(old, "dn-s0", "distill-lora", 0, True, {"a": [right, wrong], "b": [wrong, wrong]}),
            _run(old, "rt-s0", "replay-tune", 0, False, {"a": [right, right], "b": [wrong, wrong]})]
    report.write_report(old, {**base, "runs": runs, "chosen_lr": {"L0": {"distill-lora": 1e-3}}})
    published = tmp_path / "table.json"
    table = json.loads((old / "results.json").read_text())
    for run in table["runs"]:  # a table written before runs kept their per-example counts
        del run["per_example"]
    # and an interval of a row the table no longer has (a label the report has since renamed): dropped on merging
    table["comparisons"].append({**table["comparisons"][0], "comparison": "distill-lora [gone] - null-source"})
    published.write_text(json.dumps(table))
    kept = {c["comparison"]: c for c in json.loads(published.read_text())["comparisons"]}
    for folder in old.glob("eval-*"):
        shutil.rmtree(folder)
    # a fresh folder: an option row with its twin, and the replay-tune run measured again (its name wins)
    fresh = [{**_run(new, f"{n}-s0", "distill-lora", 0, null, {"a": [right, wrong], "b": [c, wrong]}), "variant": "x"}
             for n, null, c in (("v", False, right), ("vn", True, wrong))]
    fresh.append({**_run(new, "rt-s0", "replay-tune", 0, False, {"a": [right, wrong], "b": [wrong, wrong]}), "new": 1})
    report.write_report(new, {**base, "runs": fresh, "chosen_lr": {"L0-Vx": {"distill-lora": 3e-3}}})
    report.merge_into(new / "results.json", published)
    merged = json.loads(published.read_text())
    assert sorted(r["name"] for r in merged["runs"]) == ["d-s0", "dn-s0", "rt-s0", "v-s0", "vn-s0"]
    assert next(r for r in merged["runs"] if r["name"] == "rt-s0")["new"] == 1
    assert merged["chosen_lr"] == {"L0": {"distill-lora": 1e-3}, "L0-Vx": {"distill-lora": 3e-3}}
    by = {c["comparison"]: c for c in merged["comparisons"]}
    assert "distill-lora [gone] - null-source" not in by
    assert by["distill-lora - null-source"] == kept["distill-lora - null-source"]  # kept: its evaluations are gone
    assert by["distill-lora [x] - null-source"]["tasks"]["b"]["diff"] == pytest.approx(0.5)  # computed from the fresh
    assert "distill-lora [x]" in published.with_suffix(".md").read_text()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**merged, "settings": {**merged["settings"], "n_heldout": 1}}))
    with pytest.raises(SystemExit, match="settings differ"):
        report.merge_into(new / "results.json", other)


def test_publishing_merges_into_the_table_and_its_intervals_cover_the_seeds_of_every_machine(tmp_path):
    right, wrong = (1, 1, 1), (1, 1, 0)
    base = {"mode": "test", "settings": asdict(bench.MODES["smoke"]), "commit": "abc", "date": "d", "device": "cpu",
            "target_task": "a", "source_tasks": ["b"], "experts": {"b": 1.0}, "expert_scores": {}, "chosen_lr": {},
            "validation": {}}
    table = tmp_path / "results" / "cross_family.json"
    for seed, b in ((0, [right, wrong]), (1, [right, right])):  # each seed on a machine of its own
        folder = tmp_path / f"machine{seed}"
        runs = [_run(folder, f"d-s{seed}", "distill-lora", seed, False, {"a": [right, wrong], "b": b}),
                _run(folder, f"dn-s{seed}", "distill-lora", seed, True, {"a": [right, wrong], "b": [wrong, wrong]})]
        report.write_report(folder, {**base, "runs": runs}, publish=table)
        assert json.loads((folder / "results.json").read_text())["runs"][0]["per_example"]["b"] == \
            ";".join(" ".join(map(str, c)) for c in b)
        for evaluation in folder.glob("eval-*"):  # the machine is gone, and its evaluations with it
            for path in sorted(evaluation.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
    merged = json.loads(table.read_text())
    assert sorted(r["name"] for r in merged["runs"]) == ["d-s0", "d-s1", "dn-s0", "dn-s1"]  # merged, not replaced
    [twin] = [c for c in merged["comparisons"] if c["comparison"] == "distill-lora - null-source"]
    assert twin["seeds"] == [0, 1] and twin["tasks"]["b"]["diff"] == pytest.approx((0.5 + 1.0) / 2)
    assert "| 0 | distill-lora | 2 |" in table.with_suffix(".md").read_text()
    runs = [{**r, "measured": {"commit": "c1", "date": "d1", "device": "cpu"}} for r in merged["runs"][:3]]
    assert report.provenance(runs + merged["runs"][3:]) == [
        "Runs measured: d1, commit c1, cpu: 3; before runs recorded it: 1.", ""]
    assert report.provenance(merged["runs"]) == []  # a table of one machine: its header says it


def test_a_two_source_plan_joins_a_one_source_table_and_each_set_is_compared_and_judged_on_its_own(tmp_path):
    import shutil

    right, wrong = (1, 1, 1), (1, 1, 0)
    base = {"mode": "test", "commit": "abc", "date": "d", "device": "cpu", "target_task": "a", "expert_scores": {},
            "chosen_lr": {}, "validation": {}}
    tables = {}
    for sources, experts in ((["b"], {"b": 1.0}), (["b", "c"], {"b": 1.0, "c": 0.5})):
        folder, tag = tmp_path / "_".join(sources), "-".join(sources)
        folder.mkdir()
        scores = {"a": [right, right], "b": [right, right], "c": [wrong, wrong]}  # each fused run: b learnt, c not
        runs = [_run(folder, f"target-{tag}", "target", 0, False, {t: [wrong, wrong] for t in ["a", *sources]}, labels=None)]
        for seed in range(3):
            runs.append(_run(folder, f"d-s{seed}-{tag}", "distill-lora", seed, False, {t: scores[t] for t in ["a", *sources]}))
            runs.append(_run(folder, f"dn-s{seed}-{tag}", "distill-lora", seed, True,
                             {t: [right, wrong] if t == "a" else [wrong, wrong] for t in ["a", *sources]}))
        settings = {**asdict(bench.MODES["smoke"]), "sources": sources}
        report.write_report(folder, {**base, "settings": settings, "source_tasks": sources, "experts": experts, "runs": runs})
        tables[tag] = folder / "results.json"
    computed = json.loads(tables["b-c"].read_text())["comparisons"]
    for folder in (tmp_path / "b_c").glob("eval-*"):  # a table of another machine: its intervals are kept, not computed
        shutil.rmtree(folder)
    report.merge_into(tables["b-c"], tables["b"])
    merged = json.loads(tables["b"].read_text())
    assert merged["source_tasks"] == merged["settings"]["sources"] == ["b", "c"] and len(merged["runs"]) == 14
    assert merged["experts"] == {"b": 1.0, "c": 0.5}
    # the same comparison's name in both sets, each computed among its own runs
    assert sorted((tuple(c["sources"]), c["comparison"]) for c in merged["comparisons"]) == [
        (("b",), "distill-lora - null-source"), (("b", "c"), "distill-lora - null-source")]
    assert [c["tasks"] for c in merged["comparisons"] if c["sources"] == ["b", "c"]] == [computed[0]["tasks"]]
    text = tables["b"].with_suffix(".md").read_text()
    one = text.split("## The bar of the second transfer, with the source task's unlabelled prompts")[1].split("## ")[0]
    two = text.split("## The bar of the second transfer, two experts in one plan")[1].split("## ")[0]
    assert one.startswith(" (0 source labels, mean over seeds) (sources: b)") and "| yes |" in one
    assert two.startswith(" (0 source labels, mean over seeds) (sources: b, c)") and "| no |" in two  # c at 0 %
    assert text.count("## The bar of the second transfer, two experts") == 1  # a one-source plan is not judged as two
    # fewer sources first although the two-source file was merged last: a merge does not move published sections
    assert text.index("(sources: b)") < text.index("(sources: b, c)")


def test_each_bar_judges_its_own_runs(tmp_path):
    right, wrong = (1, 1, 1), (1, 1, 0)
    runs = [_run(tmp_path, "target", "target", 0, False, {"a": [right], "b": [wrong], "c": [wrong]}, labels=None)]
    free = {"data_free": True, "n_seed_prompts": 5, "n_synthesized": 64, "n_unlabeled": 0}
    for seed in range(3):
        runs.append(_run(tmp_path, f"d-s{seed}", "distill-lora", seed, False, {"a": [right], "b": [right], "c": [right]}))
        runs.append(_run(tmp_path, f"dn-s{seed}", "distill-lora", seed, True, {"a": [right], "b": [wrong], "c": [wrong]}))
        runs.append({**_run(tmp_path, f"f-s{seed}", "distill-lora", seed, False, {"a": [right], "b": [right], "c": [wrong]}),
                     **free})
        runs.append({**_run(tmp_path, f"fn-s{seed}", "distill-lora", seed, True, {"a": [right], "b": [wrong], "c": [wrong]}),
                     **free})
    results = {"mode": "test", "settings": asdict(bench.MODES["smoke"]), "commit": "abc", "date": "d", "device": "cpu",
               "target_task": "a", "source_tasks": ["b", "c"], "experts": {"b": 1.0, "c": 1.0}, "expert_scores": {},
               "runs": runs, "chosen_lr": {}, "validation": {}}
    text = report.render(results)
    two = text.split("## The bar of the second transfer, two experts in one plan")[1].split("## ")[0]
    free_bar = text.split("## The bar of the second transfer, data-free (5 seed prompts)")[1].split("## ")[0]
    assert "| distill-lora | 3 / 3 |" in two and "data-free" not in two.split("|---|")[-1]
    assert "yes |" in two  # both sources at 100 %, each twin 100 points lower
    assert "| distill-lora [data-free: 5 seeds, 64 written] | 3 / 3 |" in free_bar and "no |" in free_bar  # c at 0 %
    assert "## The bar of the first transfer" not in text  # one-source bars do not judge a two-source plan


def test_each_set_of_source_tasks_keeps_its_own_results_file(tmp_path):
    import subprocess

    runs = [_run(tmp_path, "target", "target", 0, False, {"a": [(1, 1, 1)], "b": [(1, 1, 0)]}, labels=None)]
    base = {"mode": "test", "settings": asdict(bench.MODES["smoke"]), "commit": "abc", "date": "d", "device": "cpu",
            "target_task": "a", "experts": {}, "expert_scores": {}, "chosen_lr": {}, "validation": {}}
    report.write_report(tmp_path, {**base, "source_tasks": ["b"], "runs": runs})
    report.write_report(tmp_path, {**base, "source_tasks": ["b", "c"], "runs": runs[:0]}, name="results_b_c")
    assert json.loads((tmp_path / "results.json").read_text())["source_tasks"] == ["b"]  # not replaced by the other
    assert json.loads((tmp_path / "results_b_c.json").read_text())["source_tasks"] == ["b", "c"]
    for path in tmp_path.glob("results*.md"):
        path.unlink()
    # re-renders both
    subprocess.run([sys.executable, "-m", "benchmarks.report_cross_family", str(tmp_path)], check=True, env=child_env())
    assert (tmp_path / "results.md").exists() and (tmp_path / "results_b_c.md").exists()


def test_a_runs_record_says_what_the_writer_wrote_and_the_filter_kept():
    answers = {"prompts": 46, "kept": 39, "empty": 0, "truncated": 7, "filtered": 0, "cache": "x"}
    old = {"n_generated_examples": 39, "sources": {"0": {**answers, "synthesis": {"candidates": 216, "kept": 46}}}}
    new = {"n_generated_examples": 39, "sources": {"0": {**answers, "synthesis": {
        "candidates": 216, "kept": 46, "temperature": 0.7, "writer": "source", "lines": 3}}}}
    plain = {"n_generated_examples": 39, "sources": {"0": answers}}
    assert report.distill_record(old)["sources"]["0"]["synthesis"] == {"candidates": 216, "kept": 46, "temperature": 1.0,
                                                                      "writer": "target"}
    assert report.distill_record(new)["sources"]["0"]["synthesis"]["temperature"] == 0.7
    assert report.distill_record(plain) == {"n_generated_examples": 39, "sources": {"0": {
        "prompts": 46, "kept": 39, "empty": 0, "truncated": 7}}}


def test_other_source_tasks_name_their_own_plans_and_runs():
    assert bench.source_tag("cpu", ("findvehicle",)) == ""  # the mode's own sources: the names runs always had
    two = bench.source_tag("cpu", ("findvehicle", "conll04"))
    assert two and two != bench.source_tag("cpu", ("conll04", "findvehicle")) != ""  # the order is the plan's
    assert bench.source_tag("full", ("findvehicle",)) not in ("", two)


@pytest.mark.parametrize("flags, says", [(["--lr", "0"], "--lr: a learning rate between 0 and 1"),
                                         (["--only", "both"], "invalid choice: 'both'")])
def test_bad_run_selection_flags_stop_before_any_work(tmp_path, flags, says):
    import subprocess

    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_cross_family", "--work", str(tmp_path / "w"), *flags],
                          capture_output=True, text=True, env=child_env())
    assert done.returncode == 2 if flags[0] == "--only" else done.returncode == 1
    assert says in done.stderr and not (tmp_path / "w").exists()


def test_a_label_task_reads_its_accuracy_and_a_three_source_plan_its_own_bar(tmp_path):
    right, wrong = (1, 1, 1), (1, 1, 0)
    runs = [_run(tmp_path, "target", "target", 0, False, {t: [wrong] for t in "abcd"}, labels=None)]
    for seed in range(3):
        runs.append(_run(tmp_path, f"d-s{seed}", "distill-lora", seed, False, {t: [right] for t in "abcd"}))
        runs.append(_run(tmp_path, f"dn-s{seed}", "distill-lora", seed, True, {"a": [right], **{t: [wrong] for t in "bcd"}}))
    for run in runs:  # task d is a label task: its F1 field says 0.5 but its accuracy (its score) is what counts
        hit = run["method"] != "target" and not run["null_source"]
        run["tasks"]["d"] = {"precision": 0.5, "recall": 0.5, "f1": 0.5, "score": 1.0 if hit else 0.2,
                             "score_name": "accuracy", "metric": "exact"}
    results = {"mode": "test", "settings": asdict(bench.MODES["smoke"]), "commit": "abc", "date": "d", "device": "cpu",
               "target_task": "a", "source_tasks": ["b", "c", "d"], "experts": {"b": 1.0, "c": 1.0, "d": 0.9},
               "expert_scores": {"d": {"precision": 0.9, "recall": 0.9, "f1": 0.9, "score": 0.9,
                                       "score_name": "accuracy", "metric": "exact"}},
               "runs": runs, "chosen_lr": {}, "validation": {}}
    text = report.render(results)
    assert "| d | 90.0 | 90.0 | 90.0 accuracy |" in text
    assert "| b F1 | c F1 | d accuracy |" in text
    runs[1]["train_steps"] = 162
    text = report.render(results)
    cost = text.split("## Cost of each row")[1].split("## ")[0]
    assert "| distill-lora | 3 | 162 | 10 | 0.1 | 100 |" in cost and "null" not in cost  # only rows that recorded steps
    assert "| d-s0 | 0.0 / 0.0 / 100.0 | 0.0 / 0.0 / 100.0 | 0.0 / 0.0 / 100.0 | 100.0 accuracy | 10 | 162 | 100 |" in text
    three = text.split("## The bar of transfer breadth, three experts in one plan")[1].split("## ")[0]
    assert "d 100.0 ± 0.0 (111 %; gap closed 114 %)" in three and "| 20.0 |" not in three  # the twin's accuracy: 20
    assert three.rstrip().endswith("| yes |")
    assert "## The bar of the second transfer, two experts" not in text  # three sources are not judged as two
    assert report.scores_prf({"precision": 1, "recall": 1, "f1": 1, "score": 0.7, "score_name": "accuracy",
                              "metric": "exact"})["score"] == 0.7
    assert "score" not in report.scores_prf({"precision": 1, "recall": 1, "f1": 1, "score": 1, "score_name": "f1"})


@pytest.mark.parametrize("runs_file", sorted((Path(bench.HERE) / "runs").glob("*.txt")), ids=lambda p: p.name)
def test_every_line_of_every_runs_file_is_a_valid_invocation(runs_file):
    from benchmarks.cross_family_runs import method_variants
    from benchmarks.runner import read_runs

    invocations = [argv for phase in read_runs(runs_file) for argv in phase]
    assert invocations
    for argv in invocations:
        args = bench.parse_args(argv)
        bench.settings_of(args)  # exits with one line on a bad option
        assert set(args.methods) <= {*method_variants(), "replay-tune"}, argv
