"""Torch tensors of one plan group: padded token batches, masks and the gather index for ΔB.

The HyperNet's inputs never change during a run (they are the plan's tokens), so they
are built once, on the training device.  Target tokens are rebuilt from the *current*
target tensors, so that in a sequential pipeline the next task sees the fused adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hf_common.plan import Plan, PlanGroup


@dataclass
class TargetUnit:
    module: str  # normalised module path
    key_a: str
    key_b: str
    rows: torch.Tensor  # rows of the module's full B that this unit covers (int64, on device)
    scale: float
    layer: int = -1  # the target layer (the plan's target/unit_layer)


@dataclass
class GroupTensors:
    name: str
    role: str
    rank: int
    block_size: int
    units: list[TargetUnit]
    target_tokens: torch.Tensor  # (U, Tt, bs*r)
    target_desc: torch.Tensor  # (U, Tt, r)
    target_mask: torch.Tensor  # (U, Tt) bool
    source_tokens: torch.Tensor  # (U, Ts, bs*r)
    source_desc: torch.Tensor
    source_mask: torch.Tensor
    source_of_position: torch.Tensor  # (U, Ts) int64: source adapter of each context token, -1 for padding
    b_gather: torch.Tensor  # flat row indices into delta_tokens.view(-1, r): every unit's B rows, in order
    unit_d_out: list[int]

    def delta_b(self, delta_tokens: torch.Tensor) -> list[torch.Tensor]:
        """Per unit, the ``d_out × r`` update held at its B-token positions (padding dropped)."""
        flat = delta_tokens.reshape(-1, self.rank).index_select(0, self.b_gather)
        return list(torch.split(flat, self.unit_d_out))


def _padded(rows: np.ndarray, starts: np.ndarray, lengths: np.ndarray, sequences: list[list[int]], block_size: int,
            rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens ``(n_seq, max_len, bs*r)`` zero-padded in both senses, and the validity mask."""
    max_len = max((len(s) for s in sequences), default=0)
    out = np.zeros((len(sequences), max_len, block_size, rank), np.float32)
    mask = np.zeros((len(sequences), max_len), bool)
    for i, seq in enumerate(sequences):
        for j, token in enumerate(seq):
            out[i, j, : lengths[token]] = rows[starts[token]: starts[token] + lengths[token]]
            mask[i, j] = True
    return out.reshape(len(sequences), max_len, block_size * rank), mask


class _TorchTensors:
    """Torch tensors read as the plan reads its own adapters (``float32(key)``: widened exactly, on the CPU)."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    def float32(self, key: str) -> np.ndarray:
        return self.tensors[key].detach().float().cpu().numpy()


def svdvals(tokens: np.ndarray, block_size: int, rank: int) -> np.ndarray:
    flat = torch.from_numpy(tokens.reshape(-1, block_size, rank))
    return torch.linalg.svdvals(flat.double()).float().numpy().reshape(*tokens.shape[:-1], rank)


def build_group(plan: Plan, group: PlanGroup, device: torch.device,
                target_tensors: dict[str, torch.Tensor] | None = None) -> GroupTensors:
    bs, r = plan.block_size, group.rank
    a = group.array
    n_t = len(a("target/unit_d_in"))
    t_unit = a("target/token_unit")
    t_seqs = [list(np.flatnonzero(t_unit == u)) for u in range(n_t)]
    t_rows = a("target/rows") if target_tensors is None else plan.rows(group, "target", _TorchTensors(target_tensors))
    t_tokens, t_mask = _padded(t_rows, a("target/token_row_start"), a("target/token_n_rows"), t_seqs, bs, r)
    if target_tensors is None:
        t_desc = np.zeros(t_tokens.shape[:2] + (r,), np.float32)
        descriptors = a("target/descriptors")
        for i, seq in enumerate(t_seqs):
            t_desc[i, : len(seq)] = descriptors[seq]
    else:
        t_desc = svdvals(t_tokens, bs, r)

    s_unit = a("source/token_unit")
    n_s = len(a("source/unit_d_in"))
    s_tokens_of = [list(np.flatnonzero(s_unit == u)) for u in range(n_s)]
    offsets, links = a("context_offset"), a("context_source_unit")
    contexts = [[tok for su in links[offsets[u]:offsets[u + 1]] for tok in s_tokens_of[su]] for u in range(n_t)]
    s_tokens, s_mask = _padded(a("source/rows"), a("source/token_row_start"), a("source/token_n_rows"), contexts, bs, r)
    s_desc = np.zeros(s_tokens.shape[:2] + (r,), np.float32)
    source_ids = np.full(s_tokens.shape[:2], -1, np.int64)
    s_descriptors, unit_source = a("source/descriptors"), a("source/unit_source")
    for i, seq in enumerate(contexts):
        s_desc[i, : len(seq)] = s_descriptors[seq]
        source_ids[i, : len(seq)] = unit_source[s_unit[seq]]

    # B rows of unit u live in its B tokens, in order: token j of the sequence, row k -> flat (u*Tt + j)*bs + k
    is_b, n_rows = a("target/token_is_b"), a("target/token_n_rows")
    max_t = t_tokens.shape[1]
    gather = []
    for u, seq in enumerate(t_seqs):
        for j, token in enumerate(seq):
            if is_b[token]:
                gather.append((u * max_t + j) * bs + np.arange(n_rows[token]))
    d_out = a("target/unit_d_out")
    b_rows = np.split(a("target/unit_b_rows"), np.cumsum(d_out)[:-1])
    units = [TargetUnit(str(m), str(ka), str(kb), torch.from_numpy(rows).to(device), float(s), int(layer))
             for m, ka, kb, rows, s, layer in zip(a("target/unit_module"), a("target/unit_key_a"), a("target/unit_key_b"),
                                                  b_rows, a("target/unit_scale"), a("target/unit_layer"))]

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(device)

    return GroupTensors(group.name, group.role, r, bs, units, tensor(t_tokens), tensor(t_desc), tensor(t_mask),
                        tensor(s_tokens), tensor(s_desc), tensor(s_mask), tensor(source_ids),
                        tensor(np.concatenate(gather).astype(np.int64)), [int(d) for d in d_out])
