"""Replay data for hf-fuse: read Alpaca / chat JSON(L) files, tokenise with loss on the final answer only.

Every record becomes a :class:`Conversation` (optional system prompt plus ``(prompt, answer)`` turns,
oldest first); only the answer of the last turn is trained on.  Files are parsed before any model
loads (:func:`check_replay_files`) so that a bad file fails in seconds.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_common.errors import ConfigError, FileAccessError, InputError, one_line

from .settings import ReplayConfig  # noqa: F401  (imported from here by callers)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Conversation:
    """A system prompt (or None) and ``(prompt, answer)`` turns; the last answer is the target."""

    system: str | None
    turns: list[tuple[str, str]]


@dataclass(frozen=True)
class Example:
    """Token ids and labels (``-100`` where no loss) of one replay example."""

    input_ids: list[int]
    labels: list[int]
    source: str  # a method's own data rides on a subclass (distill's DistilledExample), never on every example


@dataclass(frozen=True)
class ReplaySet:
    """All formatted examples, with counts for the run report."""

    examples: list[Example]
    per_file: dict[str, int]
    skipped: int
    n_tokens: int
    n_answer_tokens: int


# -- reading ---------------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    if not path.exists():
        raise FileAccessError("replay file not found", path)
    if not path.is_file():
        raise FileAccessError("replay path is not a file", path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({one_line(exc)})", path) from exc
    except OSError as exc:
        raise FileAccessError(f"cannot read replay file ({one_line(exc.strerror or exc)})", path) from exc


def _parse_objects(text: str, path: Path) -> list[tuple[str, Any]]:
    """``(label, object)`` pairs from a JSON list (label ``record N``) or JSONL (label ``line N``)."""
    if not text.strip():
        raise InputError("no examples", path)
    data = None  # stays None for JSONL
    if path.suffix.lower() != ".jsonl":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if text.lstrip().startswith("["):
                raise InputError(f"malformed JSON ({one_line(exc)})", path) from exc
    if isinstance(data, list):
        return [(f"record {i}", obj) for i, obj in enumerate(data, 1)]
    if data is not None:
        return [("record 1", data)]
    pairs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            pairs.append((f"line {lineno}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise InputError(f"line {lineno}: malformed JSON ({one_line(exc.msg)}, column {exc.colno})", path) from exc
    return pairs


def _text(obj: dict, key: str, label: str, path: Path, *, optional: bool = False) -> str:
    value = obj.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise InputError(f"{label}: field '{key}' must be a string", path)
    return value


def _alpaca_prompt(instruction: str, inp: str) -> str:
    """The instruction, plus the input on a new line unless empty or already in the instruction."""
    inp_stripped = inp.strip()
    if not inp_stripped or inp_stripped in instruction:
        return instruction
    return f"{instruction}\n{inp}"


def _from_alpaca(obj: dict, label: str, path: Path, prompts_only: bool = False) -> Conversation:
    prompt = _alpaca_prompt(_text(obj, "instruction", label, path), _text(obj, "input", label, path, optional=True))
    answer = _text(obj, "output", label, path, optional=prompts_only)
    history = obj.get("history") or []
    if not isinstance(history, list):
        raise InputError(f"{label}: 'history' must be a list of [prompt, answer] pairs", path)
    turns: list[tuple[str, str]] = []
    for pair in history:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise InputError(f"{label}: 'history' must be a list of [prompt, answer] pairs", path)
        turns.append((pair[0], pair[1]))
    turns.append((prompt, answer))
    system = obj.get("system")
    return Conversation(system if isinstance(system, str) and system else None, turns)


def _from_messages(messages: Any, label: str, path: Path, prompts_only: bool = False) -> Conversation:
    if not isinstance(messages, list) or not messages:
        raise InputError(f"{label}: 'messages' must be a non-empty list", path)
    if prompts_only and isinstance(messages[-1], dict) and messages[-1].get("role") == "user":
        messages = [*messages, {"role": "assistant", "content": ""}]  # a prompt awaiting its answer
    for msg in messages:
        if not (isinstance(msg, dict) and msg.get("role") in _ROLES and isinstance(msg.get("content"), str)):
            raise InputError(f"{label}: each message needs a role (system/user/assistant) and a string content", path)
    system = None
    if messages[0]["role"] == "system":
        system, messages = messages[0]["content"] or None, messages[1:]
    if not messages or messages[-1]["role"] != "assistant":
        raise InputError(f"{label}: the last message must be from the assistant", path)
    roles = [m["role"] for m in messages]
    if roles != ["user", "assistant"] * (len(roles) // 2):
        raise InputError(f"{label}: messages must alternate user/assistant after an optional system message", path)
    turns = [(messages[i]["content"], messages[i + 1]["content"]) for i in range(0, len(messages), 2)]
    return Conversation(system, turns)


def load_records(path: str | Path, *, prompts_only: bool = False) -> list[Conversation]:
    """Read one Alpaca-style or chat-style JSON / JSONL file into conversations.  With ``prompts_only``
    (unlabelled prompts) the answer may be missing: the last turn's answer is then empty."""
    path = Path(path)
    conversations = []
    for label, obj in _parse_objects(_read_text(path), path):
        if isinstance(obj, dict) and "messages" in obj:
            conversations.append(_from_messages(obj["messages"], label, path, prompts_only))
        elif isinstance(obj, dict) and "instruction" in obj and ("output" in obj or prompts_only):
            conversations.append(_from_alpaca(obj, label, path, prompts_only))
        else:
            raise InputError(f"{label}: expected instruction/output or messages"
                             if not prompts_only else f"{label}: expected instruction or messages", path)
    if not conversations:
        raise InputError("no examples", path)
    return conversations


