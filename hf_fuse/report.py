"""What hf-fuse shows: a live progress bar while training, and a summary of the fusion report."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from hf_common.console import Console


class Progress:
    """Receives ``run``'s events: stage messages and per-step records."""

    def __init__(self, console: Console):
        self.console = console
        # at 80 columns (logs, CI, default terminals) the bar, counts and times keep their room: a narrower bar and
        # only loss and lr beside it; the full metrics from 110 columns on
        self._wide = console.err.width >= 110
        self._bar = RichProgress(TextColumn("[bold]task {task.fields[task_no]}"), BarColumn(bar_width=None if self._wide else 16),
                                 MofNCompleteColumn(), TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=console.err, disable=console.quiet, transient=False)
        self._tasks: dict[object, int] = {}

    def __enter__(self) -> "Progress":
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)

    def event(self, kind: str, payload: object) -> None:
        if kind == "stage":
            if not self.console.quiet:
                self._bar.console.print(str(payload))
            return
        if kind in ("generate", "align", "synthesize"):  # (source, answers / tokens / prompts so far, their total)
            source, done, total = payload
            key = (kind, source)
            if key not in self._tasks:
                what = {"generate": "answers", "align": "aligned tokens", "synthesize": "prompts written"}[kind]
                self._tasks[key] = self._bar.add_task("", total=total, task_no=f"source {source} {what}", metrics="")
            self._bar.update(self._tasks[key], completed=done)
            return
        task, record, total = payload
        if task not in self._tasks:
            self._tasks[task] = self._bar.add_task("", total=total, task_no=task + 1, metrics="")
        alphas = list(record.get("alpha", {}).values())
        if self._wide:
            metrics = (f"loss {record['loss']:.4f} · lm {record['lm']:.4f} · "
                       + "".join(f"{k} {v:.4f} · " for k, v in extra_terms(record).items())
                       + (f"α {sum(alphas) / len(alphas):.3f} · " if alphas else "") + f"lr {record['lr']:.2e}")
        else:
            metrics = f"loss {record['loss']:.3f} lr {record['lr']:.1e}"
        self._bar.update(self._tasks[task], completed=record["step"], metrics=metrics)


COMMON = ("step", "loss", "lm", "lr", "grad_norm", "time_s")


def extra_terms(record: dict) -> dict[str, float]:
    """A step record's loss terms besides the LM loss (a method's own: the HyperNet's RDM, distill's token term)."""
    return {k: v for k, v in record.items() if k not in COMMON and isinstance(v, (int, float))}


def render(report: dict, console: Console, method) -> None:
    """The summary of ``report``: every task's steps and loss, then what ``method`` (the run's ``FusionMethod``)
    adds (its ``render_summary`` hook: the HyperNet's group tables, distill's answer counts)."""
    for index, task in enumerate(report["tasks"]):
        console.info(f"Task {index + 1}: {task['plan']} ({task['steps']} optimiser steps)")
        if task["history"]:
            first, last = task["history"][0], task["history"][-1]
            terms = "".join(f", {k} {first[k]:.4f} → {last.get(k, 0.0):.4f}" for k in extra_terms(first))
            console.info(f"loss {first['loss']:.4f} → {last['loss']:.4f} (LM {first['lm']:.4f} → {last['lm']:.4f}{terms})")
    method.render_summary(report, console)
    memory = f"{report['peak_memory_mib']:.0f} MiB peak RSS"
    if "peak_gpu_memory_mib" in report:
        memory += f", {report['peak_gpu_memory_mib']:.0f} MiB peak GPU"
    console.info(f"{report['device']} · {report['dtype']} · {report['time_s']:.1f} s · {memory}")
