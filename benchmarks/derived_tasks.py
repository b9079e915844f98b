"""Benchmark tasks derived, at run time and by path, from the paper's replay files: tasks of another kind than span
extraction, built from the same examples so that nothing new is shipped.

``conll04-rc`` (relation classification, scored by accuracy): each CoNLL04 example names its first gold triple's two
entities and asks which of the task's five relations holds between them; the answer is the relation's name alone.
Where the extraction task asks a model to find the pairs and their relations, this one gives the pair and asks for a
label: a classification task with a fixed option list (chance 20 %, the most frequent relation 24 % of examples).
The examples keep the source file's order, so the split into training pool, validation and held-out examples is the
extraction task's (the same sentences on each side).

Data and terms: the CoNLL04 sample is part of the paper's replay data (InstructUIE's benchmark; the corpus is Roth and
Yih's, 2004, news sentences annotated for research).  The sample states no licence of its own, so the corpus's terms
apply, and this benchmark never redistributes it: it reads the file in place and writes the derived task into its work
folder only.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_TRIPLE = re.compile(r"^\s*(?P<relation>[^:;]+?)\s*:\s*(?P<head>.+?)(?<=\S),\s(?P<tail>.+?)\s*$")
_OPTIONS = re.compile(r"^\s*Option:\s*(?P<options>.+?)\s*$", re.MULTILINE)
_TEXT = re.compile(r"^\s*Text:\s*(?P<text>.*?)\s*$", re.MULTILINE)


def first_triple(answer: str) -> tuple[str, str, str] | None:
    """The first ``relation: head, tail`` of an extraction answer, as written (case kept), or None."""
    for part in answer.split(";"):
        found = _TRIPLE.match(part)
        if found:
            return found["relation"], found["head"], found["tail"]
    return None


def relation_choice_turn(instruction: str, answer: str) -> tuple[str, str] | None:
    """One extraction turn as a classification turn: (prompt, label), or None where it has no triple or no options."""
    triple, options, text = first_triple(answer), _OPTIONS.search(instruction), _TEXT.search(instruction)
    if triple is None or options is None or text is None:
        return None
    relation, head, tail = triple
    prompt = ("Given a sentence and two entities in it, tell me which relation holds between the first entity and "
              "the second. Answer with one of the options only. \n"
              f"Option: {options['options']} \nText: {text['text']} \nFirst entity: {head} \nSecond entity: {tail} \n"
              "Answer:")
    return prompt, f" {relation}"


def relation_choice(record: dict) -> dict | None:
    """A CoNLL04 record (instruction, input, output, history) as a relation-classification record."""
    turn = relation_choice_turn(record["instruction"], record["output"])
    if turn is None:
        return None
    history = [t for t in (relation_choice_turn(q, a) for q, a in record.get("history") or []) if t is not None]
    return {"instruction": turn[0], "input": record.get("input", ""), "output": turn[1],
            **({"history": [list(t) for t in history]} if "history" in record else {})}


# task -> (the task whose file it is derived from, the function that turns one of its records into one of this task's)
DERIVED: dict[str, tuple[str, Callable[[dict], dict | None]]] = {"conll04-rc": ("conll04", relation_choice)}


def derive(task: str, records: list[dict]) -> list[dict]:
    """Every record of the base task as one of ``task``'s; a record that cannot be derived stops the benchmark."""
    _, convert = DERIVED[task]
    derived = [convert(r) for r in records]
    missing = [k for k, r in enumerate(derived) if r is None]
    if missing:
        raise SystemExit(f"{task}: records {missing[:5]} of its base file name no relation triple to classify")
    return derived