def check_replay_files(paths: Sequence[str | Path], *, prompts_only: bool = False) -> None:
    """Parse every replay file (no tokenizer) so that bad data fails before a model loads."""
    if not paths:
        raise ConfigError("no replay files given")
    for path in paths:
        records = load_records(path, prompts_only=prompts_only)
        if not any(conv.turns[-1][0].strip() for conv in records):
            raise InputError("every prompt is empty: nothing to ask", path)
        if not prompts_only and not any(conv.turns[-1][1].strip() for conv in records):
            raise InputError("every answer is empty: nothing to train or score on", path)
        logger.debug("%s: %d replay records", path, len(records))


# -- formatting ------------------------------------------------------------------------------
def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def _messages(conv: Conversation, turns: list[tuple[str, str]]) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": conv.system}] if conv.system else []
    for prompt, answer in turns:
        msgs += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return msgs


def _render(tokenizer: Any, msgs: list[dict[str, str]], generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception:
        if msgs[0]["role"] != "system":
            raise
        # Some templates (e.g. Gemma 2) reject a system role: prepend it to the first user message.
        merged = [{"role": "user", "content": f"{msgs[0]['content']}\n\n{msgs[1]['content']}"}, *msgs[2:]]
        return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=generation_prompt)


def _chat_ids(tokenizer: Any, conv: Conversation, turns: list[tuple[str, str]]) -> tuple[list[int], list[int]]:
    msgs = _messages(conv, turns)
    prompt_text = _render(tokenizer, msgs[:-1], True)
    full_text = _render(tokenizer, msgs, False)
    prompt_ids, full_ids = _encode(tokenizer, prompt_text), _encode(tokenizer, full_text)
    if full_ids[: len(prompt_ids)] == prompt_ids:
        return prompt_ids, full_ids[len(prompt_ids):]
    logger.debug("chat template: prompt ids are not a prefix of the full ids; tokenising the answer separately")
    if full_text.startswith(prompt_text):
        return prompt_ids, _encode(tokenizer, full_text[len(prompt_text):])
    answer_ids = _encode(tokenizer, turns[-1][1])
    if tokenizer.eos_token_id is not None:
        answer_ids.append(tokenizer.eos_token_id)
    return prompt_ids, answer_ids


