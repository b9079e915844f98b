"""Plain LoRA training through the one loop (``hf_runtime.trainer``): the trainable (LoRA) parameters of a
``PeftModel`` and the step that trains them.  Used by ``hf-eval train-expert`` / ``replay-tune`` and by
``distill``'s LoRA student."""

from __future__ import annotations

import torch
from torch import nn

from .data import Example
from .distributed import my_share, sum_gradients, sum_value
from .token_distill import token_loss
from .trainer import StepLosses, answer_logits, answer_loss, lm_loss, micro_weights, weighted


class LoraObjective:
    """The LM loss of the examples, back-propagated into the LoRA weights (PEFT's dropout active); with
    ``token_loss_weight``, plus that weight times the token-level distance to a teacher's distributions on the
    examples that carry one (``hf_runtime.token_distill``)."""

    keep_grad_buffers = False

    def __init__(self, peft_model: nn.Module, *, seed: int, gradient_checkpointing: bool, pad_id: int,
                 device: torch.device, loss_average: str = "micro-batch", token_loss_weight: float = 0.0):
        self.model, self.seed, self.gradient_checkpointing = peft_model, seed, gradient_checkpointing
        self.token_loss_weight = token_loss_weight
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

    def step(self, step: int, batches: list[list[Example]]) -> StepLosses:
        total = token_total = 0.0
        weights = micro_weights(batches, self.loss_average)
        for micro, batch in my_share(list(enumerate(batches))):  # data parallel: this process's share
            # LoRA dropout draws its masks from the global RNG: seeding it per micro-batch of the whole stream makes
            # the masks, and so the run, the same however a step's micro-batches are shared out among processes
            torch.manual_seed(self.seed * 1_000_003 + step * len(batches) + micro)
            if self.token_loss_weight:
                logits, targets, keep = answer_logits(self.model, batch, self.pad_id, self.device)
                distance, _ = token_loss(logits, [e.teacher for e in batch], keep)
                lm = weighted(answer_loss(logits, targets), micro, weights, self.loss_average)
                token = weighted(distance, micro, weights, self.loss_average)
                (lm + self.token_loss_weight * token).backward()
                total, token_total = total + lm.item(), token_total + token.item()
            else:
                loss = weighted(lm_loss(self.model, batch, self.pad_id, self.device), micro, weights, self.loss_average)
                loss.backward()
                total += loss.item()
        sum_gradients(self.parameters())
        # the fields of the HyperNet's step records (no α), so reports and progress bars read both alike
        if not self.token_loss_weight:
            return StepLosses(lm=sum_value(total), record={"alpha": {}})
        lm, token = sum_value(total), sum_value(token_total)
        return StepLosses(lm=lm, extra={"token": token}, total=lm + self.token_loss_weight * token,
                          record={"alpha": {}})

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
