"""The analysis report: one JSON object (the CI contract, schemas/analysis-report.schema.json)
and its rich rendering.  ``hf-analyze show`` renders the copy stored in the plan."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hf_common.adapter import Adapter
from hf_common.console import Console

from . import tokens
from .planner import Analysis

REPORT_FORMAT = "heterofusion-analysis"
REPORT_VERSION = 1


def adapter_summary(adapter: Adapter) -> dict:
    suffixes = sorted({(adapter.family.locate(m) or (0, m))[1] for m in adapter.modules})
    d_ins = Counter(module.d_in for module in adapter.modules.values())
    first = next(iter(adapter.modules.values()))
    return {
        "path": str(adapter.folder),
        "base_model": adapter.base_model,
        "family": adapter.family.name,
        "family_from": adapter.family_note,
        "n_layers": adapter.n_layers,
        "n_layers_from": adapter.n_layers_note,
        "hidden_size": adapter.dims.hidden or d_ins.most_common(1)[0][0],
        "rank": adapter.rank,
        "lora_alpha": adapter.lora_alpha,
        "use_rslora": bool(adapter.config.get("use_rslora")),
        "dtype": adapter.tensors.dtype(first.a_key),
        "n_modules": len(adapter.modules),
        "modules": suffixes,
    }


def build_report(analysis: Analysis) -> dict:
    bs = analysis.block_size
    groups = []
    for group in analysis.groups:
        n_target = sum(len(tokens.token_ranges(u.module.d_in, u.d_out, bs)) for u in group.target_units)
        per_source = [sum(len(tokens.token_ranges(s.unit.module.d_in, s.unit.d_out, bs))
                          for s in (group.source_units[i] for i in context)) for context in group.contexts]
        rank_changes = Counter(
            "same" if s.unit.module.rank == s.target_rank else
            ("zero-padded" if s.unit.module.rank < s.target_rank else "truncated-svd")
            for s in group.source_units)
        groups.append({
            "name": group.name,
            "role": group.role,
            "rank": group.rank,
            "n_modules": len(group.target_units),
            "n_source_modules": len(group.source_units),
            "n_target_tokens": n_target,
            "n_source_tokens": sum(per_source),
            "max_source_context": max(per_source),
            "sources": sorted({s.source for s in group.source_units}),
            "source_rank": dict(rank_changes),
        })
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "compatible": analysis.compatible,
        "settings": {
            "block_size": bs,
            "block_size_setting": analysis.settings.block_size,
            "transfer_ratio": analysis.settings.transfer_ratio,
            "layer_map": analysis.settings.layer_map,
        },
        "target": adapter_summary(analysis.target),
        "sources": [adapter_summary(s) for s in analysis.sources],
        "layer_maps": [[list(pair) for pair in pairs] for pairs in analysis.layer_maps],
        "groups": groups,
        "unmatched": analysis.unmatched,
        "licenses": analysis.licenses,
        "warnings": analysis.warnings,
    }


def _compress(pairs: list[list[int]]) -> str:
    """``0-3→2-5, 7→9``: runs of consecutive pairs with the same shift."""
    if not pairs:
        return "(empty)"
    runs, start = [], 0
    for i in range(1, len(pairs) + 1):
        if i == len(pairs) or pairs[i][0] != pairs[i - 1][0] + 1 or pairs[i][1] != pairs[i - 1][1] + 1:
            a, b = pairs[start], pairs[i - 1]
            runs.append(f"{a[0]}→{a[1]}" if a == b else f"{a[0]}-{b[0]}→{a[1]}-{b[1]}")
            start = i
    return ", ".join(runs)


def _runs(numbers: list[int]) -> str:
    """``0-11, 14``: consecutive numbers as ranges."""
    numbers, parts, start = sorted(set(numbers)), [], 0
    for i in range(1, len(numbers) + 1):
        if i == len(numbers) or numbers[i] != numbers[i - 1] + 1:
            a, b = numbers[start], numbers[i - 1]
            parts.append(str(a) if a == b else f"{a}-{b}")
            start = i
    return ", ".join(parts)


def _untouched_rows(unmatched: list[dict], spell_out: int = 4) -> list[list[str]]:
    """One row per reason: few modules are named, many are summarised by layers and roles (the JSON lists all)."""
    by_reason: dict[str, list[dict]] = {}
    for entry in unmatched:
        by_reason.setdefault(entry["reason"], []).append(entry)
    rows = []
    for reason, entries in by_reason.items():
        layers = [e["layer"] for e in entries if e.get("layer") is not None]
        if len(entries) <= spell_out or len(layers) < len(entries):
            rows.extend([e["module"], reason] for e in entries)
            continue
        roles = sorted({e["role"] for e in entries if e.get("role")})
        rows.append([f"{len(entries)} modules: layers {_runs(layers)}" + (f" ({', '.join(roles)})" if roles else ""), reason])
    return rows


def render(report: dict, console: Console) -> None:
    adapters = [("target", report["target"])] + [(f"source {i}", s) for i, s in enumerate(report["sources"])]
    console.table(
        "Adapters",
        ["", "family", "layers", "hidden", "rank", "alpha", "dtype", "modules", "folder"],
        [[name, a["family"], a["n_layers"], a["hidden_size"], a["rank"], a["lora_alpha"], a["dtype"],
          f"{a['n_modules']}: {','.join(m.rsplit('.', 1)[-1].removesuffix('_proj') for m in a['modules'])}", Path(a["path"]).name]
         for name, a in adapters],
    )
    settings = report["settings"]
    console.table(
        f"Layer maps ({settings['layer_map']}, transfer ratio {settings['transfer_ratio']})",
        ["source", "pairs", "target layer → source layer"],
        [[i, len(pairs), _compress(pairs)] for i, pairs in enumerate(report["layer_maps"])],
    )
    short = {"same": "same", "zero-padded": "padded", "truncated-svd": "svd"}
    console.table(
        f"Groups (block size {settings['block_size']})",
        ["group", "modules", "target tokens", "source tokens", "sources", "source rank"],
        [[g["name"], g["n_modules"], g["n_target_tokens"], g["n_source_tokens"], ",".join(map(str, g["sources"])),
          " ".join(f"{short.get(k, k)}:{v}" for k, v in g["source_rank"].items())] for g in report["groups"]],
    )
    if report["unmatched"]:
        console.table("Target modules left untouched", ["modules", "reason"], _untouched_rows(report["unmatched"]))
    if report.get("licenses"):
        console.table("Licences (as the model cards write them; never guessed)",
                      ["input", "adapter licence", "base model", "base model licence"],
                      licence_rows(report))
    for warning in report["warnings"]:
        console.warning(warning)
    if report["compatible"]:
        n = sum(g["n_modules"] for g in report["groups"])
        console.success(f"compatible: {len(report['groups'])} groups, {n} target modules can be fused")
    else:
        console.error("nothing can be fused: no target module has a matching source module")


def licence_rows(report: dict) -> list[list[str]]:
    """The licence table's rows, in the words hf-fuse's model cards use (``hf_common.terms.licence_text``)."""
    from hf_common.terms import licence_text

    return [[f"{e['role']}{'' if e['index'] is None else ' ' + str(e['index'])}", licence_text(e["license"]),
             e["card_base_model"] or e["base_model"] or "-", licence_text(e["base_model_license"])]
            for e in report["licenses"]]
