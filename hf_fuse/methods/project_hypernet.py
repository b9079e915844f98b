"""``project-hypernet``: the training-free projection as the HyperNet's starting point.

``project`` carries each source update into the target's coordinates (``hf_fuse.methods.project``).
Here those projected updates are added to the frozen target base model's weights before training,
so training starts from what the ``project`` adapter computes (plus the HyperNet's initial α·ΔB, as
a plain ``hypernet`` run starts from the target's plus α·ΔB); the HyperNet then learns, on the replay
data, what the projection gets wrong or lacks.  The fused adapter is the HyperNet's (the target's rank, B = B_t + αΔB)
with the projected updates appended as extra rank, exactly as ``project`` exports them, so loading it
in PEFT on the untouched base model gives the model that was trained.

Why not start ΔB itself at the projection: ΔB lives in the span of the target's A, and the projected
updates mostly do not (they are rank r_s in directions of their own); squeezing them into B_t's rows
would throw most of them away before training starts.
"""

from __future__ import annotations

from .base import FuseContext, MethodResult, register
from .hypernet.method import HyperNetMethod, HyperNetSettings
from .hypernet.report import HyperNetReport
from .project import ProjectMethod, ProjectSettings, add_to_base, append_projection


@register
class ProjectHyperNetMethod(HyperNetReport, ProjectMethod):
    """``project``'s settings, checks and fitting; the HyperNet's training on top."""

    name = "project-hypernet"
    trains_hypernet_with = ""
    loss_terms = {"rdm": "λ·RDM"}
    source_relation = ("its update was projected and read by the HyperNet that wrote the fused update",
                       "its activations aligned that projection")
    help = "project's updates as the starting point, the HyperNet trained on top of them"
    settings_classes = (ProjectSettings, HyperNetSettings)
    trains = True

    def fuse(self, ctx: FuseContext) -> MethodResult:
        links, report = self.carry(ctx)
        add_to_base(ctx.model, links)  # the loaded base model is this run's own copy; nothing else reads it
        trained = HyperNetMethod(self.settings).fuse(ctx)
        tensors, config = append_projection(ctx.plans[0], trained.tensors, links)
        return MethodResult(tensors, config, trained.tasks, {"project": {**report, "then": "hypernet"}})
