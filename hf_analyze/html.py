"""``hf-analyze --report FILE.html``: the analysis as a page a person reads.

Per source, its layer map drawn as target layer against source layer; per group, the spectra of the
target's and each source's tokens (the descriptors: each token's singular values, mean over tokens,
A and B tokens apart); the adapters, groups, untouched modules, licences and warnings as tables.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from hf_common.html_report import HtmlReport, new_figure, whole_number_ticks

from .report import _untouched_rows, licence_rows

# group name -> {"target": (descriptors, is_b), "source K": (descriptors, is_b), ...}
Spectra = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]


def spectra(group_names: list[str], array: Callable[[str, str], np.ndarray]) -> Spectra:
    """Each group's descriptors per side (``array(group, key)`` reads a plan or an in-memory group)."""
    out: Spectra = {}
    for name in group_names:
        sides = {"target": (array(name, "target/descriptors"), array(name, "target/token_is_b").astype(bool))}
        desc, is_b = array(name, "source/descriptors"), array(name, "source/token_is_b").astype(bool)
        source_of_token = array(name, "source/unit_source")[array(name, "source/token_unit")]
        for source in sorted(set(source_of_token.tolist())):
            keep = source_of_token == source
            sides[f"source {source}"] = (desc[keep], is_b[keep])
        out[name] = sides
    return out


def plan_report(report: dict, group_spectra: Spectra | None, origin: str) -> HtmlReport:
    page = HtmlReport("hf-analyze: fusion plan report", origin)
    verdict = (f"compatible: {len(report['groups'])} groups, {sum(g['n_modules'] for g in report['groups'])} target "
               "modules can be fused" if report["compatible"] else "nothing can be fused")
    page.paragraph(verdict)
    for warning in report["warnings"]:
        page.warning(warning)
    page.heading("Adapters")
    adapters = [("target", report["target"])] + [(f"source {i}", s) for i, s in enumerate(report["sources"])]
    page.table(["", "family", "base model", "layers", "hidden", "rank", "alpha", "dtype", "modules", "folder"],
               [[name, a["family"], a.get("base_model") or "-", a["n_layers"], a["hidden_size"], a["rank"],
                 a["lora_alpha"], a["dtype"], a["n_modules"], a["path"]] for name, a in adapters])
    settings = report["settings"]
    page.heading(f"Layer maps ({settings['layer_map']}, transfer ratio {settings['transfer_ratio']})")
    for index, pairs in enumerate(report["layer_maps"]):
        source = report["sources"][index]
        page.figure(f"layer-map-source{index}.png",
                    f"Source {index} ({source['family']}, {source['n_layers']} layers): each aligned pair is a point, "
                    f"target layer against source layer ({len(pairs)} pairs)",
                    lambda pairs=pairs, source=source: _layer_map_figure(pairs, report["target"]["n_layers"],
                                                                         source["n_layers"]))
    page.heading(f"Groups (block size {settings['block_size']})")
    page.table(["group", "role", "rank", "target modules", "source modules", "target tokens", "source tokens", "sources"],
               [[g["name"], g["role"], g["rank"], g["n_modules"], g["n_source_modules"], g["n_target_tokens"],
                 g["n_source_tokens"], ", ".join(map(str, g["sources"]))] for g in report["groups"]])
    if group_spectra:
        page.heading("Spectra: each token's singular values, mean over the group's tokens")
        for name, sides in group_spectra.items():
            page.figure(f"spectra-{_slug(name)}.png", f"Group {name}: target and source token spectra (log scale)",
                        lambda sides=sides, name=name: _spectra_figure(name, sides))
    if report["unmatched"]:
        page.heading("Target modules left untouched")
        page.table(["modules", "reason"], _untouched_rows(report["unmatched"]))
    if report.get("licenses"):
        page.heading("Licences (as the model cards write them; never guessed)")
        page.table(["input", "adapter licence", "base model", "base model licence"],
                   licence_rows(report))
    return page


def _layer_map_figure(pairs: list[list[int]], n_target: int, n_source: int):
    fig, (ax,) = new_figure(5.0, 4.2)
    if pairs:
        t, s = zip(*pairs)
        ax.plot(t, s, "o-", markersize=4)
    ax.set_xlim(-0.5, max(n_target, 1) - 0.5)
    ax.set_ylim(-0.5, max(n_source, 1) - 0.5)
    ax.set_xlabel("target layer")
    ax.set_ylabel("source layer")
    whole_number_ticks(ax.xaxis, ax.yaxis)  # layers, not fractions of one
    ax.grid(alpha=0.3)
    return fig


def _spectra_figure(name: str, sides: dict[str, tuple[np.ndarray, np.ndarray]]):
    fig, axes = new_figure(9.0, 3.4, ncols=2)
    for ax, (part, want_b) in zip(axes, (("A tokens", False), ("B tokens", True))):
        for label, (desc, is_b) in sides.items():
            chosen = desc[is_b == want_b]
            if len(chosen):
                mean = chosen.mean(axis=0)
                ax.plot(np.arange(1, len(mean) + 1), np.maximum(mean, 1e-12), "o-", markersize=3,
                        label=f"{label} ({len(chosen)} tokens)")
        ax.set_yscale("log")
        ax.set_title(f"{name}: {part}")
        ax.set_xlabel("singular value index")
        whole_number_ticks(ax.xaxis)
        ax.set_ylabel("singular value (mean over tokens)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def write_plan_report(path: Path, report: dict, group_spectra: Spectra | None, origin: str, *, force: bool) -> None:
    plan_report(report, group_spectra, origin).write(path, force=force, what="HTML report")
