"""One ``hf-fuse`` job: fast pre-flight checks, load the target model and the replay data, let the chosen
fusion method (``hf_fuse.methods``) produce the fused adapter, then write it and its report atomically.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, replace

import torch

from hf_common.atomic import check_output_path
from hf_common.errors import ConfigError, InputError
from hf_common.plan import Plan
from hf_common.terms import notices
from hf_runtime import data as replay_data
from hf_runtime.distributed import device_for, per_step, processes, sharding_requested
from hf_runtime.model import (
    BaseModelRef,
    check_fit,
    family_mismatch,
    load_config,
    load_model_and_tokenizer,
    pick_device,
    pick_dtype,
    resolve_base_model,
)
from hf_runtime.trainer import Checkpointer

from .card import fused_card, fusion_terms
from .export import write_adapter
from .job import FuseJob
from .methods import METHODS, FuseContext, get_method

logger = logging.getLogger(__name__)
REPORT_FORMAT = "heterofusion-fusion-report"


def preflight(job: FuseJob, warnings: list[str] | None = None, method=None) -> tuple[list[Plan], BaseModelRef]:
    """Everything that can fail in seconds: plans, output folder, replay files, base model config and shapes, and
    ``method``'s own checks.  What is suspicious but not wrong is appended to ``warnings``."""
    check_output_path(job.output, job.force, "output folder")
    if job.train.step_in_backward and method is not None and not method.trains_hypernet():
        able = [f"{name} {cls.trains_hypernet_with}".strip() for name, cls in METHODS.items()
                if cls.trains_hypernet_with is not None]
        raise ConfigError(f"--step-in-backward: --method {job.method} trains no HyperNet (it applies to {', '.join(able)})")
    plans = [Plan(path) for path in job.plans]
    try:
        for plan in plans:
            if not plan.groups:
                raise InputError("the plan has no active group: nothing to fuse", plan.path)
            plan.check_target_tensors()
        replay_data.check_replay_files(job.replay)
        ref = resolve_base_model(job.base_model, job.base_model_id)
        config = load_config(ref)
        first = plans[0].target_safetensors()
        for plan in plans:
            check_fit(config, plan, ref)
            mismatch = family_mismatch(config, plan.provenance["inputs"][0].get("family"), ref)
            if mismatch and warnings is not None and mismatch not in warnings:
                warnings.append(mismatch)
            if plan is not plans[0] and sorted(plan.target_safetensors().keys()) != sorted(first.keys()):
                raise InputError("a later task's target adapter must be the same adapter as the first task's "
                                 "(its fused output becomes the next target)", plan.path)
        if method is not None:
            method.preflight(job, plans, warnings)
    except BaseException:
        for plan in plans:
            plan.close()
        raise
    return plans, ref


def _fingerprint(job: FuseJob, plans: list[Plan]) -> dict:
    return {"plans": [p.checksum for p in plans], "train": asdict(job.train), "replay": asdict(job.replay_config),
            "replay_files": [str(p) for p in job.replay], "method": job.method, **method_settings(job)}


