"""Scoring of generated answers, as the paper does (InstructUIE style).

- ``set`` (NER, entity typing): ``type: span; type: span`` -> a set of (type, span);
- ``relation`` (RE): ``relation: head, tail; ...`` -> a set of (relation, head, tail);
- ``exact`` (label tasks: classification, short answers): the answer is one label, e.g. from the prompt's
  ``Option:`` list -> exact match, scored as accuracy.

Comparison is case-insensitive and ignores spacing differences, order and duplicates (and, for a label,
a final full stop).  A part that does not parse is dropped, so a malformed answer scores as predicting
nothing; for a label task whose prompt lists its options, an answer that is none of them is counted as
malformed (and wrong).  Scoring never raises on model output.  Precision, recall and F1 are
micro-averaged over a task's examples; the macro average is taken over tasks.  Each task's summary
names its headline figure: ``score`` is the F1 of an extraction task and the accuracy of a label task,
``score_name`` says which.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

METRICS = ("set", "relation", "exact")
_SPACES = re.compile(r"\s+")
_HEAD_TAIL = re.compile(r"(?<=\S),\s")  # "Emily Dickinson, Amherst , Mass": the tokenised " , " stays in the span


def _norm(text: str) -> str:
    return _SPACES.sub(" ", text or "").strip().lower()


def parse_set(answer: str) -> set[tuple[str, str]]:
    items = set()
    for part in (answer or "").split(";"):
        label, sep, span = part.partition(":")
        if sep and _norm(label) and _norm(span):
            items.add((_norm(label), _norm(span)))
    return items


def parse_relations(answer: str) -> set[tuple[str, str, str]]:
    items = set()
    for part in (answer or "").split(";"):
        relation, sep, rest = part.partition(":")
        pieces = _HEAD_TAIL.split(rest, maxsplit=1) if sep else []
        if len(pieces) == 2 and _norm(relation) and _norm(pieces[0]) and _norm(pieces[1]):
            items.add((_norm(relation), _norm(pieces[0]), _norm(pieces[1])))
    return items


def parse_label(answer: str) -> str:
    """A label answer as compared: normalised, without a final full stop ("Work for." is "work for")."""
    return _norm(answer).rstrip(".").strip()


def parse(answer: str, metric: str) -> set:
    if metric == "relation":
        return parse_relations(answer)
    if metric == "exact":
        return {parse_label(answer)} if parse_label(answer) else set()
    return parse_set(answer)


_OPTIONS = re.compile(r"^\s*options?\s*:(.*)$", re.IGNORECASE | re.MULTILINE)


def option_labels(instruction: str) -> frozenset[str]:
    """The labels a prompt offers on its ``Option:`` line (comma-separated), normalised; empty when it has none."""
    found = _OPTIONS.search(instruction or "")
    return frozenset(parse_label(x) for x in found.group(1).split(",") if parse_label(x)) if found else frozenset()


def infer_metric(instruction: str, gold_answers: list[str]) -> str:
    """``relation`` for RE instructions, ``set`` for ``type: span`` answers, else ``exact``."""
    text = instruction.lower()
    if "relation" in text and any(parse_relations(a) for a in gold_answers):
        return "relation"
    if any(parse_set(a) for a in gold_answers):
        return "set"
    return "exact"


@dataclass
class TaskScore:
    metric: str
    n_examples: int = 0
    n_pred: int = 0
    n_gold: int = 0
    n_correct: int = 0
    n_exact: int = 0  # examples whose whole answer set matches
    malformed: int = 0  # non-empty answers that parsed to nothing
    cut: int = 0  # answers that reached --max-new-tokens without ending (scored as cut)
    labels: frozenset[str] = frozenset()  # a label task's options: an answer outside them is malformed
    per_example: list[dict] = field(default_factory=list)

    def add(self, prediction: str, gold: str, cut: bool = False) -> dict:
        pred_items, gold_items = parse(prediction, self.metric), parse(gold, self.metric)
        correct = len(pred_items & gold_items)
        self.n_examples += 1
        self.n_pred += len(pred_items)
        self.n_gold += len(gold_items)
        self.n_correct += correct
        self.n_exact += pred_items == gold_items
        outside = self.metric == "exact" and bool(self.labels) and not pred_items <= self.labels
        self.malformed += (bool(_norm(prediction)) and not pred_items) or outside
        self.cut += cut
        record = {"n_pred": len(pred_items), "n_gold": len(gold_items), "n_correct": correct}
        self.per_example.append(record)
        return record

    @property
    def precision(self) -> float:
        return self.n_correct / self.n_pred if self.n_pred else 0.0

    @property
    def recall(self) -> float:
        return self.n_correct / self.n_gold if self.n_gold else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def accuracy(self) -> float:
        return self.n_exact / self.n_examples if self.n_examples else 0.0

    @property
    def score_name(self) -> str:
        return "accuracy" if self.metric == "exact" else "f1"

    def summary(self) -> dict:
        return {"metric": self.metric, "score_name": self.score_name, "score": getattr(self, self.score_name),
                "n_examples": self.n_examples, "precision": self.precision, "recall": self.recall,
                "f1": self.f1, "accuracy": self.accuracy, "n_pred": self.n_pred, "n_gold": self.n_gold,
                "n_correct": self.n_correct, "malformed": self.malformed, "cut": self.cut}


def macro(scores: dict[str, TaskScore]) -> dict:
    """Macro averages over tasks (set/relation tasks use P/R/F1; exact tasks their accuracy as all three)."""
    if not scores:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    values = [(s.accuracy,) * 3 if s.metric == "exact" else (s.precision, s.recall, s.f1) for s in scores.values()]
    return {name: sum(v[i] for v in values) / len(values) for i, name in enumerate(("precision", "recall", "f1"))}