def _plain_ids(tokenizer: Any, conv: Conversation, turns: list[tuple[str, str]]) -> tuple[list[int], list[int]]:
    head = f"{conv.system}\n" if conv.system else ""
    prompt_text = head + "".join(f"{p}{a}\n" for p, a in turns[:-1]) + turns[-1][0]
    prompt_ids = _encode(tokenizer, prompt_text)
    if tokenizer.bos_token_id is not None:
        prompt_ids.insert(0, tokenizer.bos_token_id)
    answer_ids = _encode(tokenizer, turns[-1][1])
    if tokenizer.eos_token_id is not None:
        answer_ids.append(tokenizer.eos_token_id)
    return prompt_ids, answer_ids


def _truncate(prompt: list[int], answer: list[int], cutoff_len: int, keep_head: int) -> tuple[list[int], list[int]]:
    """Fit ``cutoff_len``: cut the prompt from the left (keeping ``keep_head`` leading tokens), then the answer's tail.

    When the answer alone does not fit, the last ``cutoff_len // 2`` prompt tokens are kept for context.
    """
    if len(prompt) + len(answer) <= cutoff_len:
        return prompt, answer
    room = cutoff_len - len(answer)
    if room < 1:
        room = min(len(prompt), cutoff_len // 2)
        answer = answer[: cutoff_len - room]
    head = prompt[:keep_head] if room > keep_head else []
    tail = prompt[len(prompt) - (room - len(head)):] if room - len(head) > 0 else []
    return head + tail, answer


def format_example(tokenizer: Any, conv: Conversation, cutoff_len: int, drop_history: bool = False,
                   source: str = "") -> Example | None:
    """Token ids and labels for ``conv``; loss on the final answer only.  None if nothing is trainable."""
    turns = conv.turns[-1:] if drop_history else list(conv.turns)
    if getattr(tokenizer, "chat_template", None):
        prompt, answer = _chat_ids(tokenizer, conv, turns)
    else:
        prompt, answer = _plain_ids(tokenizer, conv, turns)
    bos = tokenizer.bos_token_id
    keep_head = 1 if bos is not None and prompt[:1] == [bos] else 0
    prompt, answer = _truncate(prompt, answer, cutoff_len, keep_head)
    if not answer:
        return None
    return Example(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer, source)


def prompt_ids(tokenizer: Any, conv: Conversation, cutoff_len: int, drop_history: bool = False) -> list[int]:
    """Token ids of the generation prompt for ``conv`` (its final answer left out), keeping the last ``cutoff_len``."""
    turns = conv.turns[-1:] if drop_history else list(conv.turns)
    if getattr(tokenizer, "chat_template", None):
        ids = _encode(tokenizer, _render(tokenizer, _messages(conv, turns)[:-1], True))
    else:
        ids = _plain_ids(tokenizer, conv, turns)[0]
    return ids[-cutoff_len:]


def load_replay(paths: Sequence[str | Path], tokenizer: Any, config: ReplayConfig) -> ReplaySet:
    """Load, cap, format and concatenate every replay file."""
    if not paths:
        raise ConfigError("no replay files given")
    examples: list[Example] = []
    per_file: dict[str, int] = {}
    skipped = 0
    for path in map(Path, paths):
        records = load_records(path)
        cap = config.max_examples_per_file
        if cap is not None and len(records) > cap:
            keep = sorted(random.Random(config.seed).sample(range(len(records)), cap))
            records = [records[i] for i in keep]
        name = path.stem if path.stem not in per_file else str(path)
        formatted = [format_example(tokenizer, c, config.cutoff_len, config.drop_history, source=path.stem) for c in records]
        kept = [e for e in formatted if e is not None]
        examples += kept
        skipped += len(formatted) - len(kept)
        per_file[name] = len(kept)
        logger.info("%s: %d replay examples", path, len(kept))
    if skipped:
        logger.warning("%d replay examples had no trainable answer tokens and were skipped", skipped)
    n_tokens = sum(len(e.input_ids) for e in examples)
    n_answer = sum(sum(1 for t in e.labels if t != IGNORE_INDEX) for e in examples)
    return ReplaySet(examples, per_file, skipped, n_tokens, n_answer)


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: ``input_ids`` with ``pad_id``, ``labels`` with -100, ``attention_mask`` 1/0."""
    import torch

    if not examples:
        raise ValueError("collate needs at least one example")
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[row, :n] = torch.tensor(e.labels, dtype=torch.long)
        mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
