"""``report.html`` and its PNGs in every fused adapter folder: what the run did, drawn.

Per task: loss, LM and RDM curves; α of every group over the steps; mean attention per source and
group (a heatmap); ‖αΔB‖_F/‖B_t‖_F per layer and group; the Eq. 11 bound beside the actual change of
every module.  Methods that train the LoRA itself (distill's LoRA student) have curves only.
"""

from __future__ import annotations

import html
import json

import numpy as np

from hf_common.html_report import HtmlReport, new_figure


def fusion_report(report: dict, method) -> HtmlReport:
    """The page of ``report``; ``method`` (the run's ``FusionMethod``) adds its own section."""
    page = HtmlReport(f"hf-fuse: fused adapter report ({report.get('method', 'hypernet')})",
                      f"{report['output']} · base model {report['base_model']} · {report['device']} · {report['dtype']} · "
                      f"{report['time_s']:.1f} s · {report['peak_memory_mib']:.0f} MiB peak RSS")
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
    method.html_section(page, report)
    for index, task in enumerate(report["tasks"]):
        _task(page, index, task)
    page.heading("The full fusion report")
    page.paragraph("fusion_report.json beside this page holds every number above; its settings:")
    page.parts.append(f"<pre>{html.escape(json.dumps(report['settings'], indent=2))}</pre>")
    return page


def _task(page: HtmlReport, index: int, task: dict) -> None:
    n = index + 1
    page.heading(f"Task {n}: {task['plan']} ({task['steps']} optimiser steps)")
    history = task["history"]
    if history:
        page.figure(f"task{n}-loss.png", "Training loss per optimiser step: total, language-model (LM) and RDM terms",
                    lambda: _curves(history, [("loss", "total"), ("lm", "LM"), ("rdm", "RDM")], "loss"))
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


def _curves(history: list[dict], fields: list[tuple[str, str]], ylabel: str):
    fig, (ax,) = new_figure()
    steps = [h["step"] for h in history]
    for (key, label), style in zip(fields, ("--", "-", "-")):  # total ≈ LM when the RDM weight is small: dashed
        ax.plot(steps, [h[key] for h in history], style, label=label)
    return _lines(fig, ax, "optimiser step", ylabel)


def _alpha(history: list[dict]):
    fig, (ax,) = new_figure()
    steps = [h["step"] for h in history]
    for group in history[0]["alpha"]:
        ax.plot(steps, [h["alpha"].get(group, np.nan) for h in history], label=group)
    return _lines(fig, ax, "optimiser step", "α", fontsize=7, ncol=2)


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
    return _lines(fig, ax, "target layer", "‖αΔB‖ / ‖B_t‖", fontsize=7, ncol=2)


def _eq11(groups: dict[str, dict]):
    fig, (ax,) = new_figure(5.5, 4.5)
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
    ax.legend(fontsize=7)
    return fig


def _lines(fig, ax, xlabel: str, ylabel: str, **legend):
    """The finish of a line plot over steps or layers: whole-number ticks, labels, grid, legend."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(**legend)
    return fig
