import json
import sys

import pytest

from hf_common.console import Console
from hf_eval.experiment import Experiment, StepFailed


def _write(path, text="ok"):
    return [sys.executable, "-c", f"import pathlib; pathlib.Path({str(path)!r}).write_text({text!r})"]


def test_steps_with_any_name_are_measured_recorded_and_skipped_once_done(tmp_path):
    exp = Experiment(tmp_path / "work", Console(quiet=True))
    out = tmp_path / "out.txt"
    record = exp.run("eval (before / after)", _write(out), out)
    assert record["rc"] == 0 and record["seconds"] >= 0 and record["peak_mib"] > 0
    assert json.loads((tmp_path / "work" / "steps.json").read_text())["eval (before / after)"]["rc"] == 0
    out.write_text("kept")
    again = Experiment(tmp_path / "work", Console(quiet=True)).run("eval (before / after)", _write(out), out)
    assert again == record and out.read_text() == "kept"  # a finished step with the same command is never redone
    assert not list((tmp_path / "work").glob(".*measure.json"))


def test_a_failing_step_raises_and_is_redone_on_the_next_run(tmp_path):
    exp = Experiment(tmp_path, Console(quiet=True))
    out = tmp_path / "out.txt"
    with pytest.raises(StepFailed, match="exit 3"):
        exp.run("broken", [sys.executable, "-c", "raise SystemExit(3)"], out)
    exp.run("broken", _write(out), out)
    assert out.read_text() == "ok"


def test_two_invocations_on_one_folder_keep_each_others_records(tmp_path):
    first, second = (Experiment(tmp_path, Console(quiet=True)) for _ in range(2))  # both read an empty folder
    first.run("a", _write(tmp_path / "a.txt"), tmp_path / "a.txt")
    second.run("b", _write(tmp_path / "b.txt"), tmp_path / "b.txt")  # must not drop "a", which it never saw
    assert set(json.loads((tmp_path / "steps.json").read_text())) == {"a", "b"}


def test_a_step_whose_command_changed_is_run_again(tmp_path):
    exp = Experiment(tmp_path, Console(quiet=True))
    out = tmp_path / "out.txt"
    exp.run("step", _write(out, "first"), out)
    exp.run("step", _write(out, "first"), out)  # same command: skipped
    assert out.read_text() == "first"
    exp.run("step", _write(out, "second"), out)  # e.g. an evaluation of other adapters under the same name
    assert out.read_text() == "second"


def test_two_invocations_needing_one_step_at_once_run_it_once(tmp_path):
    import threading

    out, tally = tmp_path / "out.txt", tmp_path / "tally.txt"
    # the step appends to a tally (so running it twice shows) and takes a moment (so both arrive while it runs)
    step = [sys.executable, "-c", f"import pathlib, time; t = pathlib.Path({str(tally)!r}); "
            f"t.write_text((t.read_text() if t.exists() else '') + 'x'); time.sleep(1); "
            f"pathlib.Path({str(out)!r}).write_text('ok')"]
    invocations = [Experiment(tmp_path, Console(quiet=True)) for _ in range(2)]  # both read the folder before it ran
    threads = [threading.Thread(target=exp.run, args=("shared", step, out)) for exp in invocations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tally.read_text() == "x" and out.read_text() == "ok"


def test_a_step_stopped_part_way_continues_from_its_checkpoint_and_a_finished_one_never_does(tmp_path):
    out, ckpt, argv = tmp_path / "out", tmp_path / "out.ckpt", tmp_path / "argv.json"
    # the step records the arguments it was given, then writes its output
    step = [sys.executable, "-c", f"import json, pathlib, sys; pathlib.Path({str(argv)!r}).write_text("
            f"json.dumps(sys.argv[1:])); pathlib.Path({str(out)!r}).write_text('ok')", "--lr", "3e-3"]
    exp = Experiment(tmp_path / "work", Console(quiet=True))
    exp.run("train", step, out, checkpoints=ckpt)  # no checkpoint yet: from step 0
    assert json.loads(argv.read_text()) == ["--lr", "3e-3"]

    out.unlink()
    (tmp_path / "work" / "steps.json").unlink()  # as after a stop part-way: no record, a checkpoint left behind
    ckpt.mkdir()
    (ckpt / "task0.pt").write_bytes(b"")
    exp = Experiment(tmp_path / "work", Console(quiet=True))
    record = exp.run("train", step, out, checkpoints=ckpt)
    assert json.loads(argv.read_text()) == ["--lr", "3e-3", "--resume"]
    assert "--resume" not in record["cmd"]  # not part of the step's identity: the same command skips it now
    assert record["resumed"]  # its seconds are the resumed part's: the report says so
    argv.unlink()
    exp.run("train", step, out, checkpoints=ckpt)
    assert not argv.exists()

    exp.run("train", [*step[:-1], "1e-3"], out, checkpoints=ckpt)  # finished, then its command changed: from step 0
    assert json.loads(argv.read_text()) == ["--lr", "1e-3"]
