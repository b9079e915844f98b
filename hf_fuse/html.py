"""``report.html`` and its PNGs in every fused adapter folder: what the run did, drawn.

Per task: loss, LM and RDM curves; α of every group over the steps; mean attention per source and
group (a heatmap); ‖αΔB‖_F/‖B_t‖_F per layer and group; the Eq. 11 bound beside the actual change of
every module.  Methods that train the LoRA itself (distill's LoRA student) have curves only.
"""

from __future__ import annotations

import html
import json

import numpy as np

from hf_common.html_report import HtmlReport, new_figure, whole_number_ticks

# the history's extra loss terms, as the objective weights them into the total (hf_runtime.trainer records them by name)
EXTRA_TERMS = {"rdm": "λ·RDM", "token": "W·token-level distance"}
_OUTSIDE = {"fontsize": 7, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}  # legend off the data


def fusion_report(report: dict, method) -> HtmlReport:
    """The page of ``report``; ``method`` (the run's ``FusionMethod``) adds its own section."""
    page = HtmlReport(f"hf-fuse: fused adapter report ({report.get('method', 'hypernet')})",
                      f"{report['output']} · base model {report['base_model']} · {report['device']} · {report['dtype']} · "
                      f"{report['time_s']:.1f} s · {report['peak_memory_mib']:.0f} MiB peak RSS")
    if any(e.get("null_source") for plan in report.get("inputs", []) for e in plan):
        page.warning("NULL-SOURCE CONTROL, not for use: a source of this run was a null source (noise of the expert's "
                     "norms); what this adapter gains over the target came from the replay data")
    for warning in report.get("warnings", []):
        page.warning(warning)
    train = report["settings"]["train"]
    page.heading("Settings")
    page.table(["setting", "value"], [["method", report.get("method", "hypernet")], ["seed", report["seed"]],
                                      ["learning rate", train["lr"]], ["batch × accumulation",
                                                                       f"{train['batch_size']} × {train['grad_accum']}"],
                                      ["replay files", ", ".join(report["settings"]["replay_files"])],
                                      ["replay examples", report["replay"]["n_examples"]],
                                      ["replay answer tokens", report["replay"]["n_answer_tokens"]]])
    _inputs(page, report.get("inputs", []))
    method.html_section(page, report)
    for index, task in enumerate(report["tasks"]):
        _task(page, index, task)
    page.heading("The full fusion report")
    page.paragraph("fusion_report.json beside this page holds every number above; its settings:")
    page.parts.append(f"<pre>{html.escape(json.dumps(report['settings'], indent=2))}</pre>")
    return page


def _inputs(page: HtmlReport, inputs: list[list[dict]]) -> None:
    """The adapters this run fused, per task (plan): the target and every source, null sources marked."""
    if not inputs:
        return
    page.heading("Adapters fused")
    rows = []
    for n, plan in enumerate(inputs, 1):
        for k, e in enumerate(plan):  # the target first, then the sources in their plan order (source 0, 1, ...)
            role = "target" if k == 0 else f"source {k - 1}" + (" (NULL SOURCE: a control)" if e.get("null_source") else "")
            rows.append([n, role, e["path"], e["family"], e.get("base_model") or "-"])
    page.table(["task", "role", "adapter", "family", "base model"], rows)


def _task(page: HtmlReport, index: int, task: dict) -> None:
    n = index + 1
    page.heading(f"Task {n}: {task['plan']} ({task['steps']} optimiser steps)")
    history = task["history"]
    if history:
        terms = [label for key, label in EXTRA_TERMS.items() if any(h.get(key) for h in history)]
        page.figure(f"task{n}-loss.png", "Training loss per optimiser step: " + (
                    f"left, the total and its language-model (LM) part; right, what {' + '.join(terms)} adds to the "
                    "total, as weighted in it (total − LM; its own scale)" if terms else
                    "the language-model (LM) loss, the whole of the total here"), lambda: _loss(history, terms))
    groups = task["groups"]
    if not groups:
        page.paragraph("This method trains the target LoRA itself: no HyperNet, no α, no attention.")
        return
    if history and history[0]["alpha"]:
        page.figure(f"task{n}-alpha.png", "α of every group over the optimiser steps", lambda: _alpha(history))
    page.table(["group", "modules", "α", "‖ΔB‖/‖B‖", "‖αΔB‖/‖B‖", "Eq. 11 bound (max)", "Eq. 11 actual (max)",
                "attention per source"],
               [[name, g["n_modules"], g["alpha"], g["delta_b_over_b"], g["alpha_delta_b_over_b"], g["eq11_bound_max"],
                 g["eq11_actual_max"], ", ".join(f"{s}: {v:.2f}" for s, v in g["attention_per_source"].items())]
                for name, g in groups.items()])
    page.figure(f"task{n}-attention.png", "Mean attention each group's target tokens give to each source's tokens",
                lambda: _attention(groups))
    if all("per_module" in g for g in groups.values()):
        page.figure(f"task{n}-update-by-layer.png", "‖αΔB‖_F / ‖B_t‖_F per target layer (mean over the group's "
                    "modules of that layer)", lambda: _by_layer(groups))
        page.figure(f"task{n}-eq11.png", "Eq. 11 per module: the bound s·|α|·‖ΔB‖_F·‖A_t‖_2 against the actual "
                    "‖s·α·ΔB·A_t‖_F (every point lies on or below the diagonal)", lambda: _eq11(groups))


