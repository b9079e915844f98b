"""The answer cache is input: every line is checked against its schema, nothing is coerced, bad lines are skipped,
counted and named with their line numbers, and an unreadable cache is refused."""

import json
import logging

import pytest

from hf_common.errors import FileAccessError
from hf_fuse.methods.distill.answer_cache import AnswerCache, CachedAnswer

GOOD = {"i": 0, "answer": "person: alpha", "finished": True, "n_tokens": 4, "logprob": -0.25}


@pytest.mark.parametrize("line", [
    b'{"i": Infinity, "answer": "a", "finished": true, "n_tokens": 1, "logprob": -1}',
    b'{"i": 0, "answer": "\xff\xfe", "finished": true, "n_tokens": 1, "logprob": -1}',  # not UTF-8
    b"[" * 100_000 + b"]" * 100_000,  # nested past the parser's recursion limit
    b'{"i": 7, "answer": "a", "finished": true, "n_tokens": 1, "logprob": -1}',  # index out of range
    b'{"i": -1, "answer": "a", "finished": true, "n_tokens": 1, "logprob": -1}',
    b'{"i": true, "answer": "a", "finished": true, "n_tokens": 1, "logprob": -1}',  # a bool is not an index
    b'{"i": 1.0, "answer": "a", "finished": true, "n_tokens": 1, "logprob": -1}',
    b'{"i": 0, "answer": null, "finished": true, "n_tokens": 1, "logprob": -1}',  # null is not the text "None"
    b'{"i": 0, "answer": "a", "finished": "no", "n_tokens": 1, "logprob": -1}',  # "no" is not a boolean
    b'{"i": 0, "answer": "a", "finished": true, "n_tokens": -3, "logprob": -1}',
    b'{"i": 0, "answer": "a", "finished": true, "n_tokens": 1, "logprob": NaN}',
    b'{"i": 0, "answer": "a", "finished": true, "n_tokens": 1, "logprob": 2.0}',  # a log-probability is <= 0
    b'{"i": 0, "answer": "a", "finished": true}',  # an old or foreign line: fields missing
    b'{"i": 0, "answer": "a", "finished": true, "n_tokens": 1, "logprob": -1, "extra": 1}',
    b"not json at all",
])
def test_a_bad_line_is_skipped_counted_and_named_never_coerced(tmp_path, caplog, line):
    path = tmp_path / "cache.jsonl"
    path.write_bytes(json.dumps({**GOOD, "i": 1}).encode() + b"\n" + line + b"\n")
    cache = AnswerCache(path, n=5)
    with caplog.at_level(logging.WARNING):
        done = cache.read()
    assert list(done) == [1] and cache.bad_lines == 1
    assert str(path) in caplog.text and "line 2" in caplog.text


def test_good_lines_round_trip_and_a_cut_last_line_is_skipped(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = AnswerCache(path, n=3)
    cache.append([(0, CachedAnswer("a", True, 2, -0.5)), (2, CachedAnswer("", False, 8, -3.0))])
    path.write_bytes(path.read_bytes() + b'{"i": 1, "answ')  # an interrupted write
    cache.append([(1, CachedAnswer("b", True, 1, 0.0))])  # goes on a line of its own
    done = AnswerCache(path, n=3).read()
    assert done == {0: CachedAnswer("a", True, 2, -0.5), 1: CachedAnswer("b", True, 1, 0.0), 2: CachedAnswer("", False, 8, -3.0)}


def test_an_unreadable_cache_is_refused(tmp_path):
    (tmp_path / "cache.jsonl").mkdir()
    with pytest.raises(FileAccessError, match="cannot read the answer cache"):
        AnswerCache(tmp_path / "cache.jsonl", n=1).read()


TEACHER = {**GOOD, "n_tokens": 2, "starts": [0, 7], "top": [[0.5, 0.25], [0.875, 0.125]]}


def test_the_teachers_side_of_an_answer_round_trips(tmp_path):
    cache = AnswerCache(tmp_path / "cache.jsonl", n=3)
    cache.append([(0, CachedAnswer("person: alpha", True, 2, -0.25, (0, 7), ((0.5, 0.25), (0.875, 0.125)))),
                  (1, CachedAnswer("b", True, 1, -1.0))])
    done = cache.read()
    assert done[0].starts == (0, 7) and done[0].top == ((0.5, 0.25), (0.875, 0.125))
    assert done[1].starts is None and done[1].top is None and cache.bad_lines == 0


@pytest.mark.parametrize("change", [
    {"starts": [0, 7, 9]},  # one start per token
    {"starts": [7, 0]},  # starts never go back
    {"starts": [0, 99]},  # beyond the answer
    {"starts": [0, True]},
    {"top": [[0.5, 0.25], [0.125, 0.875]]},  # each row sorted largest first
    {"top": [[0.5, 0.25], [0.875]]},  # rows of one width
    {"top": [[0.5, 0.25], [1.5, 0.1]]},  # probabilities
    {"top": [[0.5, 0.25], [float("nan"), 0.1]]},
    {"top": [[], []]},
    {"top": None},
])
def test_a_bad_teacher_field_makes_the_line_bad(tmp_path, change):
    path = tmp_path / "cache.jsonl"
    path.write_text(json.dumps({**TEACHER, "i": 1}) + "\n" + json.dumps({**TEACHER, **change}) + "\n")
    cache = AnswerCache(path, n=3)
    assert list(cache.read()) == [1] and cache.bad_lines == 1
