"""``hypernet``: the paper's method (docs/methods/hypernet-paper.md §3-§6).  Per group a HyperNet reads the target's and
the sources' block tokens and predicts ΔB; it is trained on replay data through dynamic patching and the fused B
is ``B_t + α ΔB``.  Several plans form a sequential pipeline.

Training step (:class:`HyperNetObjective`, run by ``hf_runtime.trainer``): the HyperNets' inputs are the plan's
tokens, which do not change between micro-batches, and their parameters change only at optimiser steps.  So each
step runs the HyperNets **once**, patches the predicted B's in, runs all its micro-batches through the patched
model (accumulating the LM gradient on the patched weights), and back-propagates that gradient, plus λ·RDM,
through the HyperNets once: the same gradient as running them for every micro-batch, at a fraction of the cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import click
import torch
from torch import nn

from hf_common.cli_support import int_or_auto
from hf_common.errors import ConfigError, require_int
from hf_common.settings import setting
from hf_runtime.data import Example
from hf_runtime.distributed import my_share, sum_gradients, sum_value
from hf_runtime.model import tensors_from_plan
from hf_runtime.trainer import StepLosses, lm_loss, micro_weights, train, weighted

from ..base import FuseContext, FusionMethod, MethodResult, register
from .export import fused_tensors
from .forward import new_b_tensors, run_hypernets
from .network import HyperNet, HyperNetConfig, HyperNets, count_parameters
from .patching import backward_through_patch, original_b, patched
from .plan_tensors import GroupTensors, build_group
from .rdm import rdm_loss
from .report import HyperNetReport

ABLATIONS = ("denoise", "rdm")


@dataclass(frozen=True)
class HyperNetSettings:
    """The HyperNet's architecture (docs/methods/hypernet-paper.md §3) and its RDM regulariser (§4)."""

    section: ClassVar[str] = "hypernet"
    presets: ClassVar[dict[str, dict[str, object]]] = {  # where the paper is silent: ours, and the authors' code
        "default": {"init": "torch", "reset_alpha": False}, "paper": {"init": "xavier", "reset_alpha": True}}
    embed_dim: int | str = setting(1024, help="HyperNet width; 'auto' scales it to the token width (a quarter of "
                                   "block_size·r, at most 1024).", type=str, metavar="N|auto", cli_default="1024",
                                   parse=int_or_auto)
    n_heads: int = setting(8, help="Cross-attention heads.")
    max_positions: int = setting(4096, help="Learned positions per sequence.")
    alpha_init: float = setting(0.3, help="Initial α of every group.")
    mu_gate: float = setting(0.10, help="Shift μ_gate of the SVD-guided gate.")
    init: str = setting("torch", help="HyperNet Linear init: PyTorch's default (default) or xavier-uniform with zero bias "
                        "(paper preset).", type=click.Choice(["torch", "xavier"]), cli_default=None)
    lambda_reg: float = setting(0.005, help="Weight λ_reg of the RDM regulariser.")
    mu_target: float = setting(0.0, help="Mean of the RDM reference Gaussian.")
    sigma: float = setting(1.0, help="Std of the RDM reference Gaussian.")
    n_proj: int = setting(2048, help="Random projections of the RDM term.")
    ablate: tuple[str, ...] = setting((), help="denoise: gate forced open and no RDM; rdm: no RDM term.",
                                      type=click.Choice(list(ABLATIONS)), multiple=True, parse=tuple)
    reset_alpha: bool = setting(False, flag="--reset-alpha", secondary="--carry-alpha", cli_default=None,
                                help="Sequential tasks: start each task's α at --alpha-init (paper preset) or carry it "
                                     "over (default).")

    def __post_init__(self) -> None:
        require_int("--embed-dim", self.embed_dim, auto=True)
        require_int("--n-heads", self.n_heads)
        for flag, ok in (("--lambda-reg", self.lambda_reg >= 0), ("--n-proj", self.n_proj >= 1), ("--sigma", self.sigma > 0),
                         ("--mu-target", math.isfinite(self.mu_target))):
            if not ok:
                raise ConfigError(f"{flag} is out of range (got {getattr(self, flag[2:].replace('-', '_'))})")
        for name in self.ablate:
            if name not in ABLATIONS:
                raise ConfigError(f"--ablate must be one of {', '.join(ABLATIONS)}, got {name!r}")
        self.config(1, 1)  # every check of HyperNetConfig (heads, positions, finiteness), before any model loads

    @property
    def use_rdm(self) -> bool:
        return self.lambda_reg > 0 and not {"rdm", "denoise"} & set(self.ablate)

    def config(self, block_size: int, rank: int) -> HyperNetConfig:
        embed = auto_embed_dim(block_size * rank, self.n_heads) if self.embed_dim == "auto" else int(self.embed_dim)
        return HyperNetConfig(block_size=block_size, rank=rank, embed_dim=embed, n_heads=self.n_heads,
                              max_positions=self.max_positions, mu_gate=self.mu_gate, alpha_init=self.alpha_init,
                              ablate_denoise="denoise" in self.ablate, init=self.init)


