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


def harness_report(results: dict) -> HtmlReport:
    """``hf-eval harness``'s page: every adapter's lm-evaluation-harness metrics, each fusion minus its twin."""
    adapters = results["adapters"]
    s = results["settings"]
    shots = "the tasks' own shots" if s["num_fewshot"] is None else f"{s['num_fewshot']}-shot"
    page = HtmlReport("hf-eval: lm-evaluation-harness report",
                      f"{len(adapters)} adapters · tasks {', '.join(results['tasks'])} · lm-eval "
                      f"{results.get('lm_eval_version') or '?'} · {shots} · limit {s['limit'] or 'none'} · chat template "
                      f"{'on' if s['apply_chat_template'] else 'off'}")
    columns, rows = metric_rows(results)
    page.heading("Metrics per adapter (± the harness's standard error)")
    page.table(["adapter", *columns, "samples", "seconds"],
               [[*row, ", ".join(f"{t}: {n.get('effective', n) if isinstance(n, dict) else n}"
                                 for t, n in a["n_samples"].items()), a["seconds"]]
                for row, a in zip(rows, adapters.values())])
    if results.get("differences"):
        page.heading("From the source experts: each fusion minus its null-source twin")
        page.paragraph("Per task and metric the harness scores per sample: the mean over the same documents of the "
                       "fusion's value minus its twin's, in brackets a 95 % paired-bootstrap interval (one run each).")
        page.table(["fusion − twin", "method", "task", "metric", "difference", "documents"],
                   [[f"{d['adapter']} − {d['control']}", d["method"], task, metric,
                     f"{v['diff']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}]", v["n"]]
                    for d in results["differences"] for task, metrics in d["difference"].items()
                    for metric, v in metrics.items()])
    page.heading("Samples")
    page.paragraph("One JSON line per scored document, as the harness logs it (its arguments, responses and metrics).")
    tasks = sorted({t for a in adapters.values() for t in a["n_samples"]})
    page.table(["adapter", "folder", *tasks],
               [[name, a["adapter"] or "(the base model alone)",
                 *[page.link(f"samples/{name}/{t}.jsonl", f"{t}.jsonl") if t in a["n_samples"] else "-" for t in tasks]]
                for name, a in adapters.items()], raw_html=True)
    return page


def metric_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """(columns, rows) of every adapter's metrics: one column per task and metric (the harness's 'acc,none' keys)."""
    keys = []
    for entry in results["adapters"].values():
        for task, metrics in entry["results"].items():
            keys += [(task, k) for k, v in metrics.items()
                     if "," in k and "_stderr" not in k and is_number(v) and (task, k) not in keys]
    rows = []
    for name, entry in results["adapters"].items():
        cells = [name]
        for task, key in keys:
            metrics = entry["results"].get(task, {})
            value, stderr = metrics.get(key), metrics.get(key.replace(",", "_stderr,", 1))
            cells.append("-" if value is None else f"{value:.3f}" + (f" ± {stderr:.3f}" if is_number(stderr) else ""))
        rows.append(cells)
    return [f"{task} {key.split(',')[0]}" for task, key in keys], rows


def is_number(value) -> bool:
    """A finite number (a harness metric; the harness also reports names and 'N/A')."""
    return isinstance(value, (int, float, np.number)) and np.isfinite(float(value))
