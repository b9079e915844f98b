"""Data-free distillation (``distill --synthesize N --seed-prompts FILE``): from a handful of example inputs and no
answers, the target's base model (or, with ``--synthesize-writer source``, the source expert itself) writes new
inputs in their style, a filter keeps those that look like them, and the source expert answers the kept ones as it
answers ``--unlabeled`` prompts.  The idea is Trans-LoRA's (Wang et al.,
2024: synthetic inputs from a few seeds, filtered).  The model sees four of the seeds (a fresh sample each time)
as a numbered list, "Example 1: ...", and continues it; a candidate ends where the model begins the next example.
The filter here is not Trans-LoRA's and has no trained part:

1. **The task's frame stays exact.** The seeds' common beginning and end (instruction, options, "Answer:") are
   kept verbatim; only the part that varies (the text to work on) is written anew.
2. **It looks like the seeds, by the model's own measure.** A candidate is kept when the model, shown the other
   seeds as examples, finds it at least as likely (mean log-probability per token) as the least likely seed is
   given the others: a threshold taken from the seeds themselves, so there is no constant to tune.
3. **The same lines.** Where every seed's varying part has the same further lines, begun with the same words
   (e.g. a text, then a line " Entities: ..."), a candidate must have them too.
4. **Nothing copied.** Exact copies and near-copies (word-trigram Jaccard similarity >= 0.6) of a seed or of a
   candidate already kept are dropped, as are candidates shorter than half the shortest seed or longer than 1.5x
   the longest, and candidates cut at the length cap.
5. **About what the seeds are about** (``--synthesize-keep-similar F``, off by default): the checks above judge form;
   this one judges content.  Each text (seed or candidate, its varying part only) is read by the writer and
   represented by the mean of its last hidden layer over the text's tokens; the vectors are centred on their common
   mean (a small model's hidden states share one dominant direction, which would make every text look alike), and
   of the candidates the form filter kept, the fraction F most similar (cosine) to the seeds' centroid stay.
   Embedding similarity to the seeds is one of the content filters the Trans-LoRA paper discusses; here it uses the
   writer itself, so nothing else is loaded.

Trans-LoRA's discriminator (a classifier trained to tell real inputs from synthetic ones) was not taken: with five
seeds it would be trained on five positives.  Candidates are cached line by line (``answer_cache``: the
text, whether it ended, its length and its mean log-probability under the writer), so a rerun writes only what is
missing; each candidate's sampling is seeded by its index, so a resumed run writes what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from hf_common.errors import ConfigError
from hf_runtime.data import Conversation
from hf_runtime.generation import left_padded, stop_token_ids

from .answer_cache import AnswerCache, CachedAnswer
from .excess import keep_highest

MIN_SEEDS = 3  # fewer cannot separate the task's frame from the varying part, nor set a likelihood threshold
SHOTS = 4  # seeds shown per candidate (a fresh sample of them each time)
NEAR_COPY = 0.6
BATCH = 8


@dataclass(frozen=True)
class Frame:
    """The seeds' common beginning and end, and the part of each that varies."""

    prefix: str
    suffix: str
    middles: list[str]

    def fill(self, middle: str) -> str:
        return self.prefix + middle + self.suffix


def frame_of(prompts: list[str]) -> Frame:
    prefix = os.path.commonprefix(prompts)
    suffix = os.path.commonprefix([p[len(prefix):][::-1] for p in prompts])[::-1]
    return Frame(prefix, suffix, [p[len(prefix):len(p) - len(suffix)] for p in prompts])


def line_heads(text: str) -> tuple[str, ...]:
    """The first word of each line after the first: a text's line structure."""
    return tuple(line.split()[0] for line in text.strip().split("\n")[1:] if line.split())


def _trigrams(text: str) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i:i + 3]) for i in range(max(len(words) - 2, 1))}


def near_copy(a: str, b: str) -> bool:
    """Word-trigram Jaccard similarity of at least 0.6 (exact copies included)."""
    x, y = _trigrams(a), _trigrams(b)
    return a.strip() == b.strip() or (bool(x | y) and len(x & y) / len(x | y) >= NEAR_COPY)


MARK = "\n\nExample"  # what begins the next example (a candidate ends there, or at a blank line if no seed has one)


