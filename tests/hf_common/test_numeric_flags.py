"""Numeric flags are checked where they are parsed (range and type), before anything loads: one line, exit 2, the flag
named; never an error from a library deep inside (a seed past what torch's generators take ended with exit 4)."""

import pytest
from click.testing import CliRunner

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
