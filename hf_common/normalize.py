"""Bring a source module to the target's LoRA scale and rank (docs/methods/hypernet-paper.md §2).

Each adapter's scale ``s`` is part of its update ``s · B · A``.  A source's factors are
rescaled so that, read with the *target's* scale, they give the source's own update:
``s_t · B' A' = s_s · B A``.  The factor ``c = s_s / s_t`` is split evenly between A
and B.  A lower source rank is zero-padded (exact); a higher one is replaced by the
rank-r truncated SVD of ``c · B A`` (the best rank-r approximation, Eckart–Young),
computed through two thin QR factorisations so the full ``d_out × d_in`` matrix is
never formed.

In ``hf_common`` because both sides run it: ``hf-analyze`` to plan, and the plan reader to rebuild a unit's rows
from the adapter the plan holds (format version 2 stores only the rows it cannot rebuild: truncated-SVD units).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import AdapterFormatError

SAME, PADDED, TRUNCATED = "same", "zero-padded", "truncated-svd"


def normalize_factors(
    a: np.ndarray, b: np.ndarray, scale_source: float, scale_target: float, rank_target: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """``(A', B', method)`` with ``A'`` of shape ``(rank_target, d_in)`` and ``B'`` ``(d_out, rank_target)``."""
    c = scale_source / scale_target
    if not (math.isfinite(c) and c > 0):
        raise AdapterFormatError(f"the LoRA scale ratio {scale_source!r} / {scale_target!r} is not a positive finite number")
    rank = a.shape[0]
    if rank == rank_target and c == 1.0:
        return a, b, SAME  # the common case (same r and alpha): no copy
    if not truncates(rank, rank_target):
        return _padded(a, b, c, rank, rank_target)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked right after, and refused
        return _truncated(a, b, c, rank_target)


def truncates(rank: int, rank_target: int) -> bool:
    """Whether a source of ``rank`` is brought to ``rank_target`` by a truncated SVD (else exactly, by padding)."""
    return rank > rank_target


def _padded(a: np.ndarray, b: np.ndarray, c: float, rank: int, rank_target: int) -> tuple[np.ndarray, np.ndarray, str]:
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked right after, and refused
        root = np.float32(np.sqrt(c))
        a_new = np.zeros((rank_target, a.shape[1]), np.float32)
        b_new = np.zeros((b.shape[0], rank_target), np.float32)
        a_new[:rank] = a * root
        b_new[:, :rank] = b * root
    _check_finite(a_new, b_new, c)
    return a_new, b_new, SAME if rank == rank_target else PADDED


def _truncated(a: np.ndarray, b: np.ndarray, c: float, rank_target: int) -> tuple[np.ndarray, np.ndarray, str]:
    q_b, r_b = np.linalg.qr(b.astype(np.float64))
    q_a, r_a = np.linalg.qr(a.T.astype(np.float64))
    core = c * (r_b @ r_a.T)
    if not np.isfinite(core).all():  # the SVD must never see a non-finite number
        raise AdapterFormatError(f"the source update overflows once scaled by {c:.3g} (lora_alpha / r of the two adapters)")
    u, s, vt = np.linalg.svd(core)
    root = np.sqrt(s[:rank_target])
    b_new = (q_b @ u[:, :rank_target]) * root
    a_new = (root[:, None] * vt[:rank_target]) @ q_a.T
    a_new, b_new = a_new.astype(np.float32), b_new.astype(np.float32)
    _check_finite(a_new, b_new, c)
    return a_new, b_new, TRUNCATED


def _check_finite(a: np.ndarray, b: np.ndarray, c: float) -> None:
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise AdapterFormatError(f"the source factors overflow float32 once scaled by {c:.3g} (lora_alpha / r of the two "
                                 "adapters)")


def unit_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rows ``[Aᵀ; B]`` of one unit, float32, shape ``(d_in + d_out, r)``."""
    return np.concatenate([a.T, b], axis=0).astype(np.float32, copy=False)


def rebuild_rows(files: dict, which, keys_a, keys_b, b_rows, d_out, offsets, stored: np.ndarray, rank: int,
                 methods=None, ratios=None) -> np.ndarray:
    """One side's rows of a plan group, from the adapters' safetensors ``files`` (unit ``u`` reads file
    ``which[u]``): the same float32 reading, the unit's B rows and, for a source (``ratios`` given), the same
    rescaling and zero-padding hf-analyze applied; units whose method is a truncated SVD take the ``stored`` rows,
    in order."""
    out = np.empty((int(offsets[-1]), rank), np.float32)
    b_rows = np.split(b_rows, np.cumsum(d_out)[:-1])
    used = 0
    for u, (key_a, key_b) in enumerate(zip(keys_a, keys_b)):
        start, stop = int(offsets[u]), int(offsets[u + 1])
        if methods is not None and methods[u] == TRUNCATED:
            out[start:stop] = stored[used:used + stop - start]
            used += stop - start
            continue
        file = files[int(which[u])]
        a, b = file.float32(str(key_a)), file.float32(str(key_b))[b_rows[u]]
        if ratios is not None:
            a, b, _ = normalize_factors(a, b, float(ratios[u]), 1.0, rank)
        out[start:stop] = unit_rows(a, b)
    if used != len(stored):
        raise ValueError(f"{len(stored)} rows stored, {used} used")
    return out