def run(job: FuseJob, on_event: Callable[[str, object], None] = lambda kind, payload: None) -> dict:
    started = time.perf_counter()
    procs = processes()
    job = replace(job, train=per_step(job.train))  # data parallel: --grad-accum per process -> per step
    shard = _check_sharding(job, procs)
    job = replace(job, settings=_with_defaults(job))
    method = get_method(job.method)(job.settings)
    warnings: list[str] = []
    plans, ref = preflight(job, warnings, method)
    terms = fusion_terms(plans, ref, method)
    warnings += [notice for notice in notices(terms, method.name) if notice not in warnings]
    for warning in warnings:
        logger.warning(warning)
    device = pick_device(device_for(job.device))
    dtype = pick_dtype(job.dtype, device)
    on_event("stage", f"loading {ref.label} on {device} ({str(dtype).removeprefix('torch.')})")
    model, tokenizer = load_model_and_tokenizer(ref, torch.device("cpu") if shard else device, dtype)
    replay = replay_data.load_replay(job.replay, tokenizer, job.replay_config)
    on_event("stage", f"replay: {len(replay.examples)} examples, {replay.n_tokens} tokens "
                      f"({replay.n_answer_tokens} answer tokens), {replay.skipped} skipped")
    context = FuseContext(job, plans, ref, model, tokenizer, device, dtype, replay,
                          Checkpointer(job.checkpoints, _fingerprint(job, plans)), on_event, shard=shard)
    result = method.fuse(context)
    if context.shard_info:
        result.extra["sharded_base_model"] = context.shard_info
    report = {
        "format": REPORT_FORMAT, "version": 1, "output": str(job.output), "base_model": ref.label,
        "device": str(device), "dtype": str(dtype).removeprefix("torch."), "seed": job.train.seed, "method": method.name,
        "settings": {"train": asdict(job.train), "replay": asdict(job.replay_config),
                     "replay_files": [str(p) for p in job.replay], **method_settings(job)},
        "replay": {"per_file": replay.per_file, "n_examples": len(replay.examples), "skipped": replay.skipped,
                   "n_tokens": replay.n_tokens, "n_answer_tokens": replay.n_answer_tokens},
        # what was fused: per plan, the target adapter and the sources it names (path, family, base model, control)
        "inputs": [[{k: e.get(k) for k in ("role", "path", "family", "base_model", "null_source")}
                    for e in plan.provenance["inputs"]] for plan in plans],
        "tasks": result.tasks,
        **result.extra,
        "warnings": warnings,
        "terms": [asdict(entry) for entry in terms],
        "processes": procs.world,
        "time_s": round(time.perf_counter() - started, 2),
        "peak_memory_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if device.type == "cuda":
        report["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if procs.is_main:  # every process holds the same result; one writes it (and draws its report)
        from .html import fusion_report

        page = fusion_report(report, method)  # report.html and its figures as PNG files beside it
        result.config["base_model_name_or_path"] = ref.adapter_base_name  # a Hub id, never a .gguf or cache path
        texts = {**job.record, **fused_card(job, plans, result.config, report, method, ref, terms),
                 "report.html": page.render()}
        write_adapter(job.output, result.config, result.tensors, force=job.force,
                      extra_files={"fusion_report.json": report}, extra_texts=texts, extra_bytes=page.pngs)
    for plan in plans:
        plan.close()
    return report


def _with_defaults(job: FuseJob) -> dict:
    """The job's settings sections, with the defaults of those the method reads and the job left out (a job made in
    code, say), so the report records every setting the run used."""
    from hf_common.errors import HFError

    settings = dict(job.settings)
    for cls in get_method(job.method).settings_classes:
        if settings.get(cls.section) is None:
            try:
                settings[cls.section] = cls()
            except HFError:  # a section with required settings (distill's prompts): the method's preflight says so
                pass
    return settings


def _check_sharding(job: FuseJob, procs) -> bool:
    if not sharding_requested(job.shard_base_model):
        return False
    if not procs.distributed:
        raise ConfigError("--shard-base-model needs several processes (accelerate launch or torchrun)")
    if len(job.plans) > 1:
        raise ConfigError("--shard-base-model fuses one plan at a time (sequential pipelines are not sharded)")
    if not get_method(job.method).shardable:
        raise ConfigError(f"--shard-base-model: --method {job.method} reads whole activations of both base models; "
                          "run it unsharded")
    return True


def method_settings(job: FuseJob) -> dict:
    """The chosen method's settings sections as plain data (report, fingerprint)."""
    used = get_method(job.method).sections_used(job.settings)
    return {name: json.loads(json.dumps(asdict(value), default=str)) for name, value in job.settings.items()
            if value is not None and name in used}
