"""Evaluate several adapters of one base model on several held-out tasks; write results atomically."""

from __future__ import annotations

import json
import time
from pathlib import Path

from hf_common.atomic import atomic_folder
from hf_common.console import Console

from .generate import EvalConfig, evaluate_file
from .scoring import macro


def evaluate_adapters(model, tokenizer, adapters: dict[str, Path | None], data: list[Path], config: EvalConfig,
                      output: Path, *, force: bool = False, console: Console | None = None) -> dict:
    """``results.json`` (per adapter: per task P/R/F1 and macro averages) and every prediction as JSONL."""
    from peft import PeftModel
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    results = {"format": "heterofusion-evaluation", "version": 1, "settings": config.__dict__, "adapters": {}}
    n_examples = sum(min(config.max_examples or 10**9, _count(path)) for path in data) * len(adapters)
    with atomic_folder(output, force=force, what="results folder") as tmp:
        with Progress(TextColumn("[bold]{task.fields[what]}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=(console or Console()).err, disable=console is None or console.quiet) as progress:
            bar = progress.add_task("", total=n_examples, what="generating")
            for name, adapter in adapters.items():
                started = time.perf_counter()
                evaluated = PeftModel.from_pretrained(model, adapter) if adapter else model
                evaluated.eval()
                scores = {}
                (tmp / "predictions" / name).mkdir(parents=True)
                for path in data:
                    progress.update(bar, what=f"{name} · {path.stem}")
                    score, rows = evaluate_file(evaluated, tokenizer, path, config,
                                                lambda n: progress.advance(bar, n))
                    scores[path.stem] = score
                    with open(tmp / "predictions" / name / f"{path.stem}.jsonl", "w") as handle:
                        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
                if adapter:
                    model = evaluated.unload()
                results["adapters"][name] = {
                    "adapter": str(adapter) if adapter else None,
                    "tasks": {task: score.summary() for task, score in scores.items()},
                    "macro": macro(scores),
                    "seconds": round(time.perf_counter() - started, 1),
                }
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        from .html import evaluation_report

        (tmp / "report.html").write_text(evaluation_report(results).render())
    return results


def _count(path: Path) -> int:
    from hf_fuse.data import load_records

    return len(load_records(path))


def render(results: dict, console: Console) -> None:
    tasks = sorted({t for a in results["adapters"].values() for t in a["tasks"]})
    rows = []
    for name, entry in results["adapters"].items():
        cells = [name]
        for task in tasks:
            score = entry["tasks"].get(task)
            cells.append(f"{100 * score['precision']:.1f} / {100 * score['f1']:.1f}" if score else "-")
        cells.append(f"{100 * entry['macro']['precision']:.1f} / {100 * entry['macro']['f1']:.1f}")
        rows.append(cells)
    console.table("Held-out scores (precision / F1, %)", ["adapter", *tasks, "macro"], rows)
