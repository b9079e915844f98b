"""The optimisation loop (DESIGN.md 2.4): dynamic patching, LM loss plus RDM, AdamW with a cosine schedule.

The HyperNets' inputs are the plan's tokens, which do not change between micro-batches,
and their parameters change only at optimiser steps.  So each optimiser step runs the
HyperNets **once**, patches the predicted B's in, runs all its micro-batches through the
patched model (accumulating the LM gradient on the patched weights), and back-propagates
that gradient through the HyperNets once.  The gradient is the same as running the
HyperNets for every micro-batch; the HyperNet cost is divided by the accumulation steps.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from hf_common.errors import ConfigError, HFError, InputError, one_line

from .data import Example, collate
from .distributed import broadcast, my_share, processes, sum_gradients, sum_value
from .hypernet import HyperNetOutput, HyperNets
from .patching import backward_through_patch, original_b, patched, predicted_b
from .plan_tensors import GroupTensors
from .rdm import rdm_loss

logger = logging.getLogger(__name__)
ABLATIONS = ("denoise", "rdm")


class TrainingDiverged(HFError, ArithmeticError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainSettings:
    epochs: float = 3.0
    max_steps: int | None = None  # optimiser steps; 0 = export without training
    batch_size: int = 1
    grad_accum: int = 8
    lr: float = 5e-5
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0: no clipping
    warmup_rounding: str = "up"  # warm-up steps = ceil (up) or floor (down) of warmup_ratio x steps
    reset_alpha: bool = False  # a sequential pipeline starts every task's alpha at alpha_init again
    lambda_reg: float = 0.005
    mu_target: float = 0.0
    sigma: float = 1.0
    n_proj: int = 2048
    ablate: tuple[str, ...] = ()
    seed: int = 0
    gradient_checkpointing: bool = True
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        checks = [("--epochs", self.epochs > 0), ("--batch-size", self.batch_size >= 1), ("--grad-accum", self.grad_accum >= 1),
                  ("--lr", self.lr > 0), ("--warmup-ratio", 0 <= self.warmup_ratio < 1), ("--lambda-reg", self.lambda_reg >= 0),
                  ("--n-proj", self.n_proj >= 1), ("--checkpoint-every", self.checkpoint_every >= 1),
                  ("--max-steps", self.max_steps is None or self.max_steps >= 0), ("--sigma", self.sigma > 0),
                  ("--mu-target", math.isfinite(self.mu_target)), ("--max-grad-norm", self.max_grad_norm >= 0),
                  ("--warmup-rounding", self.warmup_rounding in ("up", "down")),
                  ("--weight-decay", self.weight_decay >= 0)]
        for flag, ok in checks:
            if not ok:
                raise ConfigError(f"{flag} is out of range (got {getattr(self, flag[2:].replace('-', '_'))})")
        for name in self.ablate:
            if name not in ABLATIONS:
                raise ConfigError(f"--ablate must be one of {', '.join(ABLATIONS)}, got {name!r}")

    def warmup_steps(self, total_steps: int) -> int:
        rounding = math.ceil if self.warmup_rounding == "up" else math.floor
        return rounding(self.warmup_ratio * total_steps)

    @property
    def clip_norm(self) -> float:
        """The clipping threshold; infinite (norm still measured, nothing clipped) when clipping is off."""
        return self.max_grad_norm if self.max_grad_norm > 0 else math.inf

    @property
    def use_rdm(self) -> bool:
        return self.lambda_reg > 0 and not {"rdm", "denoise"} & set(self.ablate)


@dataclass
class TrainState:
    step: int = 0
    history: list[dict] = field(default_factory=list)


def schedule_length(n_examples: int, settings: TrainSettings) -> tuple[int, int]:
    """``(micro-batches per epoch, optimiser steps)`` of a run."""
    if n_examples == 0:
        raise InputError("the replay set is empty after formatting (every example was cut away)")
    micro_per_epoch = math.ceil(n_examples / settings.batch_size)
    if settings.max_steps is not None:
        return micro_per_epoch, settings.max_steps
    return micro_per_epoch, math.ceil(math.ceil(settings.epochs * micro_per_epoch) / settings.grad_accum)


def micro_batches(step: int, examples: list[Example], settings: TrainSettings, micro_per_epoch: int) -> list[list[Example]]:
    """The micro-batches of optimiser step ``step``: a continuous, seeded, per-epoch shuffled stream."""
    batches = []
    for micro in range(step * settings.grad_accum, (step + 1) * settings.grad_accum):
        epoch, index = divmod(micro, micro_per_epoch)
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(settings.seed * 100_003 + epoch))
        chosen = order[index * settings.batch_size:(index + 1) * settings.batch_size]
        batches.append([examples[i] for i in chosen.tolist()])
    return batches


def run_hypernets(hypernets: HyperNets, groups: list[GroupTensors]) -> dict[str, HyperNetOutput]:
    return {g.name: hypernets[g.name](g.target_tokens, g.target_desc, g.target_mask,
                                      g.source_tokens, g.source_desc, g.source_mask) for g in groups}


def new_b_tensors(hypernets: HyperNets, groups: list[GroupTensors], outputs: dict[str, HyperNetOutput],
                  originals: dict[str, Tensor]) -> dict[str, Tensor]:
    deltas = {g.name: g.delta_b(outputs[g.name].delta_tokens) for g in groups}
    alphas = {g.name: hypernets[g.name].alpha for g in groups}
    return predicted_b(groups, deltas, alphas, originals)


def rdm_term(outputs: dict[str, HyperNetOutput], settings: TrainSettings, generator: torch.Generator) -> Tensor | None:
    if not settings.use_rdm:
        return None
    terms = [rdm_loss(o.z_target, mu_target=settings.mu_target, sigma=settings.sigma, n_proj=settings.n_proj,
                      generator=generator)
             + rdm_loss(o.z_source, mu_target=settings.mu_target, sigma=settings.sigma, n_proj=settings.n_proj,
                        generator=generator) for o in outputs.values()]
    return torch.stack(terms).mean()


def prepare_model(peft_model: nn.Module, settings: TrainSettings) -> None:
    """Train mode (so checkpointing is really active) with every dropout off, as the reference's eval mode."""
    if settings.gradient_checkpointing:
        peft_model.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model.base_model.model.config.use_cache = False
    peft_model.train()
    for module in peft_model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()


