"""Greedy, batched generation (for evaluation and for the source experts of ``distill``), with each answer's
length and mean token log-probability (the model's own confidence, read as it decodes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch


def stop_token_ids(tokenizer) -> list[int]:
    """EOS plus a chat template's end-of-turn token, when the vocabulary has one."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for token in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
            ids.add(token_id)
    return sorted(ids)


@dataclass(frozen=True)
class Generated:
    key: int
    text: str
    finished: bool  # False when the answer was cut at the length cap
    n_tokens: int  # answer tokens, the stop token included when there is one
    logprob: float  # mean log-probability of those tokens under the model (greedy: the largest at each step)
    # with top_k: where each answer token starts in ``text``, and the model's sorted top-k probabilities at each step
    starts: tuple[int, ...] | None = None
    top: tuple[tuple[float, ...], ...] | None = None


class _ChosenLogprob:
    """A logits processor that leaves the scores alone and records, per step, the log-probability of the token greedy
    decoding picks (the row's maximum): a batch-sized vector per step, not the whole distribution; with ``top_k``,
    also the ``top_k`` largest probabilities of each row (token-level distillation's teacher side)."""

    def __init__(self, top_k: int = 0):
        self.steps: list[torch.Tensor] = []
        self.top: list[torch.Tensor] = []
        self.top_k = top_k

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logprobs = torch.log_softmax(scores.float(), dim=-1)
        self.steps.append(logprobs.max(dim=-1).values.cpu())
        if self.top_k:
            self.top.append(torch.topk(logprobs, k=min(self.top_k, logprobs.shape[-1]), dim=-1).values.exp().cpu())
        return scores


def left_padded(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of a batch of prompts padded on the left (generation continues every row at its end), and the mask."""
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    return ids, mask


def char_starts(tokenizer, ids: Sequence[int]) -> tuple[str, list[int]]:
    """The decoded text of ``ids`` (special tokens skipped) and the character where each token starts in it: the
    length of the decoded prefix before it (made non-decreasing: a prefix that ends inside a multi-byte character
    can decode longer than the next one)."""
    starts, last = [], 0
    for j in range(len(ids)):
        last = max(last, len(tokenizer.decode(list(ids[:j]), skip_special_tokens=True))) if j else 0
        starts.append(last)
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    return text, [min(s, len(text)) for s in starts]



@torch.no_grad()
def generate_batches(model, tokenizer, prompts: dict[int, list[int]], max_new_tokens: int,
                     batch_size: int, top_k: int = 0) -> Iterator[list[Generated]]:
    """Greedy answers, batched by similar length with left padding; yields them batch by batch.  With ``top_k``, each
    finished answer also carries its tokens' starts in the text and the model's sorted top-``top_k`` probabilities per
    step."""
    from transformers import LogitsProcessorList

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(prompts, key=lambda i: len(prompts[i]))
    stops = stop_token_ids(tokenizer)
    stop_ids = torch.tensor(stops)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        ids, mask = left_padded([prompts[i] for i in batch], pad)
        width = ids.shape[1]
        recorder = _ChosenLogprob(top_k)
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=stops,
                             logits_processor=LogitsProcessorList([recorder]))
        new = out[:, width:].cpu()
        is_stop = torch.isin(new, stop_ids)
        finished = is_stop.any(dim=1)
        # tokens up to and including the first stop token (all of them when cut at the cap)
        full = torch.full((len(batch),), new.shape[1], dtype=torch.long)
        lengths = torch.where(finished, is_stop.int().argmax(dim=1) + 1, full)
        chosen = torch.stack(recorder.steps, dim=1) if recorder.steps else torch.zeros(len(batch), 0)
        top = torch.stack(recorder.top, dim=1) if recorder.top else None
        results = []
        for row, i in enumerate(batch):
            n = int(lengths[row])
            logprob = float(chosen[row, :n].mean()) if n else 0.0
            text = tokenizer.decode(new[row], skip_special_tokens=True)
            starts = probs = None
            if top is not None and finished[row]:  # an answer cut at the cap is dropped: no teacher side to keep
                starts = tuple(char_starts(tokenizer, new[row, :n].tolist())[1])
                probs = tuple(tuple(round(float(x), 5) for x in top[row, j]) for j in range(n))
            results.append(Generated(i, text, bool(finished[row]), n, logprob, starts, probs))
        yield results


def generate(model, tokenizer, prompts: list[list[int]], config,
             on_batch: Callable[[int], None] = lambda n: None) -> list[tuple[str, bool]]:
    """Greedy answers in the prompts' order (``config``: ``max_new_tokens``, ``batch_size``): each answer's text and
    whether it ended (False: cut at the cap)."""
    answers: list[tuple[str, bool]] = [("", True)] * len(prompts)
    for batch in generate_batches(model, tokenizer, dict(enumerate(prompts)), config.max_new_tokens, config.batch_size):
        for answer in batch:
            answers[answer.key] = (answer.text, answer.finished)
        on_batch(len(batch))
    return answers
