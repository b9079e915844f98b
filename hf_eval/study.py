"""The steps of a fusion study, shared by the cross-family benchmark and the demo.

Each helper is one resumable :class:`~hf_eval.experiment.Experiment` step (one command of ours, one
output; skipped when already done): experts, null-sources, plans, fusions, replay-tunes and
evaluations.  :meth:`Study.pick_lr` is the tuning rule both use: train at every rate of a grid,
score each on a *validation* split (never the held-out one), keep the best.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hf_common.cli_support import default_checkpoint_dir

from .experiment import Experiment


@dataclass(frozen=True)
class TrainBudget:
    """What a fusion and its baselines share: optimiser steps (or epochs), micro-batch, accumulation."""

    steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 1
    grad_accum: int = 8
    drop_history: bool = True

    def args(self) -> list:
        length = ["--max-steps", self.steps] if self.steps is not None else ["--epochs", self.epochs]
        return [*length, "--batch-size", self.batch_size, "--grad-accum", self.grad_accum, *self.history_flag()]

    def history_flag(self) -> list:
        return ["--drop-history"] if self.drop_history else []


@dataclass
class Study:
    exp: Experiment
    base_model: str  # the target's base model (folder, .gguf, smollm2 / gemma3)
    budget: TrainBudget
    eval_args: list = field(default_factory=lambda: ["--max-new-tokens", 64, "--batch-size", 8])
    # options of every hf-fuse run (a method's own options, e.g. the HyperNet's --embed-dim, go in ``extra``: hf-fuse
    # refuses an option the chosen method does not use)
    fuse_args: list = field(default_factory=lambda: ["--no-gradient-checkpointing"])
    dtype: str | None = None  # every model-loading step's --dtype (None: each tool's default for the device)

    @property
    def work(self) -> Path:
        return self.exp.work

    def tool(self, name: str) -> str:
        return self.exp.tool(name)

    def dtype_args(self) -> list:
        return ["--dtype", self.dtype] if self.dtype else []

    def expert(self, name: str, base_model: str, data: Path, *, epochs: float, lr: float, seed: int = 0) -> Path:
        out = self.work / name
        self.exp.run(name, [self.tool("hf-eval"), "train-expert", "--base-model", base_model, "--data", data, "-o", out,
                            "--epochs", epochs, "--batch-size", 4, "--lr", lr, "--seed", seed,
                            *self.budget.history_flag(), *self.dtype_args(), "--force"], out,
                     checkpoints=default_checkpoint_dir(out))
        return out

    def null_source(self, source: Path, seed: int) -> Path:
        out = self.work / f"null-{source.name}-s{seed}"
        self.exp.run(out.name, [self.tool("hf-eval"), "null-source", source, "-o", out, "--seed", seed, "--force"], out)
        return out

    def plan(self, name: str, target: Path, sources: Sequence[Path]) -> Path:
        out = self.work / f"{name}.h5"
        self.exp.run(name, [self.tool("hf-analyze"), "--target", target, *repeated("--source", sources),
                            "--block-size", "auto", "-o", out, "--force"], out)
        return out

    def fuse(self, name: str, plan: Path, replay: Sequence[Path], *, lr: float, seed: int, extra: Sequence = ()) -> Path:
        out = self.work / name
        self.exp.run(name, [self.tool("hf-fuse"), plan, "--base-model", self.base_model, *repeated("--replay", replay),
                            *self.budget.args(), "--lr", lr, "--seed", seed, *self.fuse_args, *self.dtype_args(), *extra,
                            "-o", out, "--force"],
                     out, checkpoints=default_checkpoint_dir(out))
        return out

    def replay_tune(self, name: str, target: Path, replay: Sequence[Path], *, lr: float, seed: int) -> Path:
        out = self.work / name
        self.exp.run(name, [self.tool("hf-eval"), "replay-tune", "--base-model", self.base_model, "--adapter", target,
                            *repeated("--replay", replay), *self.budget.args(), "--lr", lr, "--seed", seed,
                            *self.dtype_args(), "-o", out, "--force"], out,
                     checkpoints=default_checkpoint_dir(out))
        return out

    def evaluate(self, name: str, adapter: Path | None, data: Sequence[Path], *, base_model: str | None = None) -> dict:
        """Scores of one adapter (``results.json``'s entry); the predictions stay in ``WORK/eval-NAME``."""
        return self.evaluate_many(name, {name: adapter}, data, base_model=base_model)[name]

    def evaluate_many(self, step: str, adapters: dict[str, Path | None], data: Sequence[Path], *,
                      base_model: str | None = None) -> dict[str, dict]:
        """Several adapters of the target's base model in one process; ``None`` is the base model alone."""
        out = self.work / f"eval-{step}"
        named = repeated("--adapter", [f"{name}={path}" for name, path in adapters.items() if path])
        self.exp.run(f"eval-{step}", [self.tool("hf-eval"), "evaluate", "--base-model", base_model or self.base_model,
                                      *named, *repeated("--data", data), *self.eval_args, *self.budget.history_flag(),
                                      *self.dtype_args(),
                                      "-o", out, "--force"], out)
        return {name: load_scores(out, name if path else "base") for name, path in adapters.items()}

    def pick_lr(self, train, grid: Sequence[float], validation: Sequence[Path], label: str,
                beyond: int = 0) -> tuple[float, dict]:
        """Train ``train(lr) -> (name, adapter)`` at every rate of ``grid``; keep the best macro F1 on ``validation``.

        Ties go to the earlier rate.  With ``beyond``: while the best is the largest rate tried (the optimum may lie past
        the grid's edge), try the next rate up, the last one times the grid's last ratio (to one significant digit), at
        most ``beyond`` times; likewise downwards while the best is the smallest rate tried (by the first ratio).
        Returns the rate and ``{lr: validation macro F1}`` in the order tried."""
        scores: dict[float, float] = {}
        up = grid[-1] / grid[-2] if len(grid) > 1 else 1.0
        down = grid[1] / grid[0] if len(grid) > 1 else 1.0
        queue, added = list(grid), 0
        while queue:
            lr = queue.pop(0)
            name, adapter = train(lr)
            scores[lr] = self.evaluate(f"val-{name}", adapter, validation)["macro"]["f1"]
            if queue or added >= beyond:
                continue
            best = max(scores, key=scores.get)  # the first of equals: ties go to the earlier rate
            if best == max(scores) and up > 1:
                queue.append(_one_digit(best * up, best, above=True))
            elif best == min(scores) and down > 1:
                queue.append(_one_digit(best / down, best, above=False))
            added += len(queue)
        best = max(scores, key=scores.get)
        self.exp.console.info(f"{label}: validation macro F1 " +
                              ", ".join(f"lr {lr:g}: {100 * f:.1f}" for lr, f in scores.items()) + f" -> lr {best:g}")
        return best, scores


def _one_digit(rate: float, last: float, above: bool) -> float:
    """``rate`` to one significant digit (1e-3 * 3 -> 3e-3, 3e-3 * 3 -> 1e-2), unless rounding crosses ``last``."""
    step = float(f"{rate:.0e}")
    return step if (step > last if above else step < last) else rate


HYPERNET_ARGS = ["--embed-dim", "auto"]  # the HyperNet sized to the plan (the studies' setting)


def repeated(flag: str, values) -> list:
    """``flag v1 flag v2 ...``: a repeatable option on a command line."""
    return [x for value in values for x in (flag, value)]


def load_scores(folder: Path, name: str) -> dict:
    return json.loads((folder / "results.json").read_text())["adapters"][name]


def per_example_counts(folder: Path, name: str, task: str) -> list[tuple[int, int, int]]:
    """``(n_pred, n_gold, n_correct)`` of every example of one task, from an evaluation's predictions."""
    rows = (folder / "predictions" / name / f"{task}.jsonl").read_text().splitlines()
    return [(r["n_pred"], r["n_gold"], r["n_correct"]) for r in map(json.loads, rows)]
