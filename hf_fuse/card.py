"""The fused adapter's model card and the terms of its inputs: which input reached the weights, how, and under which
licence (:mod:`hf_common.terms`).  Inputs are named by Hub id, else by folder name, beside the sha256 of their
files: a card travels to a Hub, so it names no folder of this machine (``hf-fuse.config.yaml`` keeps the paths)."""

from __future__ import annotations

from hf_common.plan import Plan
from hf_common.terms import InputTerms, front_matter, licence_file, notices, public_name
from hf_runtime.model import BaseModelRef, model_license, resolve_base_model

from .job import FuseJob
from .methods import FusionMethod

TARGET_RELATIONS = ("the fused adapter starts from its weights", "the fused adapter is a delta on it")


def fusion_terms(plans: list[Plan], ref: BaseModelRef, method: FusionMethod) -> list[InputTerms]:
    """Every input of the run's last plan (the one whose sources the output holds) with its licence: the adapters'
    as hf-analyze read them from their cards (the plan's licence table), the base models' from their own files where
    this run loads them (the target's, and the sources' a method loads), else as hf-analyze found them."""
    plan = plans[-1]
    inputs = plan.provenance["inputs"]
    table = {(e["role"], e["index"]): e for e in plan.report.get("licenses", [])}
    loaded = method.source_models()
    out = []
    for k, entry in enumerate(inputs):
        index = None if entry["role"] == "target" else k - 1
        found = table.get((entry["role"], index), {})
        who = "target" if index is None else f"source {index}"
        adapter_rel, base_rel = TARGET_RELATIONS if index is None else type(method).source_relation
        digests = tuple(f["sha256"] for f in entry.get("files", []) if f["name"].endswith((".safetensors", ".bin")))
        out.append(InputTerms(f"{who} adapter", public_name(entry["path"]), found.get("license"), adapter_rel, digests))
        if index is None:
            base_name, base_licence = ref.hub_id or public_name(ref.label), model_license(ref)
        elif index in loaded:
            source_ref = resolve_base_model(loaded[index])
            base_name, base_licence = source_ref.hub_id or public_name(loaded[index]), model_license(source_ref)
        else:
            base_name = public_name(found.get("card_base_model") or entry.get("base_model"))
            base_licence = found.get("base_model_license")
        out.append(InputTerms(f"{who} base model", base_name, base_licence, base_rel))
    return out


def fused_card(job: FuseJob, plans: list[Plan], config: dict, report: dict, method: FusionMethod, ref,
               terms: list[InputTerms]) -> dict[str, str]:
    """The fused adapter's ``README.md`` (method, inputs by name and checksum, settings, the terms of the inputs) and,
    when the inputs' licences differ, the ``LICENSE.md`` its ``license_link`` names."""
    from hf_common.model_card import card, gguf_loading_note

    inputs = plans[-1].provenance["inputs"]
    target = inputs[0]
    sources = [f"{e['family']} ({public_name(e['path'])}; base model {public_name(e.get('base_model'))})"
               for e in inputs[1:]]
    steps = sum(task["steps"] for task in report["tasks"])
    details = {"method": report["method"], "target adapter": f"{target['family']} ({public_name(target['path'])})",
               "sources": sources, "plans": [f"{p.path.name} (sha256 {p.checksum[:16]}…)" for p in plans],
               "settings": f"lr {job.train.lr}, {steps} optimiser steps, batch {job.train.batch_size} x "
                           f"{job.train.grad_accum}, seed {job.train.seed}", "replay": [p.name for p in job.replay],
               **method.card_details(report),
               "fusion report": "fusion_report.json; report.html (plots)"}
    control = any(e.get("null_source") for e in inputs)
    title = f"Fused LoRA adapter ({report['method']})"
    how = (f"Made by `hf-fuse --method {report['method']}`: what the source experts know, fused into the target adapter "
           "for the target's base model.")
    if control:  # fused from null-source noise: a control run, never a model to use
        title = f"NULL-SOURCE CONTROL, not for use: {title}"
        how = ("**A control, not a model to use**: at least one source was a null source (`hf-eval null-source`, noise of "
               "the expert's norms), so what this adapter gains over the target came from the replay data. " + how)
    how += gguf_loading_note(ref.gguf_file, ref.hub_id)
    warned = notices(terms, report["method"])
    texts = {"README.md": card(title=title, base_model=config.get("base_model_name_or_path"), how=how, details=details,
                               tags=[f"fusion-{report['method']}", target["family"], *{e["family"] for e in inputs[1:]},
                                     *(["null-source-control"] if control else [])], terms=(terms, warned))}
    if front_matter(terms).get("license") == "other":
        texts["LICENSE.md"] = licence_file(terms, warned)
    return texts
