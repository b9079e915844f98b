import numpy as np
import pytest

from hf_eval.compare import f1_of_counts, mean_std, paired_difference

# Two held-out examples with one gold item each.  Run A gets the first right and predicts nothing on the
# second; run B predicts nothing.  A bootstrap resample of the two examples is {0,0} (p 1/4: A's F1 is 1),
# {0,1} (p 1/2: P 1, R 1/2, F1 2/3) or {1,1} (p 1/4: F1 0); B's F1 is always 0.  So the difference is
# 2/3 on the full sample and its bootstrap distribution is 0 / 2/3 / 1 with probabilities 1/4, 1/2, 1/4:
# the 95 % percentile interval is [0, 1] and the 40 % one (30th to 70th percentile) is [2/3, 2/3].
A = [[(1, 1, 1), (0, 1, 0)]]
B = [[(0, 1, 0), (0, 1, 0)]]


def test_hand_worked_interval():
    wide = paired_difference({"t": A}, {"t": B}, n_resamples=4000)
    assert wide["t"] == pytest.approx({"diff": 2 / 3, "low": 0.0, "high": 1.0})
    narrow = paired_difference({"t": A}, {"t": B}, n_resamples=4000, confidence=0.4)
    assert narrow["t"]["low"] == pytest.approx(2 / 3) and narrow["t"]["high"] == pytest.approx(2 / 3)


def test_identical_runs_give_a_zero_interval_and_the_macro_averages_tasks():
    same = [[(2, 2, 1), (1, 1, 1), (0, 2, 0)]]
    result = paired_difference({"t": A, "u": same}, {"t": B, "u": same}, n_resamples=2000)
    assert result["u"] == {"diff": 0.0, "low": 0.0, "high": 0.0}
    assert result["macro"]["diff"] == pytest.approx((2 / 3 + 0) / 2)
    assert 0.0 <= result["macro"]["low"] <= result["macro"]["diff"] <= result["macro"]["high"] <= 0.5


def test_several_seeds_compare_their_means():
    perfect, empty = [(1, 1, 1), (1, 1, 1)], [(0, 1, 0), (0, 1, 0)]
    result = paired_difference({"t": [perfect, empty]}, {"t": [empty, empty]})  # seed mean: (1 + 0) / 2
    assert result["t"] == pytest.approx({"diff": 0.5, "low": 0.5, "high": 0.5})


def test_mismatched_examples_are_refused():
    with pytest.raises(ValueError, match="examples"):
        paired_difference({"t": A}, {"t": [[(1, 1, 1)]]})
    with pytest.raises(ValueError, match="same tasks"):
        paired_difference({"t": A}, {"u": B})


def test_f1_of_counts_and_mean_std():
    assert f1_of_counts(np.array([4, 2, 2])) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert f1_of_counts(np.array([0, 3, 0])) == 0.0
    assert mean_std([0.2, 0.4]) == pytest.approx((0.3, 0.1414213), rel=1e-5)
    assert mean_std([0.7]) == (0.7, 0.0)
