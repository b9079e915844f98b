"""What the methods that run the source experts themselves (``distill``, ``project``) share: the
``--source-model INDEX=PATH`` option and its checks, made before any model loads, a notice about the source models'
licences, and an expert loaded on first use."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import torch

from hf_common.errors import ConfigError
from hf_common.plan import Plan
from hf_runtime.model import (
    BaseModelRef,
    attach_target,
    check_fit,
    family_mismatch,
    load_config,
    load_model_and_tokenizer,
    resolve_base_model,
    tensors_from_blob,
)

if TYPE_CHECKING:
    from .base import FuseContext


def parse_indexed(values: tuple[str, ...], flag: str, *, index_required: bool) -> list[tuple[int | None, str]]:
    """``INDEX=VALUE`` (or a bare ``VALUE`` where allowed) from the command line."""
    out = []
    for value in values:
        index, sep, rest = value.partition("=")
        if sep and index.strip().isdigit():
            out.append((int(index), rest))
        elif index_required:
            raise ConfigError(f"{flag} takes INDEX=PATH (the source's position in the plan, from 0), got {value!r}")
        else:
            out.append((None, value))
    return out


def source_model_map(values: tuple[str, ...]) -> dict[int, str]:
    models = parse_indexed(values, "--source-model", index_required=True)
    if len({i for i, _ in models}) != len(models):
        raise ConfigError("--source-model names the same source index twice")
    return dict(models)


SOURCE_MODEL_OPTION = dict(  # the options of a settings field that holds the source experts' base models
    flag="--source-model", multiple=True, metavar="INDEX=PATH", parse=lambda values: source_model_map(values),
    help="base model of plan source INDEX (folder, .gguf, smollm2 / gemma3); one per source.")


def check_sources(method: str, plans: list[Plan], source_models: dict[int, str], extra_indices=(),
                  warnings: list[str] | None = None) -> tuple[Plan, dict[int, BaseModelRef]]:
    """One plan; a base model for each of its sources that fits that source's adapter (kept in the plan): refused when
    the shapes do not fit, a warning when only the family differs.  Returns the plan and each source's resolved
    base model."""
    if len(plans) != 1:
        raise ConfigError(f"--method {method} fuses one plan at a time (sequential pipelines are hypernet only)")
    plan = plans[0]
    n = plan.n_sources
    for index in [*source_models, *extra_indices]:
        if not 0 <= index < n:
            raise ConfigError(f"source index {index} is not in the plan, which has {n} source(s) (0..{n - 1})")
    missing = [i for i in range(n) if i not in source_models]
    if missing:
        raise ConfigError(f"--source-model is missing for source(s) {', '.join(map(str, missing))} of {plan.path}")
    refs = {}
    for index, model in sorted(source_models.items()):
        _, tensors = plan.source_adapter(index)  # refuses plans without the copy
        ref = refs[index] = resolve_base_model(model)
        config = load_config(ref)
        check_fit(config, plan, ref, tensors=tensors, what=f"source adapter {index}")
        mismatch = family_mismatch(config, plan.provenance["inputs"][1 + index].get("family"), ref,
                                   f"source adapter {index}")
        if mismatch and warnings is not None and mismatch not in warnings:
            warnings.append(mismatch)
    return plan, refs


class SourceExpert:
    """Source ``index``'s expert (its base model with its adapter), loaded on first use (cached answers and prompts
    need none) and shared by the prompt writer (``--synthesize-writer source``) and the answers."""

    def __init__(self, ref: str, ctx: FuseContext, index: int) -> None:
        self.ref, self.ctx = ref, ctx
        self.config, self.blob = ctx.plans[0].source_adapter(index)
        self.adapter_hash = hashlib.sha256(self.blob.blob.tobytes()).hexdigest()
        self.identity = f"source {self.ref} {self.adapter_hash}"
        self.loaded = None

    def get(self):
        if self.loaded is None:
            model, tokenizer = load_model_and_tokenizer(resolve_base_model(self.ref), self.ctx.device, self.ctx.dtype)
            self.loaded = attach_target(model, self.config, tensors_from_blob(self.blob)).eval(), tokenizer
        return self.loaded

    def release(self) -> None:
        if self.loaded is not None:
            self.loaded = None
            if self.ctx.device.type == "cuda":
                torch.cuda.empty_cache()