def _listing(examples: list[str]) -> str:
    """The examples as a numbered list that asks for one more: plain text the model continues (small chat models
    continue a pattern more reliably than they follow an instruction to write one)."""
    shown = "".join(f"Example {k + 1}:\n{text.strip()}{MARK[:2]}" for k, text in enumerate(examples))
    return f"{shown}Example {len(examples) + 1}:\n"


def _shots(middles: list[str], rng: random.Random, leave_out: int | None = None) -> list[str]:
    pool = [m for k, m in enumerate(middles) if k != leave_out]
    return rng.sample(pool, min(SHOTS, len(pool)))


@torch.no_grad()
def _mean_logprob(model, tokenizer, context: list[int], text: str, device) -> float:
    """Mean log-probability per token of ``text`` after ``context`` (the seeds' threshold)."""
    ids = list(tokenizer.encode(text.strip(), add_special_tokens=False))
    if not ids:
        return -math.inf
    full = torch.tensor([context + ids], device=device)
    logits = model(input_ids=full).logits[0, len(context) - 1:-1].float()
    return float(torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(ids, device=device)[:, None]).mean())


@torch.no_grad()
def similarity_to_seeds(model, tokenizer, seeds: list[str], candidates: list[str]) -> list[float]:
    """Each candidate's cosine similarity to the centroid of ``seeds``: texts as the mean of the model's last hidden
    layer over their tokens, centred on the mean of every text given (the content filter's measure)."""
    device = next(model.parameters()).device
    vectors = []
    for text in [*seeds, *candidates]:
        ids = list(tokenizer.encode(text.strip(), add_special_tokens=False)) or [tokenizer.eos_token_id]
        hidden = model(input_ids=torch.tensor([ids], device=device), output_hidden_states=True).hidden_states[-1]
        vectors.append(hidden[0].float().mean(0))
    matrix = torch.stack(vectors)
    matrix = F.normalize(matrix - matrix.mean(0), dim=-1)
    centroid = F.normalize(matrix[:len(seeds)].mean(0), dim=0)
    return [float(x) for x in matrix[len(seeds):] @ centroid]


