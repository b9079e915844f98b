"""What the HyperNet adds to hf-fuse's outputs (used by every method that trains it: ``hypernet``,
``project-hypernet``, ``distill --student hypernet``): per task, a console table of every group (α, ‖ΔB‖/‖B‖, the
paper's Eq. 11 bound and the actual change, attention per source) and the report page's α curves, attention heatmap,
update by layer and Eq. 11 scatter."""

from __future__ import annotations

import numpy as np

from hf_common.console import Console
from hf_common.html_report import HtmlReport, new_figure

from ...html import OUTSIDE, finish_lines

LEGEND = ("ΔB/B = ‖ΔB‖_F/‖B_t‖_F over the group; Eq11 = max over modules of s·|α|·‖ΔB‖_F·‖A_t‖_2 (bound) and "
          "‖s·α·ΔB·A_t‖_F (actual); attn s<k> = mean attention on source k")


class HyperNetReport:
    """The report hooks of a method that trains HyperNets (mixed into its ``FusionMethod``): the group tables after
    the run, the HyperNet's figures on the report page; a task that trained none shows nothing of them."""

    def render_summary(self, report: dict, console: Console) -> None:
        render_groups(report, console)
        super().render_summary(report, console)

    def html_task(self, page: HtmlReport, index: int, task: dict) -> None:
        html_groups(page, index, task)


def render_groups(report: dict, console: Console) -> None:
    """The console tables of every task that trained HyperNets."""
    tasks = [(i, t) for i, t in enumerate(report["tasks"]) if t.get("groups")]
    if tasks:
        console.info(LEGEND)
    for index, task in tasks:
        _group_table(index, task, console)


def html_groups(page: HtmlReport, index: int, task: dict) -> None:
    """The report page's HyperNet section of one task (nothing for a task that trained no HyperNet)."""
    n = index + 1
    history = task["history"]
    groups = task.get("groups")
    if not groups:
        return
    if history and history[0].get("alpha"):
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
    return finish_lines(fig, ax, "optimiser step", "α", **OUTSIDE)


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
    return finish_lines(fig, ax, "target layer", "‖αΔB‖ / ‖B_t‖", **OUTSIDE)


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
    ax.legend(**OUTSIDE)
    return fig



def _group_table(index: int, task: dict, console: Console) -> None:
    sources = sorted({s for g in task["groups"].values() for s in g["attention_per_source"]})
    console.table(
        f"Task {index + 1}: {task['plan']} ({task['steps']} steps, {task['hypernet_parameters'] / 1e6:.1f} M parameters)",
        ["group", "mods", "α", "ΔB/B", "αΔB/B", "Eq11 bound", "Eq11 actual"] + [f"attn s{s}" for s in sources],
        [[name, g["n_modules"], f"{g['alpha']:.4f}", f"{g['delta_b_over_b']:.4f}", f"{g['alpha_delta_b_over_b']:.4f}",
          f"{g['eq11_bound_max']:.4g}", f"{g['eq11_actual_max']:.4g}"]
         + [f"{g['attention_per_source'].get(s, 0.0):.2f}" for s in sources] for name, g in task["groups"].items()],
    )
