"""Token selection by the expert's excess (``distill --answer-excess-tokens F``; the measure is ``excess.py``'s).

For every kept answer the expert's per-token excess is computed once (its own tokens, with the character where each
begins in the answer) and cached beside the answers; each distilled example then keeps the loss on the fraction F of
its answer tokens that fall where the excess is highest.  Tokens after the answer's text (the end-of-turn and end
tokens the chat template adds) always keep theirs, so the student still learns where an answer ends.  TiTok (arXiv
2510.04682) selects tokens by this excess; the alignment across tokenizers is the one token-level distillation uses.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from pathlib import Path

from hf_runtime.data import IGNORE_INDEX, Conversation, Example, ReplayConfig
from hf_runtime.generation import char_starts

from .excess import keep_highest, per_answer, token_excess

TokenExcess = tuple[list[int], list[float]]  # the expert's token starts (characters of the answer) and their excess


def _token_entry(raw) -> TokenExcess | None:
    """A cached entry as (starts, values): lists of equal length, integer starts that never decrease, finite values."""
    starts, values = (raw.get("starts"), raw.get("values")) if isinstance(raw, dict) else (None, None)
    if (isinstance(starts, list) and isinstance(values, list) and len(starts) == len(values)
            and all(type(x) is int and x >= 0 for x in starts) and starts == sorted(starts)
            and all(type(v) in (int, float) and math.isfinite(v) for v in values)):
        return starts, [float(v) for v in values]
    return None


def token_excess_of(expert, conversations: list[Conversation], answers: list, cache: Path,
                    replay: ReplayConfig) -> tuple[dict[int, TokenExcess], dict]:
    """Per-token excess of every kept answer (None in ``answers``: dropped), cached beside the answers' ``cache``
    (``excess.per_answer``); ``expert`` is the source expert loaded on first use (``sources.SourceExpert``)."""
    path = cache.with_name(cache.stem.replace("generations", "excess-tokens") + ".json")
    values, computed = per_answer(
        expert, conversations, answers, replay, path, parse=_token_entry, what="token excess",
        measure=lambda model, tokenizer, prompt, ids: (char_starts(tokenizer, ids)[1], token_excess(model, prompt, ids)),
        encode=lambda value: {"starts": value[0], "values": value[1]})
    return values, {"computed": computed, "cache": str(path)}


def keep_tokens(tokenizer, example: Example, answer: str, expert: TokenExcess, fraction: float) -> tuple[Example, int]:
    """``example`` with the loss kept on the ``ceil(fraction x n)`` of its ``n`` answer tokens of highest excess (ties:
    the earlier token) and on every token after the answer's text; returns it and how many tokens lost their loss.
    An example whose answer cannot be found in its tokens' text is returned as it is."""
    labels = example.labels
    first = next((k for k, label in enumerate(labels) if label != IGNORE_INDEX), None)
    core = answer.strip()
    if first is None or not core:
        return example, 0
    text, starts = char_starts(tokenizer, example.input_ids[first:])
    shift = text.find(core)
    if shift < 0:
        return example, 0
    lead = len(answer) - len(answer.lstrip())
    expert_starts = [s - lead for s in expert[0]]
    inside = {}  # position -> the excess of the expert token its first character falls in
    for j, start in enumerate(starts):
        at = start - shift
        if labels[first + j] != IGNORE_INDEX and 0 <= at < len(core):
            k = bisect.bisect_right(expert_starts, at) - 1
            inside[first + j] = expert[1][k] if 0 <= k < len(expert[1]) else 0.0
    kept = keep_highest(inside, fraction)
    masked = [p for p in inside if p not in kept]
    if not masked:
        return example, 0
    new = list(labels)
    for p in masked:
        new[p] = IGNORE_INDEX
    return dataclasses.replace(example, labels=new), len(masked)
