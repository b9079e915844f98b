"""The one training loop.  Every trainable method and baseline runs through :func:`train`: the HyperNet (and
through it distill's HyperNet student and project-hypernet), distill's LoRA student, ``hf-eval replay-tune`` and
``hf-eval train-expert``.

The loop owns what they share: the seeded stream of micro-batches, AdamW, the cosine schedule with warm-up,
clipping, the divergence check, the step history, checkpoints every ``checkpoint_every`` steps and on Ctrl-C,
and ``--resume`` (weights-only loading: a checkpoint that would run code is refused).  What is trained and how a
step's loss is computed is an :class:`Objective`'s: it runs forward and backward over the micro-batches of one
optimiser step, leaves the summed gradient on its parameters, and reports the step's losses.

Data parallel (``hf_runtime.distributed``): the micro-batches of a step form one global stream; each process
takes its contiguous share and the objective sums the gradients over processes, so a checkpoint made with N
processes resumes with any other number.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from hf_common.atomic import atomic_file_path
from hf_common.errors import ConfigError, HFError, InputError, one_line

from .backward_step import BackwardStepper
from .data import IGNORE_INDEX, Example, collate
from .distributed import broadcast, processes, sum_value
from .interrupts import interrupts_watched
from .settings import OPTIMIZERS, TrainSettings  # noqa: F401  (TrainSettings: imported from here by callers)

logger = logging.getLogger(__name__)


class TrainingDiverged(HFError, ArithmeticError):
    """The loss became NaN or infinite."""




def make_optimizer(params: list[torch.Tensor], settings: TrainSettings, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (fused: one pass over parameters, gradients and moments, 15x faster than foreach for 773 M parameters on
    CPU), or PyTorch's Adafactor, whose state for a matrix is a row and a column vector instead of AdamW's two full
    moments: for the paper-sized HyperNets (773 M parameters) 6 GB of optimiser state becomes a few MB."""
    if settings.optimizer == "adafactor":
        # eps[1] = 1: steps of the learning rate itself, not relative to each weight's RMS (with the default 1e-3 a
        # zero-initialised layer, as the HyperNet's last one, moves a thousandth of the rate: it did not learn)
        return torch.optim.Adafactor(params, lr=settings.lr, eps=(None, 1.0), weight_decay=settings.weight_decay)
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay,
                             fused=device.type in ("cpu", "cuda"))


@dataclass
class TrainState:
    step: int = 0
    history: list[dict] = field(default_factory=list)


@dataclass
class StepLosses:
    """What an objective's step reports: the total loss (what was back-propagated), its LM part, the rest by name."""

    lm: float
    extra: dict[str, float] = field(default_factory=dict)  # e.g. {"rdm": value}, already weighted into ``total``
    total: float | None = None
    record: dict[str, Any] = field(default_factory=dict)  # extra fields of the step's history record

    @property
    def loss(self) -> float:
        return self.lm if self.total is None else self.total


class Objective(Protocol):
    """What a trainable method supplies to :func:`train`."""

    keep_grad_buffers: bool  # zero the gradients in place (large, reused buffers) instead of freeing them
    # Optional: ``steps_in_backward = True`` says the step ends in one backward call through the parameters, made by
    # ``self.stepper.backward`` when the loop sets ``stepper`` (``--step-in-backward``), else by torch.autograd.backward.

    def parameters(self) -> list[torch.Tensor]:
        """What the optimiser updates."""

    def prepare(self) -> None:
        """Model modes before the first step (train mode, dropout, gradient checkpointing)."""

    def step(self, step: int, batches: list[list[Example]]) -> StepLosses:
        """Forward and backward over the micro-batches of optimiser step ``step`` (this process's share of them),
        leaving the step's gradient, summed over processes, on :meth:`parameters`; raises nothing on a non-finite
        loss (the loop checks)."""

    def state_dict(self) -> dict:
        """What a checkpoint keeps besides the optimiser (weights, random generators), as of the last completed step."""

    def load_state_dict(self, state: dict) -> None: ...

    def step_done(self) -> None:
        """Called after each completed optimiser step (e.g. to remember a generator's state for the next checkpoint)."""


def schedule_length(n_examples: int, settings: TrainSettings) -> tuple[int, int]:
    """``(micro-batches per epoch, optimiser steps)`` of a run."""
    if n_examples == 0:
        raise InputError("the training set is empty after formatting (every example was cut away)")
    micro_per_epoch = math.ceil(n_examples / settings.batch_size)
    if settings.max_steps is not None:
        return micro_per_epoch, settings.max_steps
    return micro_per_epoch, math.ceil(math.ceil(settings.epochs * micro_per_epoch) / settings.grad_accum)