def _loss(history: list[dict], terms: list[str]):
    """Total and LM on one axis (the total drawn wide beneath, so a total equal to LM stays visible); the weighted
    extra terms (total − LM) on a second panel of their own scale: drawn unweighted beside the loss, an RDM of 0.25
    that adds 0.001 to the total would look like a quarter of it."""
    fig, axes = new_figure(11.0 if terms else 7.0, 3.6, ncols=2 if terms else 1)
    steps = [h["step"] for h in history]
    if terms:
        axes[0].plot(steps, [h["loss"] for h in history], "-", linewidth=3.5, alpha=0.35, label="total")
    axes[0].plot(steps, [h["lm"] for h in history], "-", linewidth=1.2, label="LM")
    _lines(fig, axes[0], "optimiser step", "loss")
    if terms:
        axes[1].plot(steps, [h["loss"] - h["lm"] for h in history], "-", color="C2", label=" + ".join(terms))
        axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        _lines(fig, axes[1], "optimiser step", "added to the total")
    return fig


def _alpha(history: list[dict]):
    fig, (ax,) = new_figure()
    steps = [h["step"] for h in history]
    values = []
    for group in history[0]["alpha"]:
        line = [h["alpha"].get(group, np.nan) for h in history]
        values += line
        ax.plot(steps, line, label=group)
    # the axis starts at 0 (or reaches it for negative α): a change of 0.0008 on an α of 0.3 looks as small as it is,
    # not steep on an axis of 0.3000-0.3008; the exact values are in the table below
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    ax.set_ylim(min(0.0, low) * 1.1, max(0.0, high) * 1.1 or 1.0)
    ax.ticklabel_format(axis="y", useOffset=False)
    return _lines(fig, ax, "optimiser step", "α", **_OUTSIDE)


def _attention(groups: dict[str, dict]):
    names = list(groups)
    sources = sorted({s for g in groups.values() for s in g["attention_per_source"]}, key=int)
    grid = np.array([[groups[n]["attention_per_source"].get(s, 0.0) for s in sources] for n in names])
    fig, (ax,) = new_figure(2.5 + 1.2 * len(sources), 1.2 + 0.35 * len(names))
    image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(sources)), [f"source {s}" for s in sources])
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(sources)):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", color="white" if grid[i, j] < 0.6 else "black")
    fig.colorbar(image, ax=ax)
    return fig


def _by_layer(groups: dict[str, dict]):
    fig, (ax,) = new_figure()
    for name, g in groups.items():
        by_layer: dict[int, list[float]] = {}
        for m in g["per_module"]:
            by_layer.setdefault(m["layer"], []).append(m["alpha_delta_b_over_b"])
        layers = sorted(by_layer)
        ax.plot(layers, [float(np.mean(by_layer[layer])) for layer in layers], "o-", markersize=3, label=name)
    return _lines(fig, ax, "target layer", "‖αΔB‖ / ‖B_t‖", **_OUTSIDE)


def _eq11(groups: dict[str, dict]):
    fig, (ax,) = new_figure(5.0, 4.5)
    top = 0.0
    for name, g in groups.items():
        bound = [m["eq11_bound"] for m in g["per_module"]]
        actual = [m["eq11_actual"] for m in g["per_module"]]
        ax.scatter(bound, actual, s=10, label=name)
        top = max(top, *bound, *actual)
    ax.plot([0, top], [0, top], "k--", linewidth=0.8, label="actual = bound")
    ax.set_xlabel("Eq. 11 bound")
    ax.set_ylabel("actual ‖s·α·ΔB·A_t‖_F")
    ax.grid(alpha=0.3)
    ax.legend(**_OUTSIDE)
    return fig


def _lines(fig, ax, xlabel: str, ylabel: str, **legend):
    """The finish of a line plot over steps or layers: whole-number ticks, labels, grid, legend."""
    whole_number_ticks(ax.xaxis)
    for line in ax.get_lines():  # a few points: marked, so that a run of one step still shows its value
        if len(line.get_xdata()) <= 20 and line.get_marker() in (None, "None", ""):
            line.set_marker("o")
            line.set_markersize(3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(**legend)
    return fig
