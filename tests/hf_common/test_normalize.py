import numpy as np
import pytest

from hf_common.normalize import PADDED, SAME, TRUNCATED, normalize_factors

RNG = np.random.default_rng(0)


def _factors(rank, d_in=40, d_out=24):
    return RNG.standard_normal((rank, d_in)).astype(np.float32), RNG.standard_normal((d_out, rank)).astype(np.float32)


@pytest.mark.parametrize("rank, method", [(4, SAME), (2, PADDED)])
def test_same_or_lower_rank_reproduces_the_source_update_exactly(rank, method):
    a, b = _factors(rank)
    s_source, s_target = 16 / rank, 8 / 4
    a_n, b_n, used = normalize_factors(a, b, s_source, s_target, 4)
    assert used == method and a_n.shape == (4, 40) and b_n.shape == (24, 4)
    np.testing.assert_allclose(s_target * b_n @ a_n, s_source * b @ a, rtol=1e-5, atol=1e-5)
    if method == PADDED:
        assert not a_n[rank:].any() and not b_n[:, rank:].any()


def test_equal_scales_and_ranks_leave_factors_untouched():
    a, b = _factors(4)
    a_n, b_n, _ = normalize_factors(a, b, 2.0, 2.0, 4)
    np.testing.assert_array_equal(a_n, a)
    np.testing.assert_array_equal(b_n, b)


def test_higher_rank_is_the_best_rank_r_approximation():
    a, b = _factors(8)
    s_source, s_target = 2.0, 0.5
    a_n, b_n, used = normalize_factors(a, b, s_source, s_target, 3)
    assert used == TRUNCATED and a_n.shape == (3, 40) and b_n.shape == (24, 3)
    full = s_source * b.astype(np.float64) @ a
    u, s, vt = np.linalg.svd(full)
    best = (u[:, :3] * s[:3]) @ vt[:3]
    np.testing.assert_allclose(s_target * b_n @ a_n, best, rtol=1e-4, atol=1e-4)
    # Eckart-Young: the error is exactly the energy of the dropped singular values
    error = np.linalg.norm(s_target * b_n.astype(np.float64) @ a_n - full)
    assert error == pytest.approx(np.sqrt((s[3:] ** 2).sum()), rel=1e-4)


@pytest.mark.parametrize("rank_target", [4, 2])  # padded path and truncated-SVD path
def test_scales_that_overflow_are_refused_before_any_svd(rank_target):
    from hf_common.errors import AdapterFormatError

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 16)).astype(np.float32), rng.standard_normal((24, 4)).astype(np.float32)
    with pytest.raises(AdapterFormatError, match="overflow"):
        normalize_factors(a, b, 1e80, 1.0, rank_target)  # finite, but sqrt(1e80) x A overflows float32
    with pytest.raises(AdapterFormatError, match="not a positive finite number"):
        normalize_factors(a, b, float("inf"), 1.0, rank_target)