LENGTH_GROUP = 16  # micro-batches per length group (group_by_length)


def epoch_order(examples: list[Example], settings: TrainSettings, epoch: int) -> list[int]:
    """The seeded shuffled order of one epoch; with ``group_by_length``, each run of ``LENGTH_GROUP`` micro-batches'
    worth of it sorted longest first, so that a micro-batch holds examples of similar length."""
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(settings.seed * 100_003 + epoch)).tolist()
    if not settings.group_by_length:
        return order
    size = settings.batch_size * LENGTH_GROUP
    return [i for start in range(0, len(order), size)
            for i in sorted(order[start:start + size], key=lambda i: (-len(examples[i].input_ids), i))]


def micro_batches(step: int, examples: list[Example], settings: TrainSettings, micro_per_epoch: int) -> list[list[Example]]:
    """The micro-batches of optimiser step ``step``: a continuous, seeded, per-epoch shuffled stream."""
    batches, orders = [], {}
    for micro in range(step * settings.grad_accum, (step + 1) * settings.grad_accum):
        epoch, index = divmod(micro, micro_per_epoch)
        if epoch not in orders:  # a step's micro-batches span one epoch, or two: each order drawn once
            orders[epoch] = epoch_order(examples, settings, epoch)
        order = orders[epoch]
        batches.append([examples[i] for i in order[index * settings.batch_size:(index + 1) * settings.batch_size]])
    return batches


def micro_weights(batches: list[list[Example]], how: str) -> list[float]:
    """The weight of each micro-batch's mean loss in the step's loss (they sum to 1): equal, or by answer tokens (the
    tokens the shifted labels score), so that every answer token of the step counts alike."""
    if how == "micro-batch":
        return [1 / len(batches)] * len(batches)
    tokens = [sum(sum(1 for label in e.labels[1:] if label != -100) for e in batch) for batch in batches]
    total = sum(tokens)
    return [n / total if total else 1 / len(batches) for n in tokens]


def weighted(loss: torch.Tensor, micro: int, weights: list[float], how: str) -> torch.Tensor:
    """Micro-batch ``micro``'s share of the step's loss (``micro_weights``); equal shares divide, as the loop always
    did, so that default runs stay bit-identical (``x / 3`` and ``x * (1 / 3)`` can differ in the last bit)."""
    return loss / len(weights) if how == "micro-batch" else loss * weights[micro]


def answer_logits(model: torch.nn.Module, batch: list[Example], pad_id: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The logits at the positions that predict an answer token in some row (the LM head runs only there:
    ``logits_to_keep`` given as indices), the tokens they predict, and those positions.  The prompt positions' logits
    were computed and thrown away before: with Gemma 3's 262k-word head that was over half of a step's work (forward
    and backward), with SmolLM2's 49k about a fifth."""
    inputs = collate(batch, pad_id)
    targets = inputs.pop("labels")[:, 1:]  # position p predicts token p + 1
    keep = (targets != IGNORE_INDEX).any(0).nonzero().squeeze(1)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    if _keeps_logits(model):
        logits = model(**inputs, logits_to_keep=keep.to(device)).logits
    else:  # an architecture without the option: every position's logits, then the answers'
        logits = model(**inputs).logits[:, keep.to(device)]
    return logits, targets[:, keep].to(device), keep


def answer_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy of :func:`answer_logits`' answer tokens (the model's own loss)."""
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


def lm_loss(model: torch.nn.Module, batch: list[Example], pad_id: int, device: torch.device) -> torch.Tensor:
    """The mean cross-entropy of a micro-batch's answer tokens."""
    return answer_loss(*answer_logits(model, batch, pad_id, device)[:2])


