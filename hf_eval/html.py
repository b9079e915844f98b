"""``report.html`` in every ``hf-eval evaluate`` output folder: per task, precision and F1 of every adapter
side by side (controls and baselines are adapters too), and links to the saved predictions."""

from __future__ import annotations

import numpy as np

from hf_common.html_report import HtmlReport, new_figure

from .controls import format_interval


def evaluation_report(results: dict) -> HtmlReport:
    adapters = results["adapters"]
    tasks = sorted({t for a in adapters.values() for t in a["tasks"]})
    s = results["settings"]
    page = HtmlReport("hf-eval: evaluation report",
                      f"{len(adapters)} adapters · {len(tasks)} tasks · up to {s['max_new_tokens']} new tokens, "
                      f"greedy · metric {s['metric']}")
    page.heading("Precision and F1 per task (%)")
    for metric in ("precision", "f1"):
        page.figure(f"{metric}.png", f"{'Precision' if metric == 'precision' else 'F1'} per task, every adapter side by side",
                    lambda metric=metric: _bars(adapters, tasks, metric))
    counts = {t: sorted({a["tasks"][t]["n_examples"] for a in adapters.values() if t in a["tasks"]}) for t in tasks}
    page.table(["adapter", *[f"{t} P / R / F1 (n = {'/'.join(map(str, counts[t]))})" for t in tasks],
                "macro P / R / F1", "seconds"],
               [[name, *[_prf(a["tasks"].get(t)) for t in tasks], _prf(a["macro"]), a["seconds"]]
                for name, a in adapters.items()])
    if results.get("differences"):
        page.heading("From the source experts: each fusion minus its null-source twin")
        page.paragraph("F1 points of the fusion minus those of the control made by the same method with the source "
                       "experts replaced by noise (same replay data): what the experts gave. In brackets, a 95 % "
                       "paired-bootstrap interval over the held-out examples (one run each: seed spread not included).")
        page.table(["fusion − twin", "method", *[f"{t} (n = {'/'.join(map(str, counts[t]))})" for t in tasks], "macro"],
                   [[f"{d['adapter']} − {d['control']}", d["method"], *[format_interval(d["difference"].get(t)) for t in tasks],
                     format_interval(d["difference"]["macro"])] for d in results["differences"]])
    page.heading("Predictions")
    page.paragraph("One JSON line per example: the prompt's answer, the model's, and what was counted.")
    page.table(["adapter", "folder", *tasks],
               [[name, a["adapter"] or "(the base model alone)",
                 *[page.link(f"predictions/{name}/{t}.jsonl", f"{t}.jsonl") if t in a["tasks"] else "-" for t in tasks]]
                for name, a in adapters.items()], raw_html=True)
    return page



def _prf(score: dict | None) -> str:
    if not score:
        return "-"
    return " / ".join(f"{100 * score[k]:.1f}" for k in ("precision", "recall", "f1"))


def _bars(adapters: dict[str, dict], tasks: list[str], metric: str):
    labels = [*tasks, "macro"]
    fig, (ax,) = new_figure(max(6.0, 1.4 * len(labels) * max(1, len(adapters)) ** 0.5), 3.8)
    width = 0.8 / max(1, len(adapters))
    x = np.arange(len(labels))
    for i, (name, entry) in enumerate(adapters.items()):
        values = [100 * entry["tasks"][t][metric] if t in entry["tasks"] else np.nan for t in tasks]
        values.append(100 * entry["macro"][metric])
        bars = ax.bar(x + (i - (len(adapters) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=6)
    ax.set_xticks(x, labels)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)
    # below the axes, off the bars and their labels
    ax.legend(fontsize=7, ncol=min(4, len(adapters)), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    return fig
