"""Token-level distillation across tokenizers: text-offset alignment and the sorted-probability (ULD) distance."""

import pytest
import torch
from tiny_models import tiny_tokenizer

from hf_fuse.methods.distill.token_loss import TeacherSignal, align, sorted_l1, teacher_signal, token_loss
from hf_runtime.data import Conversation, format_example
from hf_runtime.generation import char_starts


def test_alignment_pairs_the_tokens_that_begin_at_the_same_character():
    # "red car, truck": teacher tokens "red" " car" "," " truck"; student tokens "re" "d" " c" "ar" "," " tr" "uck"
    teacher = [0, 3, 7, 8]
    student = [0, 2, 3, 5, 7, 8, 11]
    assert align(student, teacher, 14) == [(0, 0), (2, 1), (4, 2), (5, 3)]
    # nothing at or beyond the answer's end (the stop token, which starts there), and one pair per character
    assert align([0, 0, 14], [0, 14], 14) == [(0, 0)]


def test_char_starts_of_a_real_tokenizer_spell_the_text_token_by_token():
    tok = tiny_tokenizer()
    ids = tok("person: kubrick; city: rome", add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    text, starts = char_starts(tok, ids)
    assert text == "person: kubrick; city: rome" and starts[0] == 0 and starts == sorted(starts)
    pieces = [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)])]
    assert pieces == [tok.decode([i], skip_special_tokens=True) for i in ids]  # ASCII: each token's own text
    assert starts[-1] == len(text)  # the stop token adds no text


def test_the_signal_points_at_the_logits_that_predict_each_aligned_answer_token():
    tok = tiny_tokenizer()
    answer = "person: kubrick"
    example = format_example(tok, Conversation(None, [("Text: kubrick Answer:", answer)]), 256)
    first = next(i for i, label in enumerate(example.labels) if label != -100)
    answer_ids = example.input_ids[first:]
    # a teacher with this very tokenizer: every answer token aligns (the end-of-turn tokens add no text)
    _, starts = char_starts(tok, answer_ids)
    probs = [[1.0 - 0.01 * j, 0.01 * j] for j in range(len(answer_ids))]
    signal = teacher_signal(tok, example.input_ids, example.labels, answer, starts, probs)
    n_text = sum(1 for s in starts if s < len(answer))
    assert signal.positions == tuple(range(first - 1, first - 1 + n_text))
    assert signal.probs == tuple(tuple(p) for p in probs[:n_text])
    # white space the teacher put before its answer moves its offsets, not the alignment
    shifted = teacher_signal(tok, example.input_ids, example.labels, "  " + answer, [s + 2 for s in starts], probs)
    assert shifted == signal
    # a teacher whose tokens never begin where the student's do: nothing to learn from
    assert teacher_signal(tok, example.input_ids, example.labels, answer, [3] * len(starts), probs) is None


def test_the_distance_is_zero_when_the_student_is_the_teacher_and_positive_otherwise():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 40)
    k = 8
    teacher = torch.topk(torch.softmax(logits, dim=-1), k, dim=-1).values
    signals = [TeacherSignal((0, 3), (tuple(teacher[0, 0].tolist()), tuple(teacher[0, 3].tolist()))),
               TeacherSignal((4,), (tuple(teacher[1, 4].tolist()),))]
    same, n = token_loss(logits, signals)
    assert n == 3 and same.item() == pytest.approx(0.0, abs=1e-6)
    other, _ = token_loss(torch.randn(2, 5, 40), signals)
    assert other.item() > 0.05
    # a permuted vocabulary is the same distribution to ULD: sorting makes vocabularies irrelevant
    assert token_loss(logits[..., torch.randperm(40)], signals)[0].item() == pytest.approx(0.0, abs=1e-6)
    # no signal: zero with a gradient path, and no positions
    empty, n = token_loss(logits.requires_grad_(), [None, None])
    assert n == 0 and empty.item() == 0.0 and empty.requires_grad


def test_a_teacher_wider_than_the_student_vocabulary_pads_with_zeros():
    logits = torch.tensor([[0.0, 0.0]])
    assert sorted_l1(logits, torch.tensor([[0.5, 0.5, 0.0]])).item() == pytest.approx(0.0)


def test_the_token_loss_on_the_answer_logits_alone_equals_it_on_every_positions(fusion):
    """``trainer.answer_logits`` runs the LM head only where an answer token is predicted; the teacher's positions
    index every position, and ``kept`` maps them: the same distance as from the full logits."""
    from hf_runtime.data import ReplayConfig, collate, load_replay
    from hf_runtime.model import load_model_and_tokenizer, resolve_base_model
    from hf_runtime.trainer import answer_logits

    model, tokenizer = load_model_and_tokenizer(resolve_base_model(fusion["base"]), torch.device("cpu"), torch.float32)
    batch = load_replay([fusion["replay"]], tokenizer, ReplayConfig()).examples[:3]
    torch.manual_seed(0)
    signals = []
    for e in batch:  # a made-up teacher at every position that predicts one of the example's answer tokens
        positions = tuple(p for p in range(len(e.labels) - 1) if e.labels[p + 1] != -100)
        probs = torch.softmax(torch.randn(len(positions), 6), -1).sort(-1, descending=True).values
        signals.append(TeacherSignal(positions, tuple(tuple(r.tolist()) for r in probs)))
    signals[1] = None
    with torch.no_grad():
        full = model(**collate(batch, tokenizer.pad_token_id)).logits
        kept_logits, _, kept = answer_logits(model, batch, tokenizer.pad_token_id, torch.device("cpu"))
    expected, n = token_loss(full, signals)
    got, m = token_loss(kept_logits, signals, kept)
    assert n == m == sum(len(s.positions) for s in signals if s) and kept_logits.shape[1] < full.shape[1]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
