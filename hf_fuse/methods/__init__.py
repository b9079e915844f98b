"""Fusion methods: one small module each, one interface, one registry (as mergekit's merge methods).

A method reads the job's plans and the loaded target model and returns the fused adapter's tensors,
its config and the per-task part of ``fusion_report.json``; ``hf_fuse.run`` does everything around
it (pre-flight checks, loading, the report, the atomic export).

    hypernet   the paper's HyperNet with dynamic patching (default)
    distill    the source experts answer unlabelled prompts; their answers train the target
    project    each source update is carried into the target's coordinates by activation-aligned maps
    project-hypernet   project's updates as the starting point, the HyperNet trained on top of them
"""

from __future__ import annotations

from hf_common.errors import ConfigError

from .base import FuseContext, FusionMethod, MethodResult
from .distill import DistillMethod, DistillSettings
from .hypernet import HyperNetMethod
from .project import ProjectMethod, ProjectSettings
from .project_hypernet import ProjectHyperNetMethod

METHODS: dict[str, type[FusionMethod]] = {
    m.name: m for m in (HyperNetMethod, DistillMethod, ProjectMethod, ProjectHyperNetMethod)
}


def get_method(name: str) -> type[FusionMethod]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {name!r}") from None


__all__ = ["METHODS", "DistillSettings", "ProjectSettings", "FuseContext", "FusionMethod", "MethodResult", "get_method"]
