"""Bring a source module to the target's LoRA scale and rank (DESIGN.md section 3).

Each adapter's scale ``s`` is part of its update ``s · B · A``.  A source's factors are
rescaled so that, read with the *target's* scale, they give the source's own update:
``s_t · B' A' = s_s · B A``.  The factor ``c = s_s / s_t`` is split evenly between A
and B.  A lower source rank is zero-padded (exact); a higher one is replaced by the
rank-r truncated SVD of ``c · B A`` (the best rank-r approximation, Eckart–Young),
computed through two thin QR factorisations so the full ``d_out × d_in`` matrix is
never formed.
"""

from __future__ import annotations

import numpy as np

SAME, PADDED, TRUNCATED = "same", "zero-padded", "truncated-svd"


def normalize_factors(
    a: np.ndarray, b: np.ndarray, scale_source: float, scale_target: float, rank_target: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """``(A', B', method)`` with ``A'`` of shape ``(rank_target, d_in)`` and ``B'`` ``(d_out, rank_target)``."""
    c = scale_source / scale_target
    rank = a.shape[0]
    if rank == rank_target and c == 1.0:
        return a, b, SAME  # the common case (same r and alpha): no copy
    if rank <= rank_target:
        root = np.float32(np.sqrt(c))
        a_new = np.zeros((rank_target, a.shape[1]), np.float32)
        b_new = np.zeros((b.shape[0], rank_target), np.float32)
        a_new[:rank] = a * root
        b_new[:, :rank] = b * root
        return a_new, b_new, SAME if rank == rank_target else PADDED
    q_b, r_b = np.linalg.qr(b.astype(np.float64))
    q_a, r_a = np.linalg.qr(a.T.astype(np.float64))
    u, s, vt = np.linalg.svd(c * (r_b @ r_a.T))
    root = np.sqrt(s[:rank_target])
    b_new = (q_b @ u[:, :rank_target]) * root
    a_new = (root[:, None] * vt[:rank_target]) @ q_a.T
    return a_new.astype(np.float32), b_new.astype(np.float32), TRUNCATED
