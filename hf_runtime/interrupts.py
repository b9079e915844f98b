"""Ctrl-C during training: stop at the end of the step, never lose the request.

Python's default handler turns SIGINT into ``KeyboardInterrupt`` wherever the main thread happens to be.  When that is
inside a finaliser or a weakref callback (the garbage collector runs them at any allocation), the exception is
printed as "Exception ignored in ..." with a traceback and dropped: the run goes on as if nothing was pressed and ends
with exit 0, not 130 with a checkpoint.  Inside ``interrupts_watched`` the first SIGINT is only recorded: the
training loop stops at the end of the step, writes its checkpoint and exits 130; a second one raises at
once, for a step too long to wait for (the loop then keeps the last completed step).  ``hold=True`` never raises, for
a region that must finish (the optimiser updates inside the backward pass, ``hf_runtime.backward_step``).

The signal module has no such "record, raise on the second" handler, hence this one.  Nothing is installed outside
the main thread, nor where SIGINT is ignored (a shell's background job): the process keeps the disposition it has.
"""

from __future__ import annotations

import signal
import threading


class interrupts_watched:
    """Context manager: while active, a SIGINT sets ``requested``; a second one raises ``KeyboardInterrupt`` at once
    (as Python's default handler does), unless ``hold``."""

    def __init__(self, hold: bool = False):
        self.hold, self.requested, self._previous = hold, False, None

    def __enter__(self) -> interrupts_watched:
        if threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGINT)
            if current is not signal.SIG_IGN:
                self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and not self.hold:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