def auto_embed_dim(token_dim: int, n_heads: int) -> int:
    """A quarter of the token width, between one head-compatible step and the paper's 1024."""
    step = math.lcm(4, n_heads)
    width = min(1024, max(step, token_dim // 4))
    return max(step, width - width % step)


class HyperNetObjective:
    """One optimiser step of the HyperNets of ``groups``; base model and target LoRA stay frozen."""

    keep_grad_buffers = True  # the (large) gradient buffers are zeroed in place, not re-allocated every step
    steps_in_backward = True  # a step ends in one backward through the HyperNets (backward_through_patch)

    def __init__(self, peft_model: nn.Module, hypernets: HyperNets, groups: list[GroupTensors], settings: HyperNetSettings,
                 *, seed: int, gradient_checkpointing: bool, pad_id: int, device: torch.device,
                 loss_average: str = "micro-batch"):
        self.model, self.hypernets, self.groups, self.settings = peft_model, hypernets, groups, settings
        self.loss_average = loss_average
        self.gradient_checkpointing, self.pad_id, self.device = gradient_checkpointing, pad_id, device
        self.generator = torch.Generator(device=device).manual_seed(seed)  # the RDM term's random projections
        self.rng_after_last_step = self.generator.get_state()
        self.originals = original_b(peft_model, {u.module for g in groups for u in g.units})
        self.stepper = None  # set by the loop under --step-in-backward

    def parameters(self) -> list[torch.Tensor]:
        return [p for name in (g.name for g in self.groups) for p in self.hypernets[name].parameters()]

    def prepare(self) -> None:
        """Train mode (so checkpointing is really active) with every dropout off, as the reference's eval mode."""
        if self.gradient_checkpointing:
            self.model.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.model.base_model.model.config.use_cache = False
        self.model.train()
        for module in self.model.modules():
            if isinstance(module, nn.Dropout):
                module.eval()

    def step(self, step: int, batches: list[list[Example]]) -> StepLosses:
        import time

        started = time.perf_counter()
        outputs = run_hypernets(self.hypernets, self.groups)
        new_b = new_b_tensors(self.hypernets, self.groups, outputs, self.originals)
        lm_started = time.perf_counter()
        lm_total = 0.0
        weights = micro_weights(batches, self.loss_average)
        with patched(self.model, new_b) as leaves:
            for micro, batch in my_share(list(enumerate(batches))):  # all of them in a one-process run
                loss = weighted(lm_loss(self.model, batch, self.pad_id, self.device), micro, weights,
                                self.loss_average)
                loss.backward()
                lm_total += loss.item()
        sum_gradients(list(leaves.values()))  # data parallel: the whole step's LM gradient in every process
        lm_total = sum_value(lm_total)
        update_started = time.perf_counter()
        reg = self.rdm_term(outputs)
        reg_value = float(reg.detach()) if reg is not None else 0.0
        if math.isfinite(lm_total) and math.isfinite(reg_value):  # the trainer stops a non-finite step before any update
            backward_through_patch(new_b, leaves, self.settings.lambda_reg * reg if reg is not None else None,
                                   backward=self.stepper.backward if self.stepper else torch.autograd.backward)
        return StepLosses(lm=lm_total, extra={"rdm": reg_value}, total=lm_total + self.settings.lambda_reg * reg_value,
                          record={"time_split_s": {"hypernets": lm_started - started, "lm": update_started - lm_started,
                                                   "update": time.perf_counter() - update_started},
                                  "alpha": {g.name: float(self.hypernets[g.name].alpha.detach()) for g in self.groups}})

    def rdm_term(self, outputs: dict) -> torch.Tensor | None:
        s = self.settings
        if not s.use_rdm:
            return None
        terms = [rdm_loss(o.z_target, mu_target=s.mu_target, sigma=s.sigma, n_proj=s.n_proj, generator=self.generator)
                 + rdm_loss(o.z_source, mu_target=s.mu_target, sigma=s.sigma, n_proj=s.n_proj, generator=self.generator)
                 for o in outputs.values()]
        return torch.stack(terms).mean()

    def step_done(self) -> None:
        self.rng_after_last_step = self.generator.get_state()

    def state_dict(self) -> dict:
        return {"hypernets": self.hypernets.state_dict(), "rdm_rng": self.rng_after_last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.hypernets.load_state_dict(state["hypernets"])
        self.generator.set_state(state["rdm_rng"])
        self.rng_after_last_step = self.generator.get_state()


@register
class HyperNetMethod(HyperNetReport, FusionMethod):
    name = "hypernet"
    trains_hypernet_with = ""
    loss_terms = {"rdm": "λ·RDM"}
    help = "the paper's HyperNet, trained on the replay data with dynamic patching (default)"
    settings_classes = (HyperNetSettings,)

    def fuse(self, ctx: FuseContext, examples: list[Example] | None = None) -> MethodResult:
        """Train and fuse every plan in turn; ``examples`` replaces the replay set (``distill`` adds to it)."""
        job, model = ctx.job, ctx.model
        net = job.settings_of(HyperNetSettings)
        examples = ctx.replay.examples if examples is None else examples
        hypernets = HyperNets()
        target = tensors_from_plan(ctx.plans[0])
        tasks = []
        torch.manual_seed(job.train.seed)
        for index, plan in enumerate(ctx.plans):
            peft_model = ctx.attach_for_training(model, plan.target_config, target)
            groups = [build_group(plan, g, ctx.device, target if index else None) for g in plan.groups]
            carried = []
            for group in groups:
                config = net.config(group.block_size, group.rank)
                if group.name in hypernets and hypernets[group.name].config == config:
                    carried.append(group.name)
                    if net.reset_alpha:  # the authors' pipeline starts each task's alpha afresh
                        with torch.no_grad():
                            hypernets[group.name].alpha.fill_(config.alpha_init)
                else:
                    hypernets[group.name] = HyperNet(config).to(ctx.device)
            active = HyperNets({g.name: hypernets[g.name] for g in groups})
            ctx.on_event("stage", f"task {index + 1}/{len(ctx.plans)}: {len(groups)} groups, "
                                  f"{count_parameters(active) / 1e6:.1f} M HyperNet parameters")
            objective = HyperNetObjective(peft_model, active, groups, net, seed=job.train.seed,
                                          gradient_checkpointing=job.train.gradient_checkpointing,
                                          pad_id=ctx.tokenizer.pad_token_id, device=ctx.device,
                                          loss_average=job.train.loss_average)
            state = train(objective, examples, job.train, ctx.device, ctx.checkpointer, task=index, resume=job.resume,
                          on_step=lambda record, total, task=index: ctx.on_event("step", (task, record, total)))
            target, metrics = fused_tensors(active, groups, target)
            model = peft_model.unload()  # the bare base model again, for the next task
            tasks.append({"plan": str(plan.path), "plan_checksum": plan.checksum, "groups": metrics,
                          "hypernet_parameters": count_parameters(active), "carried_over": carried, "steps": state.step,
                          "history": state.history})
        ctx.model = model
        return MethodResult(target, ctx.plans[-1].target_config, tasks)
