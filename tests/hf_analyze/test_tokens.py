import numpy as np
import pytest

from hf_analyze import tokens
from hf_common.normalize import unit_rows


@pytest.mark.parametrize("d_in, d_out, block", [(40, 24, 16), (32, 64, 32), (5, 7, 4096), (64, 1536, 64)])
def test_blockify_reassemble_round_trip_is_exact(d_in, d_out, block):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((4, d_in)).astype(np.float32), rng.standard_normal((d_out, 4)).astype(np.float32)
    rows = unit_rows(a, b)
    blocks = tokens.blockify(rows, d_in, d_out, block)
    assert blocks.shape == (tokens.n_blocks(d_in, block) + tokens.n_blocks(d_out, block), block, 4)
    np.testing.assert_array_equal(tokens.reassemble_b(blocks, d_in, d_out, block), b)
    np.testing.assert_array_equal(blocks[: tokens.n_blocks(d_in, block)].reshape(-1, 4)[:d_in], a.T)
    # padding is zero
    assert not blocks[tokens.n_blocks(d_in, block) - 1].reshape(-1)[(d_in % block or block) * 4:].any()


def test_descriptors_match_numpy_svd():
    rng = np.random.default_rng(2)
    d_in, d_out, block = 50, 30, 16
    rows = unit_rows(rng.standard_normal((6, d_in)).astype(np.float32),
                            rng.standard_normal((d_out, 6)).astype(np.float32) * 1e-3)
    ranges = tokens.token_ranges(d_in, d_out, block)
    got = tokens.descriptors(rows, ranges)
    expected = np.linalg.svd(tokens.blockify(rows, d_in, d_out, block), compute_uv=False)
    assert got.shape == expected.shape == (len(ranges), 6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * expected.max())


def test_auto_block_size_tiles_every_dimension():
    assert tokens.auto_block_size([576, 192, 1536]) == 192
    assert tokens.auto_block_size([4096, 1024, 14336]) == 1024
    assert tokens.auto_block_size([8192, 16384]) == 4096
    assert tokens.auto_block_size([6144, 12288]) == 3072
