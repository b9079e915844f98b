"""The study steps (shared by the benchmark and the demo) on the tiny generated setting, as real subprocesses."""

import json

from hf_common.adapter import load_adapter
from hf_common.console import Console
from hf_eval.experiment import Experiment
from hf_eval.study import Study, TrainBudget, per_example_counts


def test_null_source_twin_tuning_and_scores(fusion, tmp_path):
    exp = Experiment(tmp_path / "work", Console(quiet=True))
    study = Study(exp, str(fusion["base"]), TrainBudget(steps=1, batch_size=2, grad_accum=1),
                  eval_args=["--max-new-tokens", 4, "--batch-size", 4, "--max-examples", 3])
    null = study.null_source(fusion["qwen"], seed=1)
    assert sorted(load_adapter(null).tensors.keys()) == sorted(load_adapter(fusion["qwen"]).tensors.keys())
    plan = study.plan("plan-null", fusion["target"], [null])
    fused = study.fuse("fused-null", plan, [fusion["replay"]], lr=1e-3, seed=1)
    report = json.loads((fused / "fusion_report.json").read_text())
    assert report["seed"] == 1 and report["tasks"][0]["steps"] == 1

    chosen, scores = study.pick_lr(
        lambda lr: (f"tune-{lr:g}", study.replay_tune(f"tune-{lr:g}", fusion["target"], [fusion["replay"]], lr=lr, seed=0)),
        (1e-3, 1e-2), [fusion["replay"]], "replay-tune")
    assert set(scores) == {1e-3, 1e-2} and chosen == max(scores, key=lambda lr: (scores[lr], -lr))
    assert all(0.0 <= f <= 1.0 for f in scores.values())

    scored = study.evaluate_many("heldout", {"alone": fusion["target"], "fused-null": fused}, [fusion["replay"]])
    assert set(scored) == {"alone", "fused-null"} and scored["alone"]["tasks"]["replay"]["n_examples"] == 3
    counts = per_example_counts(tmp_path / "work/eval-heldout", "fused-null", "replay")
    assert len(counts) == 3 and all(len(c) == 3 for c in counts)

    steps = len(exp.records)  # a second pass over the same steps runs nothing
    again = Study(Experiment(tmp_path / "work", Console(quiet=True)), str(fusion["base"]), study.budget,
                  eval_args=study.eval_args)
    assert again.null_source(fusion["qwen"], seed=1) == null
    assert again.evaluate("tune-0.001", tmp_path / "work/tune-0.001", [fusion["replay"]]) is not None
    assert len(again.exp.records) == steps + 1  # only the new evaluation step


class _Scored(Study):
    """The tuning rule alone: validation scores read from a table instead of trained and scored adapters."""

    def __init__(self, table: dict[float, float], tmp_path):
        super().__init__(Experiment(tmp_path, Console(quiet=True)), "base", TrainBudget(steps=1))
        self.table, self.tried = table, []

    def evaluate(self, name, adapter, tasks, base_model=None):
        return {"macro": {"f1": self.table[adapter]}}


def _pick(study: _Scored, grid, beyond):
    return study.pick_lr(lambda lr: (f"r{lr:g}", study.tried.append(lr) or lr), grid, [], "rule", beyond=beyond)


def test_pick_lr_goes_past_the_grid_edge_only_while_the_edge_wins(tmp_path):
    rising = _Scored({1e-4: 0.1, 3e-4: 0.2, 1e-3: 0.3, 3e-3: 0.4, 1e-2: 0.5}, tmp_path)
    assert _pick(rising, (1e-4, 3e-4, 1e-3), beyond=0) == (1e-3, {1e-4: 0.1, 3e-4: 0.2, 1e-3: 0.3})
    rising.tried.clear()
    assert _pick(rising, (1e-4, 3e-4, 1e-3), beyond=2)[0] == 1e-2 and rising.tried == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    peaked = _Scored({1e-4: 0.1, 3e-4: 0.2, 1e-3: 0.3, 3e-3: 0.25}, tmp_path)
    lr, scores = _pick(peaked, (1e-4, 3e-4, 1e-3), beyond=2)
    assert lr == 1e-3 and list(scores) == [1e-4, 3e-4, 1e-3, 3e-3]  # one past the edge, which lost: no further
    inside = _Scored({1e-4: 0.1, 3e-4: 0.5, 1e-3: 0.3}, tmp_path)
    assert _pick(inside, (1e-4, 3e-4, 1e-3), beyond=2)[0] == 3e-4 and inside.tried == [1e-4, 3e-4, 1e-3]


def test_pick_lr_goes_below_the_grid_while_its_smallest_rate_wins(tmp_path):
    falling = _Scored({1e-5: 0.6, 3e-5: 0.5, 1e-4: 0.4, 3e-4: 0.3, 1e-3: 0.2}, tmp_path)
    lr, scores = _pick(falling, (1e-4, 3e-4, 1e-3), beyond=2)
    assert lr == 1e-5 and falling.tried == [1e-4, 3e-4, 1e-3, 3e-5, 1e-5]  # 1e-4 / 3 -> 3e-5 (one digit)
    falling.tried.clear()
    assert _pick(falling, (1e-4, 3e-4, 1e-3), beyond=1)[0] == 3e-5 and falling.tried == [1e-4, 3e-4, 1e-3, 3e-5]
    dip = _Scored({3e-4: 0.3, 1e-3: 0.5, 3e-3: 0.4, 1e-4: 0.1}, tmp_path)  # below wins at first, then loses: stop
    assert _pick(dip, (1e-3, 3e-3), beyond=2) == (1e-3, {1e-3: 0.5, 3e-3: 0.4, 3e-4: 0.3})
    tie = _Scored({1e-3: 0.5, 3e-3: 0.5, 3e-4: 0.5}, tmp_path)
    assert _pick(tie, (1e-3, 3e-3), beyond=2)[0] == 1e-3  # ties go to the rate tried first
