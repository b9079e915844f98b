"""The settings every trainer shares, torch-free so that a command can build its options from them without loading
torch: the training loop's (``TrainSettings``) and the replay data's (``ReplayConfig``).  Each field declares its
command-line option (``hf_common.settings.setting``); ``hf-fuse`` and ``hf-eval``'s training commands generate their
options from these classes, each with its own defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import click

from hf_common.errors import ConfigError, require_int
from hf_common.settings import setting


@dataclass(frozen=True)
class ReplayConfig:
    """How replay files are capped, formatted and truncated."""

    cutoff_len: int = setting(1024, type=int, help="Token cut-off of an example.")
    max_examples_per_file: int | None = setting(None, type=int, help="Cap on examples taken from each data file.")
    seed: int = 0  # the training's --seed
    drop_history: bool = setting(False, is_flag=True, help="Drop earlier turns ('history'): zero-shot prompts.")

    def __post_init__(self) -> None:
        require_int("--cutoff-len", self.cutoff_len)
        if self.max_examples_per_file is not None:
            require_int("--max-examples-per-file", self.max_examples_per_file)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"--seed must be an integer (got {self.seed!r})")


@dataclass(frozen=True)
class TrainSettings:
    """The loop's settings; a method's own (the HyperNet's RDM term, say) live with the method."""

    # named sets of values a command's ``--preset`` applies where the user gives none (the paper's authors' code
    # differs from our defaults where the paper is silent); a method's settings class declares its own the same way
    presets: ClassVar[dict[str, dict[str, object]]] = {
        "default": {"weight_decay": 0.0, "max_grad_norm": 1.0, "warmup_rounding": "up"},
        "paper": {"weight_decay": 0.01, "max_grad_norm": 0.0, "warmup_rounding": "down"},
    }

    epochs: float = setting(3.0, type=float, help="Passes over the training data.")
    max_steps: int | None = setting(None, type=int, help="Optimiser steps (overrides --epochs); 0 = no training.")
    batch_size: int = setting(1, type=int, help="Examples per micro-batch.")
    grad_accum: int = setting(8, type=int, help="Micro-batches per optimiser step.")
    lr: float = setting(5e-5, type=float, help="Learning rate (cosine schedule with warm-up).")
    warmup_ratio: float = setting(0.05, type=float, help="Warm-up share of the optimiser steps.")
    weight_decay: float = setting(0.0, type=float, help="AdamW weight decay (default 0; paper preset 0.01).")
    max_grad_norm: float = setting(1.0, type=float, help="Gradient clipping norm, 0 = off (default 1; paper preset 0).")
    warmup_rounding: str = setting("up", type=click.Choice(["up", "down"]),
                                   help="Warm-up steps rounded up (default) or down (paper preset).")
    seed: int = setting(0, type=click.IntRange(0, 2**31 - 1),
                        help="Seed of initialisation, data order and dropout (0 to 2^31-1).")
    gradient_checkpointing: bool = setting(True, secondary="--no-gradient-checkpointing",
                                           help="Recompute activations in the backward pass (less memory, more time).")
    checkpoint_every: int = setting(50, type=int, help="Optimiser steps between checkpoints.")
    # adafactor: factored second moments, no first moment: a fraction of AdamW's state
    optimizer: str = setting("adamw", type=click.Choice(["adamw", "adafactor"]),
                             help="adamw, or adafactor: factored second moments and no first moment, a fraction of "
                                  "AdamW's optimiser memory.")
    loss_average: str = setting("micro-batch", type=click.Choice(["micro-batch", "token"]),
                                help="How a step's loss averages its micro-batches: each micro-batch's mean alike, or "
                                     "every answer token of the step alike (as transformers' Trainer and TRL do).")
    group_by_length: bool = setting(False, is_flag=True,
                                    help="Micro-batches of examples of similar length (sorted within groups of 16 "
                                         "micro-batches of each epoch's shuffled order): less padding, less time; the "
                                         "same examples per epoch, in another order.")
    # each parameter updated in its gradient hook during the backward pass, so the whole gradient never exists at once
    # (hf_runtime.backward_step; objectives whose step ends in one backward call only: the HyperNet's)
    step_in_backward: bool = setting(False, is_flag=True,
                                     help="Update each HyperNet parameter as soon as its gradient is complete and free "
                                          "that gradient, so the HyperNets' gradients never exist at once; with "
                                          "clipping on, a second HyperNet backward measures the norm first. HyperNet "
                                          "training only.")

    def __post_init__(self) -> None:
        checks = [("--epochs", self.epochs > 0), ("--batch-size", self.batch_size >= 1), ("--grad-accum", self.grad_accum >= 1),
                  ("--lr", self.lr > 0), ("--warmup-ratio", 0 <= self.warmup_ratio < 1),
                  ("--checkpoint-every", self.checkpoint_every >= 1),
                  ("--max-steps", self.max_steps is None or self.max_steps >= 0), ("--max-grad-norm", self.max_grad_norm >= 0),
                  ("--warmup-rounding", self.warmup_rounding in ("up", "down")), ("--weight-decay", self.weight_decay >= 0),
                  ("--optimizer", self.optimizer in OPTIMIZERS),
                  ("--loss-average", self.loss_average in ("micro-batch", "token"))]
        for flag, ok in checks:
            if not ok:
                raise ConfigError(f"{flag} is out of range (got {getattr(self, flag[2:].replace('-', '_'))})")

    def warmup_steps(self, total_steps: int) -> int:
        rounding = math.ceil if self.warmup_rounding == "up" else math.floor
        return rounding(self.warmup_ratio * total_steps)

    @property
    def clip_norm(self) -> float:
        """The clipping threshold; infinite (norm still measured, nothing clipped) when clipping is off."""
        return self.max_grad_norm if self.max_grad_norm > 0 else math.inf


OPTIMIZERS = ("adamw", "adafactor")
