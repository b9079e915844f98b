"""Optimiser steps taken inside the backward pass (``hf-fuse --step-in-backward``).

The paper-sized HyperNets hold 773 M parameters: their fp32 gradients alone are 3 GB, as large as the weights.
An objective whose step ends in **one** backward call through its parameters (the HyperNet's: the LM gradient is
accumulated on the patched LoRA weights, then pushed through the HyperNets once, ``hf_fuse.methods.hypernet.patching``) can update
each parameter as soon as its gradient is complete and free that gradient at once, so the whole gradient never
exists.  This is PyTorch's "optimizer step in backward" pattern (``Tensor.register_post_accumulate_grad_hook``);
PyTorch ships the hook, not a stepper that keeps global-norm clipping, hence this module.

Clipping by the global norm needs every gradient before the first update, so with clipping on the backward runs
twice over the same graph: the first pass only measures the norm (each gradient dropped once counted), the second
scales each gradient by ``torch.nn.utils.clip_grad_norm_``'s coefficient and steps.  The result is the loop's
clip-then-step, up to the order of floating-point sums in the norm; the price is a second HyperNet backward (no
second LM pass: that gradient is already on the patched weights).

One optimiser and one scheduler serve all parameters, as in the ordinary loop (a checkpoint is the same file):
``optimizer.step()`` skips parameters without a gradient, and inside a hook only the hooked one has one.
A Ctrl-C arriving during the updates is held until they are all done, so a checkpoint never holds a half-updated
model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from hf_runtime.interrupts import interrupts_watched


class BackwardStepper:
    """Runs ``torch.autograd.backward`` with the optimiser step of every parameter in its gradient hook."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], clip_norm: float):
        self.optimizer, self.params, self.clip_norm = optimizer, list(params), clip_norm
        self.grad_norm = 0.0  # of the last step, before clipping (what clip_grad_norm_ returns)
        self.interrupted = False

    def backward(self, tensors: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """Back-propagate ``grads`` from ``tensors`` and update every parameter on the way."""
        clip = math.isfinite(self.clip_norm)
        squares: list[torch.Tensor] = []
        if clip:  # pass 1: the global norm only
            self._run(tensors, grads, lambda p: squares.append(p.grad.detach().float().pow(2).sum()), retain=True)
            norm = torch.stack(squares).sum().sqrt() if squares else torch.zeros(())
            coefficient = float(torch.clamp(self.clip_norm / (norm + 1e-6), max=1.0))  # clip_grad_norm_'s rule
            self.grad_norm = float(norm)
        with interrupts_watched(hold=True) as held:
            def update(p: torch.Tensor) -> None:
                if clip:
                    if coefficient < 1.0:
                        p.grad.mul_(coefficient)
                else:
                    squares.append(p.grad.detach().float().pow(2).sum())
                self.optimizer.step()  # only ``p`` has a gradient now
            self._run(tensors, grads, update, retain=False)
        self.interrupted = self.interrupted or held.requested
        if not clip:
            self.grad_norm = float(torch.stack(squares).sum().sqrt()) if squares else 0.0

    def _run(self, tensors, grads, action, retain: bool) -> None:
        def hook(p: torch.Tensor) -> None:
            action(p)
            p.grad = None

        handles = [p.register_post_accumulate_grad_hook(hook) for p in self.params if p.requires_grad]
        try:
            torch.autograd.backward(tensors, grads, retain_graph=retain)
        finally:
            for handle in handles:
                handle.remove()
            for p in self.params:  # a failed pass leaves nothing behind for the next one
                p.grad = None

