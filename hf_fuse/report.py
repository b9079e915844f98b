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
        alphas = list(record["alpha"].values())
        if self._wide:
            metrics = (f"loss {record['loss']:.4f} · lm {record['lm']:.4f} · rdm {record['rdm']:.4f} · "
                       + (f"α {sum(alphas) / len(alphas):.3f} · " if alphas else "") + f"lr {record['lr']:.2e}")
        else:
            metrics = f"loss {record['loss']:.3f} lr {record['lr']:.1e}"
        self._bar.update(self._tasks[task], completed=record["step"], metrics=metrics)


def render(report: dict, console: Console, method) -> None:
    """The summary of ``report``; ``method`` (the run's ``FusionMethod``) adds its own lines."""
    console.info("ΔB/B = ‖ΔB‖_F/‖B_t‖_F over the group; Eq11 = max over modules of s·|α|·‖ΔB‖_F·‖A_t‖_2 (bound) "
                 "and ‖s·α·ΔB·A_t‖_F (actual); attn s<k> = mean attention on source k")
    for index, task in enumerate(report["tasks"]):
        if not task["groups"]:  # a method that trains the LoRA itself (distill's LoRA student)
            console.info(f"Task {index + 1}: {task['plan']} ({task['steps']} steps of LoRA training)")
        else:
            _group_table(index, task, console)
        if task["history"]:
            first, last = task["history"][0], task["history"][-1]
            console.info(f"loss {first['loss']:.4f} → {last['loss']:.4f} (LM {first['lm']:.4f} → {last['lm']:.4f}, "
                         f"RDM {first['rdm']:.4f} → {last['rdm']:.4f})")
    for line in method.summary_lines(report):
        console.info(line)
    memory = f"{report['peak_memory_mib']:.0f} MiB peak RSS"
    if "peak_gpu_memory_mib" in report:
        memory += f", {report['peak_gpu_memory_mib']:.0f} MiB peak GPU"
    console.info(f"{report['device']} · {report['dtype']} · {report['time_s']:.1f} s · {memory}")


def _group_table(index: int, task: dict, console: Console) -> None:
    sources = sorted({s for g in task["groups"].values() for s in g["attention_per_source"]})
    console.table(
        f"Task {index + 1}: {task['plan']} ({task['steps']} steps, {task['hypernet_parameters'] / 1e6:.1f} M parameters)",
        ["group", "mods", "α", "ΔB/B", "αΔB/B", "Eq11 bound", "Eq11 actual"] + [f"attn s{s}" for s in sources],
        [[name, g["n_modules"], f"{g['alpha']:.4f}", f"{g['delta_b_over_b']:.4f}", f"{g['alpha_delta_b_over_b']:.4f}",
          f"{g['eq11_bound_max']:.4g}", f"{g['eq11_actual_max']:.4g}"]
         + [f"{g['attention_per_source'].get(s, 0.0):.2f}" for s in sources] for name, g in task["groups"].items()],
    )
