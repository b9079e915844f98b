"""Block tokens of LoRA factors (docs/methods/hypernet-paper.md §1).

A module's context is ``[blocks(Aᵀ); blocks(B)]``: ``Aᵀ`` (d_in × r) and ``B``
(d_out × r) are cut row-wise into blocks of ``block_size`` rows, the last block of
each zero-padded.  The plan stores the unpadded rows ``[Aᵀ; B]`` of each unit and the
row range of every token, so padding costs nothing on disk; ``blockify`` builds the
padded tokens and ``reassemble_b`` inverts it for the B part.
"""

from __future__ import annotations

import math
from functools import reduce

import numpy as np

MAX_AUTO_BLOCK = 4096


def n_blocks(rows: int, block_size: int) -> int:
    return math.ceil(rows / block_size)


def token_ranges(d_in: int, d_out: int, block_size: int) -> list[tuple[int, int, bool]]:
    """``(first_row, n_rows, is_b)`` of each token within a unit's ``[Aᵀ; B]`` rows."""
    ranges = []
    for offset, length, is_b in ((0, d_in, False), (d_in, d_out, True)):
        for start in range(0, length, block_size):
            ranges.append((offset + start, min(block_size, length - start), is_b))
    return ranges


def auto_block_size(dimensions: list[int]) -> int:
    """The largest block size that tiles every given dimension without padding (capped at 4096)."""
    size = reduce(math.gcd, dimensions, 0) or MAX_AUTO_BLOCK
    while size > MAX_AUTO_BLOCK:  # keep it a divisor of all dimensions
        divisor = next(p for p in range(2, size + 1) if size % p == 0)
        size //= divisor
    return size


def blockify(rows: np.ndarray, d_in: int, d_out: int, block_size: int) -> np.ndarray:
    """Padded tokens ``(n_tokens, block_size, r)`` of one unit."""
    ranges = token_ranges(d_in, d_out, block_size)
    tokens = np.zeros((len(ranges), block_size, rows.shape[1]), rows.dtype)
    for i, (start, length, _) in enumerate(ranges):
        tokens[i, :length] = rows[start:start + length]
    return tokens


def reassemble_b(tokens: np.ndarray, d_in: int, d_out: int, block_size: int) -> np.ndarray:
    """The ``d_out × r`` matrix held by a unit's B tokens (padding dropped)."""
    first_b = n_blocks(d_in, block_size)
    flat = tokens[first_b:first_b + n_blocks(d_out, block_size)].reshape(-1, tokens.shape[-1])
    return flat[:d_out]


def descriptors(rows: np.ndarray, ranges: list[tuple[int, int, bool]]) -> np.ndarray:
    """Singular values (descending) of each token, ``(n_tokens, r)`` float32.

    Computed from each token's ``r × r`` Gram matrix in float64: the padding rows are
    zero so they do not change the singular values, and this is far cheaper than an
    SVD of the ``block_size × r`` token while accurate to ~1e-8 of the largest value.
    """
    r = rows.shape[1]
    grams = np.empty((len(ranges), r, r))
    for i, (start, length, _) in enumerate(ranges):
        block = rows[start:start + length].astype(np.float64)
        grams[i] = block.T @ block
    eigen = np.linalg.eigvalsh(grams)[:, ::-1]
    return np.sqrt(np.clip(eigen, 0.0, None)).astype(np.float32)
