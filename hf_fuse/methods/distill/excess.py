"""Where the expert's adapter shows in an answer (``distill --answer-excess-keep F``).

An answer the source expert gives may say what its base model would have said anyway; what the adapter adds is
where the expert finds its answer likelier than its own base model does.  The **excess** of an answer is the mean,
over the answer's tokens, of the expert's log-probability minus the base model's (the same model with the adapter
switched off), both read on the same text after the same prompt.  It is zero when the adapter changes nothing and
positive where the adapter raises the answer's tokens.  ``--answer-excess-keep F`` keeps the fraction F of the kept
answers whose excess is highest.  ``--answer-excess-tokens F`` works inside each answer: every token's own excess
(the same difference, not averaged) ranks the answer's tokens, and the student's loss counts only the fraction F of
them where the adapter shows most; the others stay in the text, as context, with no loss.  The expert's and the
student's tokenizers differ, so a student token takes the excess of the expert token its first character falls in.

The idea is TiTok's (arXiv 2510.04682: per-token log-probability of the adapted model minus the base model's, to keep
the samples and tokens where the adapter's knowledge shows); this is its answer-level filter, measured on our own
prompts and answers.  Excess values are cached beside the answers (a JSON file per answer set, written atomically),
so a repeated run computes them once.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch

from hf_common.atomic import write_text_atomic
from hf_runtime.data import Conversation, ReplayConfig, prompt_ids

logger = logging.getLogger(__name__)


@torch.no_grad()
def token_excess(expert, prompt: list[int], answer: list[int]) -> list[float]:
    """Per token of ``answer``: log p(token | prompt, earlier tokens) under ``expert`` (a PEFT model) minus the same
    under its base model (the adapter disabled)."""
    if not answer:
        return []
    device = next(expert.parameters()).device
    ids = torch.tensor([prompt + answer], device=device)
    targets = ids[0, len(prompt):]

    def logprobs() -> torch.Tensor:
        logits = expert(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
        return torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)

    with_adapter = logprobs()
    with expert.disable_adapter():
        without = logprobs()
    return [float(x) for x in with_adapter - without]


def answer_excess(expert, prompt: list[int], answer: list[int]) -> float:
    """The mean of :func:`token_excess` over the answer's tokens; 0.0 for an empty answer."""
    values = token_excess(expert, prompt, answer)
    return sum(values) / len(values) if values else 0.0


def per_answer(expert, conversations: list[Conversation], answers: list, replay: ReplayConfig, path: Path,
               measure: Callable, parse: Callable[[object], object | None], encode: Callable = lambda v: v,
               what: str = "excess") -> tuple[dict[int, object], int]:
    """A value for every kept answer (None in ``answers``: dropped), cached as JSON at ``path`` (index -> value): the
    cached entries that ``parse`` accepts (it returns None for one that does not parse or is out of range: computed
    again, never coerced), the others ``measure(model, tokenizer, prompt_ids, answer_ids)`` with the source expert,
    loaded on first use (``sources.SourceExpert``), and the cache rewritten atomically with both (``encode``: a value
    as JSON).  Returns the values and how many were computed."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        data = {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("%s: unreadable %s cache (%s); computing the values again", path, what, type(exc).__name__)
        data = {}
    cached = {}
    for key, raw in (data.items() if isinstance(data, dict) else ()):
        value = parse(raw) if key.isdigit() and int(key) < len(answers) else None
        if value is not None:
            cached[int(key)] = value
    kept = [i for i, answer in enumerate(answers) if answer is not None]
    values = {i: cached[i] for i in kept if i in cached}
    todo = [i for i in kept if i not in values]
    if todo:
        model, tokenizer = expert.get()
        for i in todo:
            prompt = prompt_ids(tokenizer, conversations[i], replay.cutoff_len, replay.drop_history)
            values[i] = measure(model, tokenizer, prompt, list(tokenizer.encode(answers[i].text, add_special_tokens=False)))
        merged = {**cached, **values}
        write_text_atomic(path, json.dumps({str(i): encode(v) for i, v in sorted(merged.items())}) + "\n", force=True)
    return values, len(todo)


def _number(raw) -> float | None:
    return float(raw) if type(raw) in (int, float) and math.isfinite(raw) else None


def keep_highest(values: dict[int, float], fraction: float) -> set[int]:
    """The indices of the ``ceil(fraction x n)`` highest values (ties: the lower index first)."""
    count = math.ceil(fraction * len(values))
    return set(sorted(values, key=lambda i: (-values[i], i))[:count])


def excess_filter(expert, conversations: list[Conversation], answers: list, cache: Path, fraction: float,
                  replay: ReplayConfig) -> tuple[list, dict]:
    """``answers`` (None where dropped before) with only the ``fraction`` of the kept ones of highest excess left, and
    what the report says of it.  ``expert`` is the source expert loaded on first use (``sources.SourceExpert``);
    ``cache`` the answers' cache file, beside which the excess values are cached."""
    path = cache.with_name(cache.stem.replace("generations", "excess") + ".json")
    values, computed = per_answer(expert, conversations, answers, replay, path, parse=_number,
                                  measure=lambda model, tokenizer, prompt, ids: answer_excess(model, prompt, ids))
    keep = keep_highest(values, fraction)
    ranked = sorted(values.values())
    stats = {"fraction": fraction, "scored": len(values), "computed": computed, "dropped": len(values) - len(keep),
             "median": ranked[len(ranked) // 2] if ranked else None,
             "threshold": min((values[i] for i in keep), default=None), "cache": str(path)}
    if stats["dropped"]:
        logger.warning("%d of %d answers dropped with the lowest excess (--answer-excess-keep %g)", stats["dropped"],
                       len(values), fraction)
    return [answer if i in keep else None for i, answer in enumerate(answers)], stats
