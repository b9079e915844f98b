"""The HyperNet forward shared by training (``hf_fuse.methods.hypernet``) and export (``export``): every
group's HyperNet run on the plan's tokens, and the patched B's it gives (``B_t + α ΔB`` on the aligned rows)."""

from __future__ import annotations

from torch import Tensor

from .network import HyperNetOutput, HyperNets
from .patching import predicted_b
from .plan_tensors import GroupTensors


def run_hypernets(hypernets: HyperNets, groups: list[GroupTensors]) -> dict[str, HyperNetOutput]:
    return {g.name: hypernets[g.name](g.target_tokens, g.target_desc, g.target_mask,
                                      g.source_tokens, g.source_desc, g.source_mask) for g in groups}


def new_b_tensors(hypernets: HyperNets, groups: list[GroupTensors], outputs: dict[str, HyperNetOutput],
                  originals: dict[str, Tensor]) -> dict[str, Tensor]:
    deltas = {g.name: g.delta_b(outputs[g.name].delta_tokens) for g in groups}
    alphas = {g.name: hypernets[g.name].alpha for g in groups}
    return predicted_b(groups, deltas, alphas, originals)
