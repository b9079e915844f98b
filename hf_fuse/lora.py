"""Plain LoRA training: the LoRA parameters of a ``PeftModel`` trained on examples with the same schedule
machinery as the HyperNet (same seeded micro-batch stream, AdamW, cosine schedule with warm-up, clipping).

Used by the baselines (``hf-eval train-expert`` / ``replay-tune``) and by ``distill``'s LoRA student.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch

from .data import Example
from .distributed import broadcast, my_share, sum_gradients, sum_value
from .train import TrainingDiverged, TrainSettings, lm_loss, micro_batches, schedule_length

logger = logging.getLogger(__name__)


def train_lora(peft_model, examples: list[Example], pad_id: int, settings: TrainSettings, device: torch.device,
               on_step: Callable[[dict, int], None] | None = None) -> list[dict]:
    """Train the trainable (LoRA) parameters of ``peft_model``; returns the loss history."""
    from transformers import get_cosine_schedule_with_warmup

    micro_per_epoch, total = schedule_length(len(examples), settings)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay,
                                  fused=device.type in ("cpu", "cuda"))
    scheduler = get_cosine_schedule_with_warmup(optimizer, settings.warmup_steps(total), max(total, 1))
    if settings.gradient_checkpointing:
        peft_model.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model.base_model.model.enable_input_require_grads()
    broadcast(params)
    peft_model.train()
    history = []
    for step in range(total):
        started = time.perf_counter()
        batches = micro_batches(step, examples, settings, micro_per_epoch)
        total_loss = 0.0
        for micro, batch in my_share(list(enumerate(batches))):  # data parallel: this process's share
            # LoRA dropout draws its masks from the global RNG: seeding it per micro-batch of the whole stream makes
            # the masks, and so the run, the same however a step's micro-batches are shared out among processes
            torch.manual_seed(settings.seed * 1_000_003 + step * len(batches) + micro)
            loss = lm_loss(peft_model, batch, pad_id, device) / len(batches)
            loss.backward()
            total_loss += loss.item()
        sum_gradients(params)
        total_loss = sum_value(total_loss)
        if not math.isfinite(total_loss):
            raise TrainingDiverged(f"non-finite loss at step {step + 1} ({total_loss}); nothing was written")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.clip_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        # the fields of hf-fuse's step records (no RDM term, no α), so reports and progress bars read both alike
        history.append({"step": step + 1, "loss": total_loss, "lm": total_loss, "rdm": 0.0, "lr": scheduler.get_last_lr()[0],
                        "grad_norm": float(grad_norm), "time_s": time.perf_counter() - started, "alpha": {}})
        logger.info("step %d/%d loss %.4f", step + 1, total, total_loss)
        if on_step:
            on_step(history[-1], total)
    peft_model.eval()
    return history