def _keeps_logits(model: torch.nn.Module) -> bool:
    """Whether the (PEFT-wrapped) causal LM's forward takes ``logits_to_keep`` (transformers' decoder LMs do)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


CHECKPOINT_KEYS = {"fingerprint", "state", "objective", "optimizer", "scheduler"}


class Checkpointer:
    """One resumable checkpoint file per task, written atomically by the main process; ``fingerprint`` is what a
    run's result depends on, so a checkpoint of another run is refused."""

    def __init__(self, folder: Path, fingerprint: dict):
        self.folder, self.fingerprint = Path(folder), fingerprint

    def path(self, task: int) -> Path:
        return self.folder / f"task{task}.pt"

    def save(self, task: int, state: TrainState, objective: Objective, optimizer, scheduler) -> None:
        if not processes().is_main:  # every process holds the same state; one writes it
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_file_path(self.path(task), force=True, what="checkpoint") as tmp:
            torch.save({"fingerprint": self.fingerprint, "state": asdict(state), "objective": objective.state_dict(),
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp)
        logger.info("checkpoint written at step %d: %s", state.step, self.path(task))

    def load(self, task: int) -> dict | None:
        if not self.path(task).exists():
            return None
        try:  # weights_only: tensors, numbers, strings and containers only; a pickle that would run code is refused
            data = torch.load(self.path(task), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a truncated, foreign or hostile file
            raise InputError(f"not a checkpoint this tool can load safely ({type(exc).__name__}: {one_line(exc, 200)})",
                             self.path(task)) from None
        if not isinstance(data, dict) or not CHECKPOINT_KEYS <= set(data):
            raise InputError("not a checkpoint of this tool (entries missing)", self.path(task))
        if data["fingerprint"] != self.fingerprint:
            raise InputError("checkpoint was made with other inputs or settings; remove it or drop --resume",
                             self.path(task))
        return data


def train(objective: Objective, examples: list[Example], settings: TrainSettings, device: torch.device,
          checkpointer: Checkpointer, *, task: int = 0, resume: bool = False,
          on_step: Callable[[dict, int], None] | None = None) -> TrainState:
    """Optimise ``objective.parameters()`` over ``examples``; resumes from ``checkpointer`` when ``resume``."""
    from transformers import get_cosine_schedule_with_warmup

    micro_per_epoch, total_steps = schedule_length(len(examples), settings)
    params = objective.parameters()
    optimizer = make_optimizer(params, settings, device)
    scheduler = get_cosine_schedule_with_warmup(optimizer, settings.warmup_steps(total_steps), max(total_steps, 1))
    state = TrainState()
    saved = checkpointer.load(task) if resume else None
    if saved:
        try:
            objective.load_state_dict(saved["objective"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            state = TrainState(**saved["state"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:  # wrong shapes, types or entries
            raise InputError(f"the checkpoint does not fit this run ({type(exc).__name__}: {one_line(exc, 200)}); remove it or "
                             "drop --resume", checkpointer.path(task)) from None
        logger.info("resumed task %d at step %d", task, state.step)
    elif resume:
        logger.warning("--resume: no checkpoint in %s; starting from step 0", checkpointer.folder)
    broadcast(params)
    stepper = None
    if settings.step_in_backward:
        if not getattr(objective, "steps_in_backward", False):
            raise ConfigError("--step-in-backward: only a HyperNet's training updates its parameters in the backward pass")
        stepper = objective.stepper = BackwardStepper(optimizer, params, settings.clip_norm)
    objective.prepare()
    with interrupts_watched() as watch:
        try:
            while state.step < total_steps:
                started = time.perf_counter()
                if stepper:
                    stepper.grad_norm = 0.0
                losses = objective.step(state.step, micro_batches(state.step, examples, settings, micro_per_epoch))
                if not all(math.isfinite(v) for v in (losses.loss, losses.lm, *losses.extra.values())):
                    parts = ", ".join(f"{k} {v}" for k, v in {"LM": losses.lm, **losses.extra}.items())
                    raise TrainingDiverged(f"non-finite loss at step {state.step + 1} ({parts}); the last good checkpoint, if "
                                           f"any, is kept in {checkpointer.folder}")
                if stepper is None:
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.clip_norm)
                    optimizer.step()
                else:  # the objective's backward has updated every parameter already
                    grad_norm = stepper.grad_norm
                scheduler.step()
                optimizer.zero_grad(set_to_none=not objective.keep_grad_buffers)
                state.step += 1
                objective.step_done()
                record = {"step": state.step, "loss": losses.loss, "lm": losses.lm, **losses.extra,
                          "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                          "time_s": time.perf_counter() - started, **losses.record}
                state.history.append(record)
                logger.info("task %d step %d/%d loss %.4f lm %.4f%s lr %.2e", task, state.step, total_steps, losses.loss,
                            losses.lm, "".join(f" {k} {v:.4f}" for k, v in losses.extra.items()), record["lr"])
                if on_step:
                    on_step(record, total_steps)
                if state.step % settings.checkpoint_every == 0 and state.step < total_steps:
                    checkpointer.save(task, state, objective, optimizer, scheduler)
                # a first Ctrl-C (hf_runtime.interrupts), or one held during the updates: the step is complete, stop now;
                # agreed across processes, so all stop after the same step even when one saw the signal a step later
                if sum_value(float(watch.requested or bool(stepper and stepper.interrupted))) > 0:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:  # keep the last completed step, so --resume continues exactly
            optimizer.zero_grad(set_to_none=True)
            checkpointer.save(task, state, objective, optimizer, scheduler)
            raise
    return state  # no final checkpoint: the export follows at once (and at paper sizes it would be ~9 GB)
