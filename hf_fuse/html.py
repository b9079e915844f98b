"""``report.html`` and its PNGs in every fused adapter folder: what the run did, drawn.

What every method shares: settings, the adapters fused, per task the loss and its terms; a method adds its own
sections through its hooks (``html_section``, ``html_task``: the HyperNet's α, attention and Eq. 11 figures).
"""

from __future__ import annotations

import html
import json

from hf_common.html_report import HtmlReport, new_figure, whole_number_ticks

from .report import extra_terms

OUTSIDE = {"fontsize": 7, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}  # legend off the data


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
        _task(page, index, task, method)
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


def _task(page: HtmlReport, index: int, task: dict, method) -> None:
    n = index + 1
    page.heading(f"Task {n}: {task['plan']} ({task['steps']} optimiser steps)")
    history = task["history"]
    if history:
        terms = [method.loss_terms.get(key, key) for key in extra_terms(history[0]) if any(h.get(key) for h in history)]
        page.figure(f"task{n}-loss.png", "Training loss per optimiser step: " + (
                    f"left, the total and its language-model (LM) part; right, what {' + '.join(terms)} adds to the "
                    "total, as weighted in it (total − LM; its own scale)" if terms else
                    "the language-model (LM) loss, the whole of the total here"), lambda: _loss(history, terms))
    method.html_task(page, index, task)


def _loss(history: list[dict], terms: list[str]):
    """Total and LM on one axis (the total drawn wide beneath, so a total equal to LM stays visible); the weighted
    extra terms (total − LM) on a second panel of their own scale: drawn unweighted beside the loss, an RDM of 0.25
    that adds 0.001 to the total would look like a quarter of it."""
    fig, axes = new_figure(11.0 if terms else 7.0, 3.6, ncols=2 if terms else 1)
    steps = [h["step"] for h in history]
    if terms:
        axes[0].plot(steps, [h["loss"] for h in history], "-", linewidth=3.5, alpha=0.35, label="total")
    axes[0].plot(steps, [h["lm"] for h in history], "-", linewidth=1.2, label="LM")
    finish_lines(fig, axes[0], "optimiser step", "loss")
    if terms:
        axes[1].plot(steps, [h["loss"] - h["lm"] for h in history], "-", color="C2", label=" + ".join(terms))
        axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        finish_lines(fig, axes[1], "optimiser step", "added to the total")
    return fig


def finish_lines(fig, ax, xlabel: str, ylabel: str, **legend):
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
