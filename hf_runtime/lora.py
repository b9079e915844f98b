"""Plain LoRA training through the one loop (``hf_runtime.trainer``): the trainable (LoRA) parameters of a
``PeftModel`` and the step that trains them.  Used by ``hf-eval train-expert`` / ``replay-tune`` and by
``distill``'s LoRA student."""

from __future__ import annotations

import torch
from torch import nn

from .data import Example
from .distributed import my_share, sum_gradients, sum_value
from .trainer import StepLosses, lm_loss, micro_weights, weighted


class LoraObjective:
    """The LM loss of the examples, back-propagated into the LoRA weights (PEFT's dropout active).  A method that adds
    a term to the loss (distill's token-level distance) subclasses it and overrides :meth:`micro_loss` and
    :meth:`losses`; the loop, the seeding and the data-parallel sums stay here."""

    keep_grad_buffers = False
    parts: tuple[str, ...] = ("lm",)  # the loss terms :meth:`micro_loss` returns, summed over a step's micro-batches

    def __init__(self, peft_model: nn.Module, *, seed: int, gradient_checkpointing: bool, pad_id: int,
                 device: torch.device, loss_average: str = "micro-batch"):
        self.model, self.seed, self.gradient_checkpointing = peft_model, seed, gradient_checkpointing
        self.loss_average = loss_average
        self.pad_id, self.device = pad_id, device
        self.named = {name: p for name, p in peft_model.named_parameters() if p.requires_grad}

    def parameters(self) -> list[torch.Tensor]:
        return list(self.named.values())

    def prepare(self) -> None:
        if self.gradient_checkpointing:
            self.model.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.model.base_model.model.enable_input_require_grads()
        self.model.train()

    def micro_loss(self, batch: list[Example], micro: int, weights) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One micro-batch's loss to back-propagate (its share of the step's) and its terms, by name (``parts``)."""
        loss = weighted(lm_loss(self.model, batch, self.pad_id, self.device), micro, weights, self.loss_average)
        return loss, {"lm": loss}

    def losses(self, totals: dict[str, float]) -> StepLosses:
        """The step's record from its terms summed over micro-batches and processes."""
        return StepLosses(lm=totals["lm"])

    def step(self, step: int, batches: list[list[Example]]) -> StepLosses:
        totals = dict.fromkeys(self.parts, 0.0)
        weights = micro_weights(batches, self.loss_average)
        for micro, batch in my_share(list(enumerate(batches))):  # data parallel: this process's share
            # LoRA dropout draws its masks from the global RNG: seeding it per micro-batch of the whole stream makes
            # the masks, and so the run, the same however a step's micro-batches are shared out among processes
            torch.manual_seed(self.seed * 1_000_003 + step * len(batches) + micro)
            loss, terms = self.micro_loss(batch, micro, weights)
            loss.backward()
            for name, value in terms.items():
                totals[name] += value.item()
        sum_gradients(self.parameters())
        return self.losses({name: sum_value(value) for name, value in totals.items()})

    def step_done(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {"lora": {name: p.detach().cpu().clone() for name, p in self.named.items()}}

    def load_state_dict(self, state: dict) -> None:
        saved = state["lora"]
        if sorted(saved) != sorted(self.named):
            raise KeyError("the checkpoint's LoRA weights are not this adapter's")
        with torch.no_grad():
            for name, param in self.named.items():
                param.copy_(saved[name])
