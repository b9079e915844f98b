"""Export (docs/method.md §5): run the HyperNets once more and write one PEFT adapter, atomically.

Aligned modules get ``A_t`` unchanged and ``B_t + α ΔB``; every other tensor and the
adapter config are the target's.  Dtypes follow the target adapter.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from hf_common.atomic import atomic_folder
from hf_runtime.model import write_adapter_folder

from .forward import new_b_tensors, run_hypernets
from .hypernet import HyperNets
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


def write_adapter(out_dir: Path, config: dict, tensors: dict[str, torch.Tensor], *, force: bool,
                  extra_files: dict[str, dict] | None = None, extra_texts: dict[str, str] | None = None,
                  extra_bytes: dict[str, bytes] | None = None) -> None:
    """Write the adapter folder to a temporary name, then rename it into place."""
    with atomic_folder(out_dir, force=force) as tmp:
        write_adapter_folder(tmp, config, tensors)
        for name, payload in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(payload, indent=2) + "\n")
        for name, text in (extra_texts or {}).items():
            (tmp / name).write_text(text)
        for name, data in (extra_bytes or {}).items():
            (tmp / name).write_bytes(data)
