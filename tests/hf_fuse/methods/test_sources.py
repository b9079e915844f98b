"""The source models of distill and project are checked as hf-fuse checks its target: refused when the shapes do not
fit the source adapter, a warning (log and fusion_report.json) when only the family differs."""

import json

import pytest
from click.testing import CliRunner
from tiny_models import make_distill_setting, make_source_model

from hf_fuse.cli import main


@pytest.fixture(scope="module")
def setting(fusion, tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    setting = make_distill_setting(fusion, root, n_prompts=3)
    # a Llama model with exactly the Qwen2 source's shapes: it fits the source adapter, but is not what it was made for
    return {**setting, "llama_like_source": make_source_model(root / "llama", "llama", hidden=48, n_layers=3)["base"]}


@pytest.mark.parametrize("method", ["distill", "project"])
def test_a_source_model_of_another_family_whose_shapes_fit_is_used_with_a_warning(setting, tmp_path, method):
    extra = (["--unlabeled", str(setting["unlabeled"]), "--gen-max-new-tokens", "2", "--max-steps", "1",
              "--max-examples-per-file", "4"] if method == "distill" else [])
    result = CliRunner().invoke(main, [str(setting["plan"]), "--base-model", str(setting["base"]), "--replay",
                                       str(setting["replay"]), "-o", str(tmp_path / "out"), "--method", method,
                                       "--source-model", f"0={setting['llama_like_source']}", *extra])
    assert result.exit_code == 0, result.output
    expected = "is a llama model (llama), but source adapter 0 was made for a qwen2 model"
    assert expected in " ".join(result.stderr.split())  # the terminal may wrap the line
    assert any(expected in w for w in json.loads((tmp_path / "out/fusion_report.json").read_text())["warnings"])


def test_a_source_model_whose_shapes_do_not_fit_is_refused_before_loading(setting, tmp_path):
    result = CliRunner().invoke(main, [str(setting["plan"]), "--base-model", str(setting["base"]), "--replay",
                                       str(setting["replay"]), "-o", str(tmp_path / "out"), "--method", "project",
                                       "--source-model", f"0={setting['base']}"])
    assert result.exit_code == 2 and "source adapter 0" in result.stderr and "was trained for" in result.stderr
