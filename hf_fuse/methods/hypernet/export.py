"""The HyperNet's export: its networks run once more on the plan's tokens, aligned modules get ``A_t`` unchanged and
``B_t + α ΔB``; every other tensor is the target's.  Dtypes follow the target adapter.  Also what the report says of
each group's update (α, ‖ΔB‖/‖B‖, the paper's Eq. 11 bound, attention per source)."""

from __future__ import annotations

import torch
from torch import nn

from .forward import new_b_tensors, run_hypernets
from .network import HyperNets
from .plan_tensors import GroupTensors


@torch.no_grad()
def fused_tensors(hypernets: HyperNets, groups: list[GroupTensors],
                  target: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """The fused adapter's tensors and, per group, what the report says about the update."""
    was_training = hypernets.training
    hypernets.eval()
    outputs = run_hypernets(hypernets, groups)
    hypernets.train(was_training)
    device = groups[0].target_tokens.device if groups else torch.device("cpu")
    key_b = {u.module: u.key_b for g in groups for u in g.units}
    originals = {m: target[k].to(device).float() for m, k in key_b.items()}
    new_b = new_b_tensors(hypernets, groups, outputs, originals)
    fused = dict(target)
    for module, b in new_b.items():
        fused[key_b[module]] = b.to(target[key_b[module]].dtype).cpu()
    return fused, {g.name: _group_metrics(g, hypernets[g.name], outputs[g.name], target, originals) for g in groups}


def _group_metrics(group: GroupTensors, hypernet: nn.Module, output, target: dict[str, torch.Tensor],
                   originals: dict[str, torch.Tensor]) -> dict:
    alpha = float(hypernet.alpha)
    deltas = group.delta_b(output.delta_tokens)
    delta_sq = base_sq = 0.0
    bound_max = actual_max = 0.0
    per_module = []
    for unit, delta in zip(group.units, deltas):
        b_rows = originals[unit.module].index_select(0, unit.rows)
        a = target[unit.key_a].to(delta.device).float()
        unit_delta_sq, unit_base_sq = float(delta.pow(2).sum()), float(b_rows.pow(2).sum())
        delta_sq += unit_delta_sq
        base_sq += unit_base_sq
        # Eq. 11 with the LoRA scale: ||s·α·ΔB·A||_F <= s·|α|·||ΔB||_F·||A||_2
        bound = unit.scale * abs(alpha) * float(delta.norm()) * float(torch.linalg.matrix_norm(a, ord=2))
        actual = unit.scale * abs(alpha) * float(torch.linalg.matrix_norm(delta @ a))
        bound_max, actual_max = max(bound_max, bound), max(actual_max, actual)
        per_module.append({"module": unit.module, "layer": unit.layer, "eq11_bound": bound, "eq11_actual": actual,
                           "alpha_delta_b_over_b": abs(alpha) * unit_delta_sq ** 0.5 / max(unit_base_sq ** 0.5, 1e-30)})
    attention = output.attention  # (U, Tt, Ts)
    real = group.target_mask.float()
    per_source = {}
    for source in sorted(set(group.source_of_position[group.source_of_position >= 0].tolist())):
        share = (attention * (group.source_of_position == source).unsqueeze(1)).sum(-1)  # (U, Tt)
        per_source[str(source)] = float((share * real).sum() / real.sum())
    return {
        "alpha": alpha,
        "delta_b_over_b": (delta_sq ** 0.5) / max(base_sq ** 0.5, 1e-30),
        "alpha_delta_b_over_b": abs(alpha) * (delta_sq ** 0.5) / max(base_sq ** 0.5, 1e-30),
        "eq11_bound_max": bound_max,
        "eq11_actual_max": actual_max,
        "attention_per_source": per_source,
        "n_modules": len(group.units),
        "per_module": per_module,
    }
