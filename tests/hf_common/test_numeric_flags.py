"""Numeric flags are checked where they are parsed (range and type), before anything loads: one line, exit 2, the flag
named; never an error from a library deep inside (a seed past what torch's generators take ended with exit 4)."""

import pytest
from click.testing import CliRunner

from hf_common.errors import ConfigError, require_int
from hf_eval.cli import main as hf_eval
from hf_fuse.cli import main as hf_fuse


@pytest.mark.parametrize("value", ["-1", str(2**40), "1.5", "x"])
@pytest.mark.parametrize("command", ["hf-fuse", "train-expert", "replay-tune"])
def test_a_seed_out_of_range_or_of_the_wrong_type_is_refused_in_one_line(tmp_path, command, value):
    if command == "hf-fuse":
        main, argv = hf_fuse, ["plan.h5", "--base-model", "b", "--replay", "r.json", "-o", str(tmp_path / "o")]
    else:
        main, argv = hf_eval, [command, "--base-model", "b", "-o", str(tmp_path / "o"),
                               *(["--data", "d.json"] if command == "train-expert" else ["--adapter", "a", "--replay", "r"])]
    result = CliRunner().invoke(main, [*argv, "--seed", value])
    assert result.exit_code == 2 and "--seed" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


@pytest.mark.parametrize(("value", "low", "high", "auto", "message"), [
    (0, 1, None, False, "--x must be a positive integer (got 0)"),
    (True, 1, None, False, "--x must be a positive integer (got True)"),
    (2.0, 1, None, False, "--x must be a positive integer (got 2.0)"),
    (101, 1, 100, False, "--x must be an integer from 1 to 100 (got 101)"),
    ("auto", 1, 100, False, "--x must be an integer from 1 to 100 (got 'auto')"),
    ("twice", 0, 9, True, "--x must be an integer from 0 to 9 or auto (got 'twice')"),
])
def test_require_int_names_the_flag_and_what_it_takes(value, low, high, auto, message):
    with pytest.raises(ConfigError) as caught:
        require_int("--x", value, low, high, auto=auto)
    assert str(caught.value) == message


@pytest.mark.parametrize(("value", "low", "high", "auto"), [(1, 1, None, False), (100, 1, 100, False), (0, 0, 9, False),
                                                           ("auto", 1, None, True)])
def test_require_int_accepts_what_is_in_range(value, low, high, auto):
    require_int("--x", value, low, high, auto=auto)