def synthesize(model, tokenizer, seeds: list[Conversation], n: int, work: Path, *, seed: int, cutoff_len: int,
               temperature: float = 0.7, writer_id: str = "", keep_similar: float = 1.0,
               on_progress: Callable[[int, int], None] = lambda done, total: None) -> tuple[list[Conversation], dict]:
    """``n`` candidate inputs written in the style of ``seeds``; returns the kept ones (as conversations with the
    first seed's system prompt and no answer) and counts of what the filter dropped (``keep_similar`` < 1: of those
    the form filter keeps, only that fraction most like the seeds in content)."""
    if len(seeds) < MIN_SEEDS:
        raise ConfigError(f"--synthesize needs at least {MIN_SEEDS} seed prompts, got {len(seeds)}")
    frame = frame_of([c.turns[-1][0] for c in seeds])
    middles = frame.middles
    if not all(m.strip() for m in middles):
        raise ConfigError("--seed-prompts: the seeds do not vary (two are the same, or one holds only the common frame)")
    device = next(model.parameters()).device
    lengths = [len(tokenizer.encode(m, add_special_tokens=False)) for m in middles]
    cap = max(16, math.ceil(1.5 * max(lengths)))
    identity = {"seeds": middles, "frame": [frame.prefix, frame.suffix], "seed": seed, "cap": cap,
                "model": getattr(model.config, "_name_or_path", ""), "format": 3}
    if temperature != 1.0:  # (1.0 was the only temperature before: its caches keep their names)
        identity["temperature"] = temperature
    if writer_id:  # a writer other than the target's base model (e.g. the source expert, adapter included)
        identity["writer"] = writer_id
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    cache = AnswerCache(work / f"synthesized-{key}.jsonl", n)
    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    end = MARK if any("\n\n" in m.strip() for m in middles) else "\n\n"
    heads = {line_heads(m) for m in middles}
    was_training = model.training
    model.eval()

    def context(examples: list[str]) -> list[int]:
        return list(tokenizer(_listing(examples))["input_ids"])[-cutoff_len:]

    with cache.locked():
        done = cache.read()
        todo = [i for i in range(n) if i not in done]
        for start in range(0, len(todo), BATCH):
            batch = todo[start:start + BATCH]
            ids, mask = left_padded([context(_shots(middles, random.Random(seed * 1_000_003 + i))) for i in batch], pad)
            width = ids.shape[1]
            torch.manual_seed(seed * 1_000_003 + batch[0])
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
                                 temperature=temperature, top_p=0.95, top_k=0, max_new_tokens=cap, pad_token_id=pad,
                                 eos_token_id=stops, output_logits=True, return_dict_in_generate=True)
            new = out.sequences[:, width:].cpu()
            logprobs = torch.stack([torch.log_softmax(x.float(), -1) for x in out.logits], 1).cpu()
            chosen = logprobs.gather(2, new[:, :logprobs.shape[1], None]).squeeze(2)
            rows = []
            for row, i in enumerate(batch):
                is_stop = torch.isin(new[row], torch.tensor(stops))
                length = int(is_stop.int().argmax()) if bool(is_stop.any()) else new.shape[1]
                text = tokenizer.decode(new[row, :length], skip_special_tokens=True)
                # it ends where the next example begins, or at a stop token; else it was cut at the cap
                finished = end in text.lstrip() or length < new.shape[1]
                text = text.lstrip().split(end)[0].strip()
                scored = min(len(tokenizer.encode(text, add_special_tokens=False)), length)  # the text's own tokens
                mean = float(chosen[row, :scored].mean()) if scored else -100.0
                rows.append((i, CachedAnswer(text, finished, scored, min(0.0, mean))))
            cache.append(rows)
            done.update(rows)
            on_progress(len(done), n)
    # the seeds' own threshold: each seed's likelihood given the others as examples
    threshold = min(_mean_logprob(model, tokenizer, context(_shots(middles, random.Random(seed + k), leave_out=k)), m,
                                  device) for k, m in enumerate(middles))
    kept, counts = _form_filter(done, n, middles, heads, threshold)
    counts.update(cached=n - len(todo), n_seed_prompts=len(seeds), temperature=temperature)
    if keep_similar < 1:
        scores = similarity_to_seeds(model, tokenizer, middles, kept)
        chosen = keep_highest(dict(enumerate(scores)), keep_similar)
        counts.update(dissimilar=len(kept) - len(chosen), keep_similar=keep_similar,
                      similarity={"kept_min": round(min((scores[k] for k in chosen), default=0.0), 4),
                                  "all_mean": round(sum(scores) / len(scores), 4) if scores else 0.0})
        kept = [text for k, text in enumerate(kept) if k in chosen]
    counts["kept"] = len(kept)
    model.train(was_training)
    base = seeds[0]
    # the frame's white space around the varying part is the seeds' own: keep the candidate's edges like theirs
    lead = middles[0][:len(middles[0]) - len(middles[0].lstrip())]
    trail = middles[0][len(middles[0].rstrip()):]
    return [Conversation(base.system, [(frame.fill(lead + text + trail), "")]) for text in kept], counts


def _form_filter(done: dict, n: int, middles: list[str], heads: set, threshold: float) -> tuple[list[str], dict]:
    """The candidates that pass checks 1-4 of the module's description, and counts of what each check dropped."""
    low, high = 0.5 * min(map(len, middles)), 1.5 * max(map(len, middles))
    counts = {"candidates": n, "kept": 0, "unfinished": 0, "length": 0, "lines": 0, "copies": 0, "unlikely": 0,
              "dissimilar": 0, "threshold": round(threshold, 4)}
    kept: list[str] = []
    for i in range(n):
        got = done[i]
        text = got.text
        if not got.finished:
            counts["unfinished"] += 1
        elif not low <= len(text) <= high:
            counts["length"] += 1
        elif len(heads) == 1 and line_heads(text) not in heads:
            counts["lines"] += 1
        elif any(near_copy(text, other) for other in [*middles, *kept]):
            counts["copies"] += 1
        elif got.logprob < threshold:
            counts["unlikely"] += 1
        else:
            kept.append(text)
    counts["kept"] = len(kept)
    return kept, counts
