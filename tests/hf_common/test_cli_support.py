"""An unexpected exception is never read as a verdict: exit 4, one line, 'please report'; --debug re-raises it."""

import pytest
from click.testing import CliRunner


def _boom(*args, **kwargs):
    raise RuntimeError("something nobody planned for\nsecond line")


@pytest.mark.parametrize("cli", ["hf-analyze", "hf-fuse", "hf-eval"])
def test_unexpected_errors_exit_4_with_one_line(cli, fusion, tmp_path, monkeypatch):
    if cli == "hf-analyze":
        import hf_analyze.planner as module

        monkeypatch.setattr(module, "analyze", _boom)
        argv = ["--target", fusion["target"], "--source", fusion["qwen"], "-o", tmp_path / "plan.h5"]
    elif cli == "hf-fuse":
        import hf_fuse.run as module

        monkeypatch.setattr(module, "preflight", _boom)
        argv = [fusion["plan"], "--base-model", fusion["base"], "--replay", fusion["replay"], "-o", tmp_path / "out"]
    else:
        import hf_eval.null_source as module

        monkeypatch.setattr(module, "load_adapter", _boom)
        argv = ["null-source", fusion["qwen"], "-o", tmp_path / "out"]
    main = {"hf-analyze": "hf_analyze.cli", "hf-fuse": "hf_fuse.cli", "hf-eval": "hf_eval.cli"}[cli]
    entry = __import__(main, fromlist=["main"]).main
    result = CliRunner().invoke(entry, [str(a) for a in argv])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 4, result.output
    assert len(lines) == 1 and "please report" in lines[0] and "RuntimeError" in lines[0] and "Traceback" not in result.output
    assert not [p for p in tmp_path.iterdir()]  # nothing written
    debug = CliRunner().invoke(entry, [str(a) for a in argv] + ["--debug"])
    assert isinstance(debug.exception, RuntimeError)


@pytest.mark.parametrize("module, prog", [("hf_analyze.cli", "hf-analyze"), ("hf_fuse.cli", "hf-fuse"),
                                          ("hf_eval.cli", "hf-eval")])
def test_every_cli_answers_version(module, prog):
    from hf_common import __version__

    result = CliRunner().invoke(__import__(module, fromlist=["main"]).main, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"{prog}, version {__version__}"
