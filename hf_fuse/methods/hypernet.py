"""``hypernet``: the paper's method (DESIGN.md 2.2-2.6).  Per group a HyperNet reads the target's and
the sources' block tokens and predicts ΔB; it is trained on replay data through dynamic patching
(``hf_fuse.train``) and the fused B is ``B_t + α ΔB``.  Several plans form a sequential pipeline."""

from __future__ import annotations

import torch

from ..data import Example
from ..export import fused_tensors
from ..hypernet import HyperNet, HyperNets, count_parameters
from ..model import tensors_from_plan
from ..plan_tensors import build_group
from ..train import train
from .base import FuseContext, FusionMethod, MethodResult


class HyperNetMethod(FusionMethod):
    name = "hypernet"

    def fuse(self, ctx: FuseContext, examples: list[Example] | None = None) -> MethodResult:
        """Train and fuse every plan in turn; ``examples`` replaces the replay set (``distill`` adds to it)."""
        job, model = ctx.job, ctx.model
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
                config = job.net.config(group.block_size, group.rank, "denoise" in job.train.ablate)
                if group.name in hypernets and hypernets[group.name].config == config:
                    carried.append(group.name)
                    if job.train.reset_alpha:  # the authors' pipeline starts each task's alpha afresh
                        with torch.no_grad():
                            hypernets[group.name].alpha.fill_(config.alpha_init)
                else:
                    hypernets[group.name] = HyperNet(config).to(ctx.device)
            active = HyperNets({g.name: hypernets[g.name] for g in groups})
            ctx.on_event("stage", f"task {index + 1}/{len(ctx.plans)}: {len(groups)} groups, "
                                  f"{count_parameters(active) / 1e6:.1f} M HyperNet parameters")
            state = train(peft_model, examples, ctx.tokenizer.pad_token_id, groups, active, job.train, ctx.device,
                          ctx.checkpointer, task=index, resume=job.resume,
                          on_step=lambda record, total, task=index: ctx.on_event("step", (task, record, total)))
            target, metrics = fused_tensors(active, groups, target)
            model = peft_model.unload()  # the bare base model again, for the next task
            tasks.append({"plan": str(plan.path), "plan_checksum": plan.checksum, "groups": metrics,
                          "hypernet_parameters": count_parameters(active), "carried_over": carried, "steps": state.step,
                          "history": state.history})
        ctx.model = model
        return MethodResult(target, ctx.plans[-1].target_config, tasks)
