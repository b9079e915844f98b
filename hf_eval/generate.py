"""Greedy, batched generation on held-out data and scoring (``hf-eval evaluate``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hf_runtime.data import load_records, prompt_ids
from hf_runtime.generation import generate

from .scoring import METRICS, TaskScore, infer_metric, option_labels

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    max_new_tokens: int = 64
    batch_size: int = 8
    max_examples: int | None = None  # per file: the first N (held-out files are already split)
    drop_history: bool = False
    cutoff_len: int = 1024
    metric: str = "auto"

    def __post_init__(self) -> None:
        from hf_common.errors import ConfigError

        if self.max_new_tokens < 1 or self.batch_size < 1 or (self.max_examples is not None and self.max_examples < 1):
            raise ConfigError("--max-new-tokens, --batch-size and --max-examples must be positive")
        if self.metric not in ("auto", *METRICS):
            raise ConfigError(f"--metric must be auto or one of {', '.join(METRICS)}, got {self.metric!r}")


def evaluate_file(model, tokenizer, path: Path, config: EvalConfig,
                  on_batch: Callable[[int], None] = lambda n: None) -> tuple[TaskScore, list[dict]]:
    """Score one held-out file; returns the task score and every prediction with its gold answer."""
    records = load_records(path)[: config.max_examples]
    golds = [conv.turns[-1][1] for conv in records]
    metric = config.metric if config.metric != "auto" else infer_metric(records[0].turns[-1][0], golds)
    from hf_runtime.distributed import gather, processes

    procs = processes()  # data parallel: each process answers every world-th prompt; all get every answer
    mine = list(range(procs.rank, len(records), procs.world))
    prompts = [prompt_ids(tokenizer, records[i], config.cutoff_len, config.drop_history) for i in mine]
    answered = dict(gather(list(zip(mine, generate(model, tokenizer, prompts, config, on_batch)))))
    predictions = [answered[i] for i in range(len(records))]
    score = TaskScore(metric, labels=option_labels(records[0].turns[-1][0]) if metric == "exact" else frozenset())
    rows = []
    for conv, gold, (prediction, ended) in zip(records, golds, predictions):
        counts = score.add(prediction, gold, cut=not ended)
        rows.append({"prompt": conv.turns[-1][0], "gold": gold, "prediction": prediction, **counts, "cut": not ended})
    return score, rows
