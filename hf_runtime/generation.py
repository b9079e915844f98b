"""Greedy, batched generation (for evaluation and for the source experts of ``distill``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch


def stop_token_ids(tokenizer) -> list[int]:
    """EOS plus a chat template's end-of-turn token, when the vocabulary has one."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for token in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
            ids.add(token_id)
    return sorted(ids)


@torch.no_grad()
def generate_batches(model, tokenizer, prompts: dict[int, list[int]], max_new_tokens: int,
                     batch_size: int) -> Iterator[list[tuple[int, str, bool]]]:
    """Greedy answers, batched by similar length with left padding.  Yields, batch by batch,
    ``(prompt key, answer, finished)``; ``finished`` is False when the answer was cut at ``max_new_tokens``."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(prompts, key=lambda i: len(prompts[i]))
    stops = stop_token_ids(tokenizer)
    stop_ids = torch.tensor(stops)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=stops)
        new = out[:, width:].cpu()
        finished = torch.isin(new, stop_ids).any(dim=1).tolist()
        yield [(i, tokenizer.decode(new[row], skip_special_tokens=True), finished[row]) for row, i in enumerate(batch)]


def generate(model, tokenizer, prompts: list[list[int]], config,
             on_batch: Callable[[int], None] = lambda n: None) -> list[str]:
    """Greedy answers in the prompts' order (``config``: ``max_new_tokens``, ``batch_size``)."""
    answers: list[str] = [""] * len(prompts)
    for batch in generate_batches(model, tokenizer, dict(enumerate(prompts)), config.max_new_tokens, config.batch_size):
        for i, text, _ in batch:
            answers[i] = text
        on_batch(len(batch))
    return answers