def lm_loss(peft_model: nn.Module, batch: list[Example], pad_id: int, device: torch.device) -> Tensor:
    inputs = {k: v.to(device) for k, v in collate(batch, pad_id).items()}
    return peft_model(**inputs).loss


class Checkpointer:
    """One resumable checkpoint file per task, written atomically."""

    def __init__(self, folder: Path, fingerprint: dict):
        self.folder, self.fingerprint = folder, fingerprint

    def path(self, task: int) -> Path:
        return self.folder / f"task{task}.pt"

    def save(self, task: int, state: TrainState, hypernets: nn.Module, optimizer, scheduler, generator) -> None:
        if not processes().is_main:  # every process holds the same state; one writes it
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path(task).with_suffix(".tmp")
        torch.save({"fingerprint": self.fingerprint, "state": asdict(state), "hypernets": hypernets.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rdm_rng": generator.get_state()}, tmp)
        os.replace(tmp, self.path(task))
        logger.info("checkpoint written at step %d: %s", state.step, self.path(task))

    def load(self, task: int) -> dict | None:
        if not self.path(task).exists():
            return None
        try:  # weights_only: tensors, numbers, strings and containers only; a pickle that would run code is refused
            data = torch.load(self.path(task), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a truncated, foreign or hostile file
            raise InputError(f"not a checkpoint this tool can load safely ({type(exc).__name__}: {one_line(exc, 200)})",
                             self.path(task)) from None
        if not isinstance(data, dict) or not {"fingerprint", "state", "hypernets", "optimizer", "scheduler",
                                               "rdm_rng"} <= set(data):
            raise InputError("not an hf-fuse checkpoint (entries missing)", self.path(task))
        if data["fingerprint"] != self.fingerprint:
            raise InputError("checkpoint was made with other plans or settings; remove it or drop --resume",
                             self.path(task))
        return data


def train(peft_model: nn.Module, examples: list[Example], pad_id: int, groups: list[GroupTensors],
          hypernets: HyperNets, settings: TrainSettings, device: torch.device, checkpointer: Checkpointer,
          task: int = 0, resume: bool = False, on_step: Callable[[dict, int], None] | None = None) -> TrainState:
    """Optimise the HyperNets and α's of ``groups``; base model and target LoRA stay frozen."""
    from transformers import get_cosine_schedule_with_warmup

    micro_per_epoch, total_steps = schedule_length(len(examples), settings)
    params = [p for name in (g.name for g in groups) for p in hypernets[name].parameters()]
    # fused: one pass over parameters, gradients and moments (15x faster than foreach for 773 M parameters on CPU)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay,
                                  fused=device.type in ("cpu", "cuda"))
    scheduler = get_cosine_schedule_with_warmup(optimizer, settings.warmup_steps(total_steps), max(total_steps, 1))
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    state = TrainState()
    saved = checkpointer.load(task) if resume else None
    if saved:
        try:
            hypernets.load_state_dict(saved["hypernets"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            generator.set_state(saved["rdm_rng"])
            state = TrainState(**saved["state"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:  # wrong shapes, types or entries
            raise InputError(f"the checkpoint does not fit this run ({type(exc).__name__}: {one_line(exc, 200)}); remove it or "
                             "drop --resume", checkpointer.path(task)) from None
        logger.info("resumed task %d at step %d", task, state.step)
    broadcast(params)
    prepare_model(peft_model, settings)
    rng_after_last_step = generator.get_state()
    originals = original_b(peft_model, {u.module for g in groups for u in g.units})
    try:
        while state.step < total_steps:
            step_started = time.perf_counter()
            outputs = run_hypernets(hypernets, groups)
            new_b = new_b_tensors(hypernets, groups, outputs, originals)
            batches = micro_batches(state.step, examples, settings, micro_per_epoch)
            lm_started = time.perf_counter()
            lm_total = 0.0
            with patched(peft_model, new_b) as leaves:
                for batch in my_share(batches):  # all of them in a one-process run
                    loss = lm_loss(peft_model, batch, pad_id, device) / len(batches)
                    loss.backward()
                    lm_total += loss.item()
            sum_gradients(list(leaves.values()))  # data parallel: the whole step's LM gradient in every process
            lm_total = sum_value(lm_total)
            update_started = time.perf_counter()
            reg = rdm_term(outputs, settings, generator)
            reg_value = float(reg.detach()) if reg is not None else 0.0
            if not (math.isfinite(lm_total) and math.isfinite(reg_value)):
                raise TrainingDiverged(f"non-finite loss at step {state.step + 1} (LM {lm_total}, RDM {reg_value}); "
                                       f"the last good checkpoint is kept in {checkpointer.folder}")
            backward_through_patch(new_b, leaves, settings.lambda_reg * reg if reg is not None else None)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.clip_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=False)  # keep the (large) gradient buffers: no re-allocation per step
            state.step += 1
            rng_after_last_step = generator.get_state()
            record = {"step": state.step, "loss": lm_total + settings.lambda_reg * reg_value, "lm": lm_total,
                      "rdm": reg_value, "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                      "time_s": time.perf_counter() - step_started,
                      "time_split_s": {"hypernets": lm_started - step_started, "lm": update_started - lm_started,
                                       "update": time.perf_counter() - update_started},
                      "alpha": {g.name: float(hypernets[g.name].alpha.detach()) for g in groups}}
            state.history.append(record)
            logger.info("task %d step %d/%d loss %.4f lm %.4f rdm %.4f lr %.2e", task, state.step, total_steps,
                        record["loss"], lm_total, reg_value, record["lr"])
            if on_step:
                on_step(record, total_steps)
            if state.step % settings.checkpoint_every == 0 and state.step < total_steps:
                checkpointer.save(task, state, hypernets, optimizer, scheduler, generator)
    except KeyboardInterrupt:  # keep the last completed step, so --resume continues exactly
        optimizer.zero_grad(set_to_none=True)
        generator.set_state(rng_after_last_step)
        checkpointer.save(task, state, hypernets, optimizer, scheduler, generator)
        raise
    return state  # no final checkpoint: the export follows at once (and at paper sizes it would be ~9 GB)

