"""Token-level distillation across tokenizers (``distill --token-loss-weight``).

The student learns the source expert's next-token *distributions* on the expert's own answers, not only its
greedy text, in the manner of Universal Logit Distillation (Boizard et al., 2024): at each aligned position both
distributions are sorted, so the two vocabularies need not correspond, and compared by the L1 distance of their
``K`` largest probabilities.  Positions are aligned by text: a student token and a teacher token that begin at the
same character of the answer are predicted from the same text before them, so their distributions are comparable.

The teacher's side is recorded while the expert answers (``hf_runtime.generation``: the sorted top-``K`` of every
step and where each token starts in the answer) and cached with the answer, so the expert never runs beside the
student.  Written here rather than taken from TRL: TRL's GOLD trainer is a Trainer subclass with its own loop,
collator and a teacher model held in memory during training; the part that fits our one loop is this loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hf_runtime.data import IGNORE_INDEX, Example
from hf_runtime.generation import char_starts
from hf_runtime.lora import LoraObjective
from hf_runtime.trainer import StepLosses, answer_logits, answer_loss, weighted


@dataclass(frozen=True)
class TeacherSignal:
    """The teacher's side of one training example: ``positions`` index the example's tokens whose logits predict an
    aligned answer token; ``probs`` holds the teacher's sorted top-K probabilities for each of them."""

    positions: tuple[int, ...]
    probs: tuple[tuple[float, ...], ...]


def align(student_starts: Sequence[int], teacher_starts: Sequence[int], length: int) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` of a student and a teacher token that begin at the same character, inside the answer's
    ``length`` characters; where several tokens of one side begin at one character (an empty-text token), the first."""
    teacher_at: dict[int, int] = {}
    for j, start in enumerate(teacher_starts):
        teacher_at.setdefault(start, j)
    pairs, seen = [], set()
    for i, start in enumerate(student_starts):
        if start < length and start in teacher_at and start not in seen:
            seen.add(start)
            pairs.append((i, teacher_at[start]))
    return pairs


def teacher_signal(tokenizer, input_ids: Sequence[int], labels: Sequence[int], answer: str,
                   teacher_starts: Sequence[int], teacher_probs: Sequence[Sequence[float]]) -> TeacherSignal | None:
    """Align a formatted example's answer tokens with the teacher's (``teacher_starts``: characters of ``answer``
    where the teacher's tokens begin).  Both sides are measured on the answer stripped of the white space either
    side may add.  None when no position aligns."""
    first = next((k for k, label in enumerate(labels) if label != IGNORE_INDEX), None)
    if first is None or first == 0:
        return None
    core = answer.strip()
    text, starts = char_starts(tokenizer, input_ids[first:])
    shift, lead = text.find(core), len(answer) - len(answer.lstrip())
    if not core or shift < 0:
        return None
    pairs = align([s - shift if s >= shift else len(core) for s in starts], [s - lead for s in teacher_starts], len(core))
    pairs = [(i, j) for i, j in pairs if j < len(teacher_probs)]
    if not pairs:
        return None
    # the logits at position p predict token p + 1
    return TeacherSignal(tuple(first + i - 1 for i, _ in pairs), tuple(tuple(teacher_probs[j]) for _, j in pairs))


def sorted_l1(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """ULD's distance per position: ``|sort(softmax(logits))[:K] - teacher|_1`` (``teacher``: sorted top-K)."""
    k = teacher.shape[-1]
    probs = torch.softmax(logits.float(), dim=-1)
    top = torch.topk(probs, k=min(k, probs.shape[-1]), dim=-1).values
    if top.shape[-1] < k:  # a student vocabulary smaller than K: its missing entries are zeros
        top = torch.nn.functional.pad(top, (0, k - top.shape[-1]))
    return (top - teacher).abs().sum(dim=-1)


def token_loss(logits: torch.Tensor, signals: Sequence[TeacherSignal | None],
               kept: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """The mean sorted-L1 distance over every aligned position of a batch (rows of ``logits`` are the examples, in
    order), and the number of positions; zero and 0 when nothing aligns.  ``kept``: the positions ``logits`` hold
    (``trainer.answer_logits``), when not every position's."""
    column = {int(p): k for k, p in enumerate(kept.tolist())} if kept is not None else None
    rows, cols, targets = [], [], []
    for row, signal in enumerate(signals):
        if signal is None:
            continue
        for position, probs in zip(signal.positions, signal.probs):
            col = position if column is None else column.get(position, logits.shape[1])
            if col < logits.shape[1]:
                rows.append(row)
                cols.append(col)
                targets.append(probs)
    if not rows:
        return logits.sum() * 0.0, 0
    teacher = torch.tensor(targets, dtype=torch.float32, device=logits.device)
    picked = logits[torch.tensor(rows, device=logits.device), torch.tensor(cols, device=logits.device)]
    return sorted_l1(picked, teacher).mean(), len(rows)


@dataclass(frozen=True)
class DistilledExample(Example):
    """A generated example with the source expert's side of the token-level loss (None: no position aligned)."""

    teacher: TeacherSignal | None = None


class TokenDistillObjective(LoraObjective):
    """The LoRA student's loss plus ``token_loss_weight`` times the token-level distance to the expert's
    distributions, on the examples that carry them (replay examples carry none)."""

    parts = ("lm", "token")

    def __init__(self, peft_model, *, token_loss_weight: float, **kwargs):
        super().__init__(peft_model, **kwargs)
        self.token_loss_weight = token_loss_weight

    def micro_loss(self, batch: list[Example], micro: int, weights) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, targets, keep = answer_logits(self.model, batch, self.pad_id, self.device)
        distance, _ = token_loss(logits, [getattr(e, "teacher", None) for e in batch], keep)
        lm = weighted(answer_loss(logits, targets), micro, weights, self.loss_average)
        token = weighted(distance, micro, weights, self.loss_average)
        return lm + self.token_loss_weight * token, {"lm": lm, "token": token}

    def losses(self, totals: dict[str, float]) -> StepLosses:
        lm, token = totals["lm"], totals["token"]
        return StepLosses(lm=lm, extra={"token": token}, total=lm + self.token_loss_weight * token)
