"""Ctrl-C in the training loop: the first stops it at the end of the step, with that step's checkpoint, even when it
arrives inside a finaliser (where Python's own handler raises a KeyboardInterrupt that the interpreter drops); a
second stops it at once, keeping the last completed step.  The handler is only installed where SIGINT is not
ignored, and is removed afterwards."""

import gc
import json
import os
import signal
import weakref
from pathlib import Path

import pytest
import torch
from toy_objective import LinearObjective

from hf_runtime.data import Example
from hf_runtime.interrupts import interrupts_watched
from hf_runtime.trainer import Checkpointer, TrainSettings, train


def _ctrl_c_in_a_finaliser() -> None:
    """Deliver SIGINT inside a finaliser, where a KeyboardInterrupt would be printed and dropped."""
    class Holder:
        pass

    holder = Holder()
    weakref.finalize(holder, os.kill, os.getpid(), signal.SIGINT)
    del holder
    gc.collect()


@pytest.fixture
def python_ctrl_c():
    """Python's own SIGINT handler, as in a terminal (a shell's background job starts with SIGINT ignored)."""
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, outer)


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):  # the handler runs between bytecodes of the main thread, soon after delivery
        pass


def test_the_first_interrupt_is_recorded_even_in_a_finaliser_and_the_second_raises(python_ctrl_c):
    with pytest.raises(KeyboardInterrupt):
        with interrupts_watched() as watch:
            _ctrl_c_in_a_finaliser()  # recorded, nothing raised (nor dropped)
            assert watch.requested
            _ctrl_c()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with interrupts_watched(hold=True) as held:
        _ctrl_c()
        _ctrl_c()  # held: recorded, never raised
    assert held.requested


def test_nothing_is_installed_where_sigint_is_ignored():
    outer = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts_watched():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, outer)


def _train(tmp_path, on_step) -> Checkpointer:
    examples = [Example([1, 2], [1, 2], "a")] * 4
    checkpointer = Checkpointer(tmp_path / "ckpt", {"run": 1})
    settings = TrainSettings(max_steps=10, grad_accum=1, checkpoint_every=100, gradient_checkpointing=False)
    with pytest.raises(KeyboardInterrupt):
        train(LinearObjective(on_step), examples, settings, torch.device("cpu"), checkpointer)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    return checkpointer


def _saved_step(checkpointer: Checkpointer) -> int:
    return torch.load(checkpointer.path(0), weights_only=True)["state"]["step"]


def test_the_loop_stops_at_the_end_of_the_step_of_the_first_interrupt(python_ctrl_c, tmp_path):
    # during step 3 (index 2), from a finaliser: steps 1-3 complete, not 10
    assert _saved_step(_train(tmp_path, lambda step: _ctrl_c_in_a_finaliser() if step == 2 else None)) == 3


def test_a_second_interrupt_stops_at_once_and_keeps_the_last_completed_step(python_ctrl_c, tmp_path):
    assert _saved_step(_train(tmp_path, lambda step: (_ctrl_c(), _ctrl_c()) if step == 2 else None)) == 2


TWO_PROCESSES = '''
import json, os, signal, sys
import torch
from hf_runtime.data import Example
from hf_runtime.distributed import finish, processes
from hf_runtime.trainer import Checkpointer, TrainSettings, train
from toy_objective import LinearObjective

rank, steps = processes().rank, []


def on_step(step):
    steps.append(step)
    if rank == 1 and step == 2:  # Ctrl-C reaches process 1 only
        os.kill(os.getpid(), signal.SIGINT)


signal.signal(signal.SIGINT, signal.default_int_handler)
checkpointer = Checkpointer(sys.argv[1], {"run": 1})
try:
    train(LinearObjective(on_step), [Example([1, 2], [1, 2], "a")] * 4, TrainSettings(max_steps=10, grad_accum=2,
          checkpoint_every=100, gradient_checkpointing=False), torch.device("cpu"), checkpointer)
except KeyboardInterrupt:
    json.dump(len(steps), open(f"{sys.argv[1]}-rank{rank}.json", "w"))
    finish()
'''


def test_a_ctrl_c_reaching_one_of_two_processes_stops_both_after_the_same_step(tmp_path):
    """The stop is agreed across processes: without it the other process would enter the next step's all-reduce alone."""
    import subprocess
    import sys

    (tmp_path / "run.py").write_text(TWO_PROCESSES)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run = subprocess.Popen([*launcher, str(tmp_path / "run.py"), str(tmp_path / "ckpt")], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
                                "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1] / "support"),
                                                                            os.environ.get("PYTHONPATH")]))})
    try:
        _, err = run.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # one process waits in an all-reduce for ever: end them all
        os.killpg(run.pid, signal.SIGKILL)
        pytest.fail("a process kept training after the other stopped")
    assert run.returncode == 0, err[-2000:]
    ran = [json.loads((tmp_path / f"ckpt-rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ran == [3, 3]  # both completed steps 1-3 and stopped
    assert torch.load(tmp_path / "ckpt/task0.pt", weights_only=True)["state"]["step"] == 3
