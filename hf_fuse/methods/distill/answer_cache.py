"""The cache of generated answers (``distill``'s source experts): one JSON line per answer, appended and synced as
each batch is generated, so an interrupted run generates only what is missing.

A cache folder can be shared between runs and people, so a cache file is input like any other: every line must
match the schema (``i`` an integer index of this prompt set, ``answer`` a string, ``finished`` a boolean,
``n_tokens`` a non-negative integer, ``logprob`` a finite number <= 0; for token-level distillation, optionally
``starts``, ``n_tokens`` non-decreasing character offsets into the answer, and ``top``, ``n_tokens`` lists of the
same number of probabilities, each sorted largest first); nothing is coerced.  A line that does not
match (bad JSON, bytes that are not UTF-8, an index out of range, a value of the wrong type) is skipped, counted
and named in a warning with its line number, and its answer is generated again.  A file that cannot be read at
all is refused (exit 2).  Runs that share a cache hold an exclusive lock (``fcntl.flock`` on ``FILE.lock``) while
they read it, generate what is missing and append, so two runs at once never corrupt it and never generate the
same answer twice: the second waits, then reads the first's answers.

``auto_cap`` is ``--gen-max-new-tokens auto``'s rule, read off the pilot answers in this cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hf_common.errors import FileAccessError, one_line

logger = logging.getLogger(__name__)
PILOT, PILOT_CAP, AUTO_FALLBACK = 16, 512, 128  # --gen-max-new-tokens auto: pilot prompts, their cap, cap if none ends
MAX_LINE = 1 << 20  # a line longer than this is not an answer of ours


@dataclass(frozen=True)
class CachedAnswer:
    text: str
    finished: bool
    n_tokens: int
    logprob: float
    starts: tuple[int, ...] | None = None  # token-level distillation's teacher side (``token_loss``)
    top: tuple[tuple[float, ...], ...] | None = None


KEYS = {"i", "answer", "finished", "n_tokens", "logprob"}
TEACHER_KEYS = {"starts", "top"}


def _teacher(row: dict, n_tokens: int, length: int) -> tuple[tuple, tuple] | None:
    """The optional teacher fields, checked; None when they do not match the schema."""
    starts, top = row["starts"], row["top"]
    if not isinstance(starts, list) or not isinstance(top, list) or len(starts) != n_tokens or len(top) != n_tokens:
        return None
    if any(type(s) is not int or not 0 <= s <= length for s in starts) or starts != sorted(starts):
        return None
    width = len(top[0]) if top else 0
    for probs in top:
        if not isinstance(probs, list) or len(probs) != width or width == 0:
            return None
        if any(type(p) not in (int, float) or not 0.0 <= p <= 1.0 for p in probs) or probs != sorted(probs, reverse=True):
            return None
    return tuple(starts), tuple(tuple(float(p) for p in probs) for probs in top)


def _valid(row: object, n: int) -> tuple[int, CachedAnswer] | None:
    if not isinstance(row, dict) or set(row) not in (KEYS, KEYS | TEACHER_KEYS):
        return None
    i, text, finished, n_tokens, logprob = (row[k] for k in ("i", "answer", "finished", "n_tokens", "logprob"))
    if type(i) is not int or not 0 <= i < n or not isinstance(text, str) or type(finished) is not bool:
        return None
    if type(n_tokens) is not int or n_tokens < 0:
        return None
    if type(logprob) not in (int, float) or not math.isfinite(logprob) or logprob > 0:
        return None
    if TEACHER_KEYS <= set(row):
        teacher = _teacher(row, n_tokens, len(text))
        if teacher is None:
            return None
        return i, CachedAnswer(text, finished, n_tokens, float(logprob), *teacher)
    return i, CachedAnswer(text, finished, n_tokens, float(logprob))


class AnswerCache:
    """The cached answers to ``n`` prompts in ``path``."""

    def __init__(self, path: Path, n: int):
        self.path, self.n = Path(path), n
        self.bad_lines = 0

    @contextlib.contextmanager
    def locked(self) -> Iterator[AnswerCache]:
        """Hold the cache's lock (other runs sharing the folder wait)."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            handle = open(lock_path, "a")
        except OSError as exc:
            raise FileAccessError(f"cannot lock the answer cache ({exc.strerror or one_line(exc)})", lock_path) from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield self
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self) -> dict[int, CachedAnswer]:
        """Every valid answer by prompt index; bad lines are counted in ``bad_lines`` and named in one warning."""
        if not self.path.exists():
            return {}
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise FileAccessError(f"cannot read the answer cache ({exc.strerror or one_line(exc)})", self.path) from None
        done: dict[int, CachedAnswer] = {}
        bad: list[int] = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                if len(raw) > MAX_LINE:
                    raise ValueError("line too long")
                parsed = _valid(json.loads(raw.decode("utf-8")), self.n)
            except (ValueError, UnicodeDecodeError, RecursionError):  # JSONDecodeError is a ValueError
                parsed = None
            if parsed is None:
                bad.append(number)
            else:
                done[parsed[0]] = parsed[1]
        self.bad_lines = len(bad)
        if bad:
            shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
            logger.warning("%s: skipped %d line(s) that are not cached answers of this run (line %s); those answers are "
                           "generated again", self.path, len(bad), shown)
        return done

    def append(self, answers: list[tuple[int, CachedAnswer]]) -> None:
        """Append answers and sync them to disk (an interruption loses at most the line being written)."""
        try:
            with open(self.path, "ab") as handle:
                if handle.tell() and _last_byte(self.path) != b"\n":
                    handle.write(b"\n")  # a line cut by an interruption stays on its own (and is skipped)
                for i, a in answers:
                    row = {"i": i, "answer": a.text, "finished": a.finished, "n_tokens": a.n_tokens, "logprob": a.logprob}
                    if a.starts is not None and a.top is not None:
                        row.update(starts=list(a.starts), top=[list(p) for p in a.top])
                    handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise FileAccessError(f"cannot write the answer cache ({exc.strerror or one_line(exc)})", self.path) from None


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


def auto_cap(pilot: list[CachedAnswer]) -> int:
    """``--gen-max-new-tokens auto``: 1.5x the longest finished pilot answer (in tokens), at least 16, at most the pilot's
    cap; the fallback when no pilot answer finished (an expert that never ends, as a null source)."""
    lengths = [a.n_tokens for a in pilot if a.finished]
    if not lengths:
        return AUTO_FALLBACK
    return min(PILOT_CAP, max(16, math.ceil(1.5 * max(lengths))))
