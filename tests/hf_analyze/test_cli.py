import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from hf_analyze.cli import main

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas/analysis-report.schema.json").read_text())


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_compatible_run_writes_plan_and_valid_json(adapters, tmp_path):
    result = run("--target", adapters["llama"], "--source", adapters["qwen2"], "--source", adapters["gemma3"],
                 "-o", tmp_path / "plan.h5", "--json", tmp_path / "report.json", "--block-size", "auto")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(report, SCHEMA)
    assert report["compatible"] and len(report["groups"]) == 7
    assert report["layer_maps"][0] == [[2, 0], [3, 1], [4, 2], [5, 3]]
    assert "Layer maps" in result.stdout and "Groups" in result.stdout
    shown = run("show", tmp_path / "plan.h5", "--json", "-")
    assert shown.exit_code == 0
    assert json.loads(shown.stdout) == report  # show gives the same object
    assert "Groups" in shown.stderr  # with --json -, the rich report goes to stderr


def test_json_to_stdout_is_pure_json(adapters):
    result = run("--target", adapters["llama"], "--source", adapters["gpt2"], "--check", "--json", "-")
    assert result.exit_code == 0
    jsonschema.validate(json.loads(result.stdout), SCHEMA)


def test_check_writes_no_plan(adapters, tmp_path):
    result = run("--target", adapters["llama"], "--source", adapters["qwen2"], "--check")
    assert result.exit_code == 0 and list(tmp_path.iterdir()) == []


def test_nothing_to_fuse_exits_1(adapters, tmp_path):
    map_file = tmp_path / "map.json"
    map_file.write_text("[]")  # an empty user map: no layer pairs at all
    result = run("--target", adapters["llama"], "--source", adapters["qwen2"], "-o", tmp_path / "plan.h5",
                 "--layer-map", map_file, "--json", tmp_path / "r.json")
    assert result.exit_code == 1
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, SCHEMA)
    assert not report["compatible"] and report["groups"] == [] and len(report["unmatched"]) == 42
    assert not (tmp_path / "plan.h5").exists()


def test_existing_output_needs_force(adapters, tmp_path):
    plan = tmp_path / "plan.h5"
    plan.write_text("precious")
    result = run("--target", adapters["llama"], "--source", adapters["qwen2"], "-o", plan)
    assert result.exit_code == 2 and "--force" in result.stderr
    assert plan.read_text() == "precious"
    assert run("--target", adapters["llama"], "--source", adapters["qwen2"], "-o", plan, "--force").exit_code == 0


@pytest.mark.parametrize("args, message", [
    (["--source", "X", "-o", "p.h5"], "--target and at least one --source are required"),
    (["--target", "X", "--source", "Y"], "-o/--output"),
    (["--target", "T", "--source", "S", "--check", "--transfer-ratio", "1.5"], "--transfer-ratio must be in (0, 1]"),
    (["--target", "T", "--source", "S", "--check", "--block-size", "big"], "must be a positive integer or 'auto'"),
])
def test_usage_errors_exit_2(adapters, args, message):
    args = [str(adapters["llama"]) if a == "T" else str(adapters["qwen2"]) if a == "S" else a for a in args]
    result = run(*args)
    assert result.exit_code == 2 and message in result.output


