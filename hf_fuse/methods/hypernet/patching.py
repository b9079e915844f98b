"""Dynamic patching (docs/methods/hypernet-paper.md §4): the target model runs with ``B_t + α ΔB`` in place of ``lora_B``.

The predicted B of each module is a graph tensor connected to the HyperNets.  What the
model sees is a *leaf* copy of it, swapped in for the live ``lora_B`` weight for the
whole forward **and backward** of the step's micro-batches, so gradient checkpointing
(which recomputes the forward during backward) sees the same weights and really
delivers the LM gradient.  The leaves' accumulated gradients are then pushed through
the graph tensors into the HyperNets in one backward call.  The reference code restores
the original weights before backward, which is why checkpointing either crashes or cuts
the gradient there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .plan_tensors import GroupTensors


def lora_b_linear(peft_model: nn.Module, module: str, adapter_name: str = "default") -> nn.Module:
    """The ``lora_B`` linear layer of a (normalised) module path inside a ``PeftModel``."""
    layer = peft_model.base_model.model.get_submodule(module)
    return layer.lora_B[adapter_name]


def original_b(peft_model: nn.Module, modules: set[str]) -> dict[str, Tensor]:
    """The live (frozen) lora_B weights of the given modules, as float32 tensors."""
    return {m: lora_b_linear(peft_model, m).weight.detach().float() for m in sorted(modules)}


def predicted_b(groups: list[GroupTensors], deltas: dict[str, list[Tensor]], alphas: dict[str, Tensor],
                originals: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per module, the full new B: rows of each unit replaced by ``B_t[rows] + α_g ΔB`` (graph tensors)."""
    new: dict[str, Tensor] = {}
    for group in groups:
        for unit, delta in zip(group.units, deltas[group.name]):
            base = originals[unit.module]
            rows = base.index_select(0, unit.rows) + alphas[group.name] * delta
            new[unit.module] = new.get(unit.module, base).index_copy(0, unit.rows, rows)
    return new


@contextlib.contextmanager
def patched(peft_model: nn.Module, new_b: dict[str, Tensor]) -> Iterator[dict[str, nn.Parameter]]:
    """Swap leaf copies of ``new_b`` into the model; the originals come back on exit, whatever happens."""
    saved: dict[str, nn.Parameter] = {}
    leaves: dict[str, nn.Parameter] = {}
    try:
        for module, tensor in new_b.items():
            linear = lora_b_linear(peft_model, module)
            saved[module] = linear.weight
            leaf = nn.Parameter(tensor.detach().to(linear.weight.dtype).clone(), requires_grad=True)
            linear.weight = leaf
            leaves[module] = leaf
        yield leaves
    finally:
        for module, weight in saved.items():
            lora_b_linear(peft_model, module).weight = weight


def backward_through_patch(new_b: dict[str, Tensor], leaves: dict[str, nn.Parameter], extra: Tensor | None,
                           backward=torch.autograd.backward) -> None:
    """Push the leaves' accumulated gradients (and ``extra``, a scalar loss) into the HyperNets through ``backward``
    (``torch.autograd.backward``, or a ``BackwardStepper``'s, which updates the HyperNets on the way)."""
    tensors, grads = [], []
    for module, graph in new_b.items():
        grad = leaves[module].grad
        if grad is not None and graph.requires_grad:
            tensors.append(graph)
            grads.append(grad.to(graph.dtype))
    if extra is not None and extra.requires_grad:
        tensors.append(extra)
        grads.append(torch.ones_like(extra))
    if tensors:
        backward(tensors, grads)
