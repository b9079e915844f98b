"""Comparing runs honestly: seed spread and paired bootstrap intervals over held-out examples.

A run's score on a task is the micro F1 over its examples, computed from each example's
``(n_pred, n_gold, n_correct)`` (as ``hf_eval.scoring`` does).  Two sets of runs (say fusion and
replay-tune, each over several seeds) are compared on the *same* held-out examples, so the
bootstrap resamples examples once per draw and scores every run on that one resample (paired);
the statistic is the difference of the seed means.  The macro difference resamples each task
independently and averages the per-task differences.  Percentile intervals from
``scipy.stats.bootstrap``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

Counts = Sequence[tuple[int, int, int]]  # per example: (n_pred, n_gold, n_correct)


def f1_of_counts(summed: np.ndarray) -> np.ndarray:
    """Micro F1 from counts summed over examples (last axis: n_pred, n_gold, n_correct); 0 where undefined."""
    pred, gold, correct = (summed[..., i].astype(np.float64) for i in range(3))
    precision = np.divide(correct, pred, out=np.zeros_like(correct), where=pred > 0)
    recall = np.divide(correct, gold, out=np.zeros_like(correct), where=gold > 0)
    total = precision + recall
    return np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)


def _mean_f1(runs: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Mean over runs (axis 0 of ``runs``: runs x examples x 3) of the F1 on the examples ``index`` (... x n)."""
    return f1_of_counts(runs[:, index, :].sum(axis=-2)).mean(axis=0)


def _as_runs(runs: Sequence[Counts]) -> np.ndarray:
    array = np.asarray(runs, dtype=np.int64)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError("runs must be a list of per-example (n_pred, n_gold, n_correct) lists of one length")
    return array


def paired_difference(a: dict[str, Sequence[Counts]], b: dict[str, Sequence[Counts]], *, n_resamples: int = 2000,
                      confidence: float = 0.95, seed: int = 0) -> dict[str, dict]:
    """Mean-over-seeds F1 of ``a`` minus that of ``b``, per task and macro, each with a bootstrap interval.

    ``a[task]`` and ``b[task]`` hold one per-example count list per run (seed), all over the same examples
    in the same order.  Returns ``{task or "macro": {"diff", "low", "high"}}`` (fractions of 1)."""
    from scipy.stats import bootstrap

    tasks = sorted(a)
    if sorted(b) != tasks:
        raise ValueError("both sides need the same tasks")
    arrays = {t: (_as_runs(a[t]), _as_runs(b[t])) for t in tasks}
    for t, (x, y) in arrays.items():
        if x.shape[1] != y.shape[1]:
            raise ValueError(f"task {t}: {x.shape[1]} examples on one side, {y.shape[1]} on the other")

    def diff(task: str, index: np.ndarray) -> np.ndarray:
        x, y = arrays[task]
        return _mean_f1(x, index) - _mean_f1(y, index)

    def interval(statistic, samples) -> tuple[float, float]:
        result = bootstrap(samples, statistic, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                           vectorized=True, paired=False, random_state=np.random.default_rng(seed))
        return float(result.confidence_interval.low), float(result.confidence_interval.high)

    out = {}
    for task in tasks:
        n = arrays[task][0].shape[1]
        full = np.arange(n)
        low, high = interval(lambda index, axis=-1, task=task: diff(task, index), (full,))
        out[task] = {"diff": float(diff(task, full)), "low": low, "high": high}

    def macro(*indices, axis=-1):
        return np.mean([diff(task, index) for task, index in zip(tasks, indices)], axis=0)

    low, high = interval(macro, tuple(np.arange(arrays[t][0].shape[1]) for t in tasks))
    out["macro"] = {"diff": float(np.mean([out[t]["diff"] for t in tasks])), "low": low, "high": high}
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