def _broken(adapters, tmp_path, how):
    folder = Path(shutil.copytree(adapters["qwen2"], tmp_path / "broken"))
    weights = folder / "adapter_model.safetensors"
    if how == "missing":
        shutil.rmtree(folder)
    elif how == "truncated":
        weights.write_bytes(weights.read_bytes()[: len(weights.read_bytes()) // 2])
    elif how == "json":
        (folder / "adapter_config.json").write_text("{")
    elif how == "nan":
        from safetensors.numpy import load_file, save_file

        state = load_file(weights)
        key = next(k for k in state if k.endswith("layers.3.mlp.down_proj.lora_A.weight"))
        state[key][1, 1] = float("nan")
        save_file(state, weights)
    elif how == "config":  # the base model's config.json with an impossible value
        config_path = tmp_path / "qwen2-base" / "config.json"
        config_path.parent.mkdir()
        config_path.write_text(json.dumps({"model_type": "qwen2", "num_hidden_layers": -4, "hidden_size": 48}))
        adapter_config = json.loads((folder / "adapter_config.json").read_text())
        adapter_config["base_model_name_or_path"] = str(config_path.parent)
        (folder / "adapter_config.json").write_text(json.dumps(adapter_config))
    elif how == "shape":
        from safetensors.numpy import load_file, save_file

        state = load_file(weights)
        key = next(k for k in state if k.endswith("layers.0.mlp.up_proj.lora_A.weight"))
        state[key] = state[key][:, :5]
        save_file(state, weights)
    return folder


@pytest.mark.parametrize("how, message", [
    ("missing", "no such adapter folder"), ("truncated", "truncated"), ("json", "malformed JSON"),
    ("nan", "non-finite values"), ("shape", "lora_A is 8 x 5"),
    ("config", "config.json says num_hidden_layers = -4; it must be a positive number"),
])
def test_bad_input_is_one_line_exit_2_and_no_output(adapters, tmp_path, how, message):
    source = _broken(adapters, tmp_path, how)
    out = tmp_path / "out"
    out.mkdir()
    result = run("--target", adapters["llama"], "--source", source, "-o", out / "plan.h5", "--json", out / "r.json")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and str(source) in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert list(out.iterdir()) == []  # no plan, no JSON, no temporary file


def test_show_bad_plan(tmp_path):
    (tmp_path / "p.h5").write_text("nope")
    result = run("show", tmp_path / "p.h5")
    assert result.exit_code == 2 and "p.h5" in result.stderr and "not a readable HDF5 plan" in result.stderr


BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'peft', 'accelerate'):
            raise ImportError(f'{name} is blocked in this test')
sys.meta_path.insert(0, _NoTorch())
from hf_analyze.cli import main
main(sys.argv[1:], prog_name='hf-analyze')
"""


def _run_without_torch(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=ROOT)


def test_analyzer_runs_without_torch(tmp_path):
    from hf_analyze.example import write_example

    paths = write_example(tmp_path / "ex")
    help_run = _run_without_torch("--help")
    assert help_run.returncode == 0 and "--block-size" in help_run.stdout
    result = _run_without_torch("--target", paths["target"], "--source", paths["gemma3"], "--source", paths["qwen"],
                                "-o", tmp_path / "plan.h5", "--json", "-", "--block-size", "auto")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["compatible"] and report["sources"][1]["dtype"] == "BF16"
    assert _run_without_torch("show", tmp_path / "plan.h5").returncode == 0


def test_legacy_bin_without_torch_is_a_clear_error(tmp_path):
    from factories import make_peft_adapter

    from hf_analyze.example import write_example

    paths = write_example(tmp_path / "ex")
    legacy = make_peft_adapter(tmp_path / "bin", "qwen2", n_layers=2, safe=False)
    result = _run_without_torch("--target", paths["target"], "--source", legacy, "--check")
    assert result.returncode == 2
    assert "needs PyTorch" in result.stderr and "adapter_model.bin" in result.stderr


def test_a_source_that_is_the_target_itself_is_warned_about(adapters):
    result = run("--target", adapters["llama"], "--source", adapters["llama"], "--source", adapters["qwen2"], "--source",
                 adapters["qwen2"], "--check", "--json", "-")
    warnings = json.loads(result.stdout)["warnings"]
    assert any("source 0" in w and "is the target adapter itself" in w for w in warnings)
    assert any("source 2" in w and "is source 1 again" in w for w in warnings)
    assert "is the target adapter itself" in " ".join(result.stderr.split())


def test_config_file_and_the_plan_keeps_the_resolved_options(adapters, tmp_path):
    import yaml

    from hf_common.plan import Plan

    config = tmp_path / "analyze.yaml"
    config.write_text(yaml.safe_dump({"target": str(adapters["llama"]), "source": [str(adapters["qwen2"])],
                                      "block-size": "auto", "transfer-ratio": 0.5}))
    result = run("--config", config, "-o", tmp_path / "plan.h5")
    assert result.exit_code == 0, result.output
    with Plan(tmp_path / "plan.h5") as plan:
        recorded = yaml.safe_load(plan.config_text())
        assert plan.settings["transfer_ratio"] == 0.5
    assert recorded["transfer-ratio"] == 0.5 and recorded["source"] == [str(adapters["qwen2"])]
    (tmp_path / "again.yaml").write_text(plan_config := yaml.safe_dump(recorded))
    assert "json" not in yaml.safe_load(plan_config)  # where to report is not part of the job
    again = run("--config", tmp_path / "again.yaml", "-o", tmp_path / "again.h5")
    assert again.exit_code == 0, again.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("transfer-ratio: high\n")
    refused = run("--config", bad, "--target", adapters["llama"], "--source", adapters["qwen2"], "--check")
    assert refused.exit_code == 2 and "key 'transfer-ratio'" in refused.stderr and str(bad) in refused.stderr


def test_licences_are_shown_side_by_side_and_a_difference_is_warned_about(adapters, tmp_path):
    target = shutil.copytree(adapters["llama"], tmp_path / "t")
    source = shutil.copytree(adapters["qwen2"], tmp_path / "s")
    (target / "README.md").write_text("---\nlicense: apache-2.0\nbase_model: meta-llama/x\n---\n")
    (source / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n# a card\n")
    result = run("--target", target, "--source", source, "--check", "--json", "-")
    report = json.loads(result.stdout)
    jsonschema.validate(report, SCHEMA)
    by_role = {e["role"]: e for e in report["licenses"]}
    assert by_role["target"]["license"] == "apache-2.0" and by_role["target"]["card_base_model"] == "meta-llama/x"
    assert by_role["source"]["license"] == "cc-by-nc-4.0" and by_role["source"]["base_model_license"] is None
    assert any("licences differ (apache-2.0, cc-by-nc-4.0)" in w for w in report["warnings"])
    plain = run("--target", adapters["llama"], "--source", adapters["qwen2"], "--check", "--json", "-")
    assert all(e["license"] is None for e in json.loads(plain.stdout)["licenses"])  # nothing written, nothing guessed


def test_html_report_of_an_analysis_of_a_check_and_of_show(adapters, tmp_path):
    from html_check import check_report

    sources = ["--source", adapters["qwen2"], "--source", adapters["gemma3"]]
    result = run("--target", adapters["llama"], *sources, "-o", tmp_path / "plan.h5", "--report", tmp_path / "a.html",
                 "--block-size", "auto", "-q")
    assert result.exit_code == 0, result.output
    held = check_report(tmp_path / "a.html")
    assert held["images"] == 2 + 7  # one layer map per source, one spectra figure per group
    assert "q_proj" in held["text"] and "compatible: 7 groups" in held["text"]
    checked = run("--target", adapters["llama"], *sources, "--check", "--report", tmp_path / "c.html", "--block-size", "auto")
    assert checked.exit_code == 0 and check_report(tmp_path / "c.html")["images"] == 9
    shown = run("show", tmp_path / "plan.h5", "--report", tmp_path / "s.html", "-q")
    assert shown.exit_code == 0 and shown.output == ""
    assert check_report(tmp_path / "s.html")["images"] == 9
    before = (tmp_path / "s.html").read_bytes()
    again = run("show", tmp_path / "plan.h5", "--report", tmp_path / "s.html")
    assert again.exit_code == 2 and "--force" in again.output and (tmp_path / "s.html").read_bytes() == before


@pytest.mark.parametrize("force", [False, True])
def test_a_report_that_cannot_be_written_is_refused_before_the_plan_is(adapters, tmp_path, force):
    (tmp_path / "report.html").mkdir()
    result = CliRunner().invoke(main, ["--target", str(adapters["llama"]), "--source", str(adapters["qwen2"]), "-o",
                                       str(tmp_path / "plan.h5"), "--report", str(tmp_path / "report.html"),
                                       *(["--force"] if force else [])])
    assert result.exit_code == 2 and str(tmp_path / "report.html") in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and ".tmp-" not in result.stderr
    assert not (tmp_path / "plan.h5").exists()


def test_a_later_output_that_fails_takes_the_plan_it_followed_with_it(adapters, tmp_path, monkeypatch):
    import hf_analyze.cli as cli

    def broken(path, *args):
        raise OSError(28, "No space left on device", str(path.with_name(f".{path.name}.tmp-{os.getpid()}")))

    monkeypatch.setattr(cli, "_write_html", broken)
    result = CliRunner().invoke(main, ["--target", str(adapters["llama"]), "--source", str(adapters["qwen2"]), "-o",
                                       str(tmp_path / "plan.h5"), "--report", str(tmp_path / "report.html")])
    assert result.exit_code == 2 and f"{tmp_path / 'report.html'}: No space left on device" in result.stderr, result.output
    assert not (tmp_path / "plan.h5").exists() and list(tmp_path.iterdir()) == []
