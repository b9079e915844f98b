"""The cross-family benchmark's modes and its data split (``bench_cross_family.py`` runs them): which tasks, budgets
and grids each mode uses, and how every task file of the paper's replay data is cut, once and deterministically, into
a training pool, validation and held-out examples."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from benchmarks.derived_tasks import DERIVED, derive
from hf_common.atomic import write_text_atomic
from hf_eval.study import TrainBudget

FILES = {"mit-movie": "mit-movie_sample300.json", "conll04": "RE_conll04_sample300.json",
         "findvehicle": "ET_FindVehicle_sample300.json", "tweetner7": "TweetNER7_sample_15000_sample300.json"}
TASKS = (*FILES, *DERIVED)  # every task a run can name: the files' own and those derived from them (derived_tasks.py)
EXPERT_BASE = {"mit-movie": "smollm2", "conll04": "gemma3", "findvehicle": "gemma3", "tweetner7": "smollm2",
               "conll04-rc": "gemma3"}
TARGET_TASK = "mit-movie"
POOL, VALIDATION = 216, 24  # of the first 240 examples of every file; the last 60 are held out


@dataclass(frozen=True)
class Mode:
    sources: tuple[str, ...]
    labels: tuple[int, ...]  # labelled source-task examples in the replay
    grid: tuple[float, ...]  # learning rates tried by fusion and by replay-tune alike
    seeds: int
    budget: TrainBudget
    expert_epochs: float
    expert_lr: float
    n_validation: int  # validation examples scored per task (of the 24)
    n_heldout: int  # held-out examples scored per task (of the 60)
    new_tokens: int  # distill's default cap on the experts' answers (the variants' `--gen-max-new-tokens auto` fits it)
    eval_tokens: int  # cap on every evaluated answer: room for the longest gold answer (FindVehicle's: 89 tokens)
    pool: int = POOL
    n_unlabeled: int = POOL  # unlabelled prompts of each source task (its training pool, answers dropped) for distill
    weights: tuple[float, ...] = (0.5, 1.0, 2.0)  # project: scales of the projected update tried on validation
    tune_at: int | None = None  # label count at which the rates are chosen (None: at every label count)
    beyond: int = 2  # rates tried past the grid's edges while an edge wins on validation (Study.pick_lr)


MODES = {
    # 2 CPU cores: one source task, 0 and 16 source labels (not all 216), 10 optimiser steps of 8 examples per
    # run (`--steps` for more), every validation and held-out example, a three-rate grid searched at each label
    # count per method, zero-shot prompts, distill's prompts the whole pool.  `--labels 0,16,216` adds the third
    # setting.
    "cpu": Mode(sources=("findvehicle",), labels=(0, 16), grid=(1e-4, 3e-4, 1e-3), seeds=3,
                budget=TrainBudget(steps=10, batch_size=4, grad_accum=2, drop_history=True), expert_epochs=2,
                expert_lr=3e-4, n_validation=24, n_heldout=60, new_tokens=48, eval_tokens=128),
    # A GPU machine: the paper's 3 epochs over the replay mix, few-shot history kept, every held-out example.
    "full": Mode(sources=("conll04", "findvehicle", "tweetner7"), labels=(0, 16, POOL), grid=(5e-5, 1e-4, 2e-4, 3e-4),
                 seeds=3, budget=TrainBudget(epochs=3, batch_size=1, grad_accum=8, drop_history=False), expert_epochs=3,
                 expert_lr=2e-4, n_validation=24, n_heldout=60, new_tokens=128, eval_tokens=128),
    # The whole pipeline in minutes (a check of the script, not a result).
    "smoke": Mode(sources=("findvehicle",), labels=(8, 0), grid=(3e-4, 1e-3), seeds=2, tune_at=8,
                  budget=TrainBudget(steps=2, batch_size=4, grad_accum=1, drop_history=True), expert_epochs=1,
                  expert_lr=3e-4, n_validation=4, n_heldout=4, new_tokens=24, eval_tokens=24, pool=8),
}


def split(data_dir: Path, work: Path, mode: Mode, n_unlabeled: int | None = None, n_seeds: int = 5) -> dict[str, dict]:
    """Write each task's training pool, validation and held-out files; label subsets of the pool for sources."""
    out = work / "data"
    paths: dict[str, dict] = {}
    for task in (TARGET_TASK, *mode.sources):
        source = data_dir / FILES[DERIVED[task][0] if task in DERIVED else task]
        records = json.loads(source.read_text())
        if len(records) != 300:
            raise SystemExit(f"{source}: expected 300 records, found {len(records)}")
        if task in DERIVED:
            records = derive(task, records)
        if mode.budget.drop_history:
            records = [{k: v for k, v in r.items() if k != "history"} for r in records]
        parts = {"train": records[:POOL][:mode.pool], "val": records[POOL:POOL + VALIDATION][:mode.n_validation],
                 "heldout": records[POOL + VALIDATION:][:mode.n_heldout]}
        paths[task] = {}
        for part, rows in parts.items():  # the file's stem is the task name, so scores are keyed by task
            path = out / part / f"{task}.json"
            _write(path, json.dumps(rows))
            paths[task][part] = path
        if task != TARGET_TASK:
            count = n_unlabeled or mode.n_unlabeled
            path = out / ("unlabeled" if count == mode.n_unlabeled else f"unlabeled-{count}") / f"{task}.json"
            rows = parts["train"][:count]
            _write(path, json.dumps([{k: v for k, v in r.items() if k != "output"} for r in rows]))
            paths[task]["unlabeled"] = path
            # data-free runs: a few prompts drawn from the training pool (never validation or held out), answers dropped
            seeds = [parts["train"][k] for k in sorted(random.Random(0).sample(range(len(parts["train"])), n_seeds))]
            path = out / f"seeds-{n_seeds}" / f"{task}.json"
            _write(path, json.dumps([{k: v for k, v in r.items() if k != "output"} for r in seeds]))
            paths[task]["seeds"] = path
        for n in {*mode.labels, *([mode.tune_at] if mode.tune_at is not None else [])}:  # the grid's setting too
            if task != TARGET_TASK and 0 < n < len(parts["train"]):
                path = out / f"train-{n}" / f"{task}.json"
                _write(path, json.dumps(parts["train"][:n]))
                paths[task][f"train-{n}"] = path
    return paths


def source_tag(mode: str, sources: tuple[str, ...]) -> str:
    """What the names of steps that depend on the source tasks (plans, runs, the target's scores on their tasks) end
    with: nothing for the mode's own sources, else the tasks, so that invocations with other ``--sources`` never
    replace the mode's steps in the work folder they share (experts, null sources and caches are shared)."""
    return "" if tuple(sources) == MODES[mode].sources else "-src_" + "_".join(sources)


def _write(path: Path, text: str) -> None:
    """Write a split file unless it already holds ``text`` (invocations running at once read them meanwhile)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        write_text_atomic(path, text, force=True)
