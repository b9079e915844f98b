"""Evaluate several adapters of one base model on several held-out tasks; write results atomically."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from hf_common.atomic import atomic_folder
from hf_common.console import Console

from .controls import differences, format_interval, identity
from .generate import EvalConfig, evaluate_file
from .scoring import macro


def evaluate_adapters(model, tokenizer, adapters: dict[str, Path | None], data: list[Path], config: EvalConfig,
                      output: Path, *, force: bool = False, console: Console | None = None,
                      warnings: list[str] | None = None) -> dict:
    """``results.json`` (per adapter: per task P/R/F1 and macro averages) and every prediction as JSONL."""
    from peft import PeftModel
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hf_runtime.distributed import processes

    procs = processes()  # data parallel: examples are shared out (hf_eval.generate), the main process writes
    results = {"format": "heterofusion-evaluation", "version": 1, "settings": config.__dict__, "adapters": {},
               "processes": procs.world, "warnings": list(warnings or [])}
    predictions: dict[tuple[str, str], list[dict]] = {}
    n_examples = sum(min(config.max_examples or 10**9, _count(path)) for path in data) * len(adapters)
    with Progress(TextColumn("[bold]{task.fields[what]}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=(console or Console()).err, disable=console is None or console.quiet) as progress:
        bar = progress.add_task("", total=n_examples // procs.world, what="generating")
        for name, adapter in adapters.items():
            started = time.perf_counter()
            evaluated = PeftModel.from_pretrained(model, adapter) if adapter else model
            evaluated.eval()
            scores = {}
            for path in data:
                progress.update(bar, what=f"{name} · {path.stem}")
                scores[path.stem], predictions[name, path.stem] = evaluate_file(evaluated, tokenizer, path, config,
                                                                                lambda n: progress.advance(bar, n))
            if adapter:
                model = evaluated.unload()
            results["adapters"][name] = {
                "adapter": str(adapter) if adapter else None,
                "tasks": {task: score.summary() for task, score in scores.items()},
                "macro": macro(scores),
                "seconds": round(time.perf_counter() - started, 1),
            }
    for line in cut_warnings(results, config.max_new_tokens):  # logged and recorded, as the fit warnings are
        if procs.is_main:
            logging.getLogger("hf_eval").warning(line)
        results["warnings"].append(line)
    # each fusion beside its null-source twin, where both were evaluated: what came from the source experts
    results["differences"] = differences({name: identity(path) for name, path in adapters.items()}, predictions)
    if procs.is_main:
        _write(output, results, predictions, force)
    return results


def cut_warnings(results: dict, cap: int) -> list[str]:
    """A line for every adapter and task with answers still going at the cap: scored as cut, they lose what they had
    left to say, which lowers recall for reasons that are not the adapter's."""
    return [f"{name} · {task}: {score['cut']} of {score['n_examples']} answers reached --max-new-tokens {cap} without "
            f"ending and are scored as cut; raise it if the task's answers can be that long"
            for name, entry in results["adapters"].items() for task, score in entry["tasks"].items() if score.get("cut")]


def _write(output: Path, results: dict, predictions: dict[tuple[str, str], list[dict]], force: bool) -> None:
    """The results folder, atomically: results.json, every prediction as JSONL, report.html."""
    from .html import evaluation_report

    with atomic_folder(output, force=force, what="results folder") as tmp:
        for (name, task), rows in predictions.items():
            (tmp / "predictions" / name).mkdir(parents=True, exist_ok=True)
            with open(tmp / "predictions" / name / f"{task}.jsonl", "w") as handle:
                handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (tmp / "report.html").write_text(evaluation_report(results).render())


def _count(path: Path) -> int:
    from hf_runtime.data import load_records

    return len(load_records(path))


def _cell(score: dict | None) -> str:
    if not score:
        return "-"
    if score.get("score_name") == "accuracy":
        return f"{100 * score['accuracy']:.1f} acc"
    return f"{100 * score['precision']:.1f} / {100 * score['f1']:.1f}"


def render(results: dict, console: Console) -> None:
    tasks = sorted({t for a in results["adapters"].values() for t in a["tasks"]})
    rows = []
    for name, entry in results["adapters"].items():
        cells = [name]
        for task in tasks:
            score = entry["tasks"].get(task)
            cells.append(_cell(score))
        cells.append(f"{100 * entry['macro']['precision']:.1f} / {100 * entry['macro']['f1']:.1f}")
        rows.append(cells)
    console.table("Held-out scores (precision / F1, %; a label task: accuracy)", ["adapter", *tasks, "macro"], rows)
    if results.get("differences"):
        # one row per pair and task: each interval on one line at 80 columns, however many tasks there are
        console.table("From the source experts: F1 of a fusion minus its null-source twin (points, 95 % interval)",
                      ["fusion", "task", "difference [95 % interval]"],
                      [[f"{k}. {d['adapter']}" if i == 0 else "", task, format_interval(d["difference"].get(task))]
                       for k, d in enumerate(results["differences"], 1) for i, task in enumerate([*tasks, "macro"])],
                      legend=[f"{d['adapter']} minus {d['control']}" for d in results["differences"]])
