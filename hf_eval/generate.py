"""Greedy, batched generation on held-out data and scoring (``hf-eval evaluate``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from hf_fuse.data import load_records, prompt_ids

from .scoring import METRICS, TaskScore, infer_metric

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


def stop_token_ids(tokenizer) -> list[int]:
    """EOS plus a chat template's end-of-turn token, when the vocabulary has one."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for token in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
            ids.add(token_id)
    return sorted(ids)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], config: EvalConfig,
             on_batch: Callable[[int], None] = lambda n: None) -> list[str]:
    """Greedy answers, batched by similar length with left padding; returned in the prompts' order."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    stops = stop_token_ids(tokenizer)
    for start in range(0, len(order), config.batch_size):
        batch = order[start:start + config.batch_size]
        width = max(len(prompts[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=config.max_new_tokens, pad_token_id=pad, eos_token_id=stops)
        for row, i in enumerate(batch):
            answers[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True)
        on_batch(len(batch))
    return answers


def evaluate_file(model, tokenizer, path: Path, config: EvalConfig,
                  on_batch: Callable[[int], None] = lambda n: None) -> tuple[TaskScore, list[dict]]:
    """Score one held-out file; returns the task score and every prediction with its gold answer."""
    records = load_records(path)[: config.max_examples]
    golds = [conv.turns[-1][1] for conv in records]
    metric = config.metric if config.metric != "auto" else infer_metric(records[0].turns[-1][0], golds)
    prompts = [prompt_ids(tokenizer, conv, config.cutoff_len, config.drop_history) for conv in records]
    predictions = generate(model, tokenizer, prompts, config, on_batch)
    score = TaskScore(metric)
    rows = []
    for conv, gold, prediction in zip(records, golds, predictions):
        counts = score.add(prediction, gold)
        rows.append({"prompt": conv.turns[-1][0], "gold": gold, "prediction": prediction, **counts})
    return score, rows
