import json
import shutil
from pathlib import Path

import h5py
import jsonschema
import pytest
from click.testing import CliRunner

from hf_fuse.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _run(fusion, tmp_path, **overrides):
    args = {"plan": fusion["plan"], "--base-model": fusion["base"], "--replay": fusion["replay"], "-o": tmp_path / "out"}
    args.update(overrides)
    argv = [str(args.pop("plan"))]
    for key, value in args.items():
        argv += [key] if value is True else [key, str(value)]
    defaults = {"--max-steps": "1", "--grad-accum": "1", "--embed-dim": "auto", "--n-heads": "2", "--n-proj": "16"}
    argv += [x for key, value in defaults.items() if key not in args for x in (key, value)]
    return CliRunner().invoke(main, argv, catch_exceptions=False)


def test_cli_fuses_and_writes_report(fusion, tmp_path):
    result = _run(fusion, tmp_path, **{"--json": tmp_path / "report.json"})
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(report, json.loads((ROOT / "schemas/fusion-report.schema.json").read_text()))
    assert report == json.loads((tmp_path / "out/fusion_report.json").read_text())
    assert report["format"] == "heterofusion-fusion-report" and len(report["tasks"][0]["history"]) == 1
    assert (tmp_path / "out/adapter_model.safetensors").exists() and (tmp_path / "out.log").exists()
    assert "q_proj.r4" in result.output
    from hf_common.model_card import read_front_matter

    front = read_front_matter(tmp_path / "out")
    assert front["library_name"] == "peft" and "fusion-hypernet" in front["tags"] and "llama" in front["tags"]
    config = json.loads((tmp_path / "out/adapter_config.json").read_text())
    card = (tmp_path / "out/README.md").read_text()
    # the tiny base model is a local folder, no Hub id: the card names it by its folder name, the config keeps the path
    assert "base_model" not in front and config["base_model_name_or_path"] == str(fusion["base"])
    assert f"{fusion['plan'].name} (sha256 " in card and str(fusion["plan"].parent) not in card
    from html_check import check_report

    held = check_report(tmp_path / "out/report.html")
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pngs == ["task1-alpha.png", "task1-attention.png", "task1-eq11.png", "task1-loss.png",
                    "task1-update-by-layer.png"] and held["images"] == len(pngs)
    group = report["tasks"][0]["groups"]["q_proj.r4"]
    assert f"{group['alpha']:.4g}" in held["text"] and len(group["per_module"]) == group["n_modules"]
    assert all(m["eq11_actual"] <= m["eq11_bound"] * (1 + 1e-5) for m in group["per_module"])


def _bad(fusion, tmp_path, how):
    if how == "missing_plan":
        return {"plan": tmp_path / "nope.h5"}, "plan file not found"
    if how == "corrupt_plan":
        plan = shutil.copy(fusion["plan"], tmp_path / "bad.h5")
        with h5py.File(plan, "r+") as handle:
            handle["groups/q_proj.r4/target/descriptors"][0, 0] += 1
        return {"plan": plan}, "checksum mismatch"
    if how == "missing_base":
        return {"--base-model": tmp_path / "nomodel"}, "base model not found"
    if how == "wrong_base":
        folder = shutil.copytree(fusion["base"], tmp_path / "wide")
        config = json.loads((folder / "config.json").read_text())
        config["hidden_size"] = 48
        (folder / "config.json").write_text(json.dumps(config))
        return {"--base-model": folder}, "in this base model, but the plan's target adapter was trained for"
    if how == "bad_replay":
        (tmp_path / "r.jsonl").write_text('{"instruction": "x", "output": "y"}\n{oops\n')
        return {"--replay": tmp_path / "r.jsonl"}, "line 2"
    if how == "exists":
        (tmp_path / "out").mkdir()
        (tmp_path / "out/keep.txt").write_text("mine")
        return {}, "--force"
    raise ValueError(how)


@pytest.mark.parametrize("how", ["missing_plan", "corrupt_plan", "missing_base", "wrong_base", "bad_replay", "exists"])
def test_bad_input_exit_2_and_nothing_written(fusion, tmp_path, how):
    overrides, message = _bad(fusion, tmp_path, how)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = _run(fusion, tmp_path, **overrides)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no checkpoint, no log
    if how == "exists":
        assert (tmp_path / "out/keep.txt").read_text() == "mine"


@pytest.mark.parametrize("flag, value, message", [
    ("--n-heads", "0", "--n-heads must be a positive integer"),
    ("--embed-dim", "30", "must be divisible by the number of heads"),  # 30 is not a multiple of the 8 heads
    ("--max-positions", "0", "--max-positions must be a positive integer"),
    ("--alpha-init", "nan", "--alpha-init must be a finite number"),
    ("--mu-target", "inf", "--mu-target is out of range"),
    ("--lr", "nan", "--lr is out of range"),
])
def test_every_option_is_checked_before_any_model_loads(fusion, tmp_path, monkeypatch, flag, value, message):
    import hf_fuse.run

    def must_not_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(hf_fuse.run, "load_model_and_tokenizer", must_not_load)
    argv = [str(fusion["plan"]), "--base-model", str(fusion["base"]), "--replay", str(fusion["replay"]), "-o",
            str(tmp_path / "out"), "--embed-dim", "auto", flag, value]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (tmp_path / "out").exists()


def test_a_run_refused_after_logging_started_leaves_no_log(fusion, tmp_path):
    (tmp_path / "out.ckpt").mkdir()
    (tmp_path / "out.ckpt/task0.pt").write_bytes(bytes(range(256)) * 4)  # found only once training starts
    result = _run(fusion, tmp_path, **{"--resume": True})
    assert result.exit_code == 2 and "task0.pt" in result.stderr, result.output
    assert not (tmp_path / "out.log").exists() and not (tmp_path / "out").exists()


def test_paper_preset_sets_the_authors_choices_and_flags_still_win(fusion, tmp_path):
    from hf_fuse.cli import resolve_preset

    assert resolve_preset("paper") == {"init": "xavier", "weight_decay": 0.01, "max_grad_norm": 0.0,
                                       "warmup_rounding": "down", "reset_alpha": True}
    assert resolve_preset("paper", weight_decay=0.0)["weight_decay"] == 0.0
    assert resolve_preset("default")["init"] == "torch"
    result = _run(fusion, tmp_path, **{"--preset": "paper", "--max-grad-norm": "2", "--json": tmp_path / "r.json"})
    assert result.exit_code == 0, result.output
    train = json.loads((tmp_path / "r.json").read_text())["settings"]["train"]
    assert train["weight_decay"] == 0.01 and train["max_grad_norm"] == 2.0 and train["warmup_rounding"] == "down"
    hypernet = json.loads((tmp_path / "r.json").read_text())["settings"]["hypernet"]
    assert hypernet["reset_alpha"] is True and hypernet["init"] == "xavier"


def test_xavier_init_keeps_the_zero_decoder_and_floor_warmup():
    import torch

    from hf_fuse.methods.hypernet.network import HyperNet, HyperNetConfig
    from hf_runtime.trainer import TrainSettings

    torch.manual_seed(0)
    net = HyperNet(HyperNetConfig(block_size=4, rank=2, embed_dim=16, n_heads=2, init="xavier"))
    assert float(net.decoder[-1].weight.detach().abs().sum()) == 0.0  # step 0 still exports the target unchanged
    assert not net.encoder.row_proj.bias.detach().any() and not net.decoder[0].bias.detach().any()
    assert TrainSettings(warmup_ratio=0.05, warmup_rounding="down").warmup_steps(10) == 0
    assert TrainSettings(warmup_ratio=0.05).warmup_steps(10) == 1
    assert TrainSettings(max_grad_norm=0.0).clip_norm == float("inf")


def test_config_file_round_trip_gives_the_same_fused_adapter(fusion, tmp_path):
    first = _run(fusion, tmp_path, **{"--lr": "3e-3", "--seed": "5"})
    assert first.exit_code == 0, first.output
    recorded = tmp_path / "out/fusion_config.yaml"
    import yaml

    config = yaml.safe_load(recorded.read_text())
    assert config["lr"] == 3e-3 and config["seed"] == 5 and config["plans"] == [str(fusion["plan"])]
    again = CliRunner().invoke(main, ["--config", str(recorded), "-o", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    a = (tmp_path / "out/adapter_model.safetensors").read_bytes()
    assert a == (tmp_path / "again/adapter_model.safetensors").read_bytes()
    override = CliRunner().invoke(main, ["--config", str(recorded), "-o", str(tmp_path / "other"), "--seed", "6"])
    assert override.exit_code == 0 and yaml.safe_load((tmp_path / "other/fusion_config.yaml").read_text())["seed"] == 6


def test_a_run_given_relative_paths_records_absolute_ones_and_reruns_from_another_folder(fusion, tmp_path, monkeypatch):
    import yaml

    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(fusion["plan"], work / "plan.h5")
    shutil.copy(fusion["replay"], work / "replay.json")
    monkeypatch.chdir(work)
    first = CliRunner().invoke(main, ["plan.h5", "--base-model", str(fusion["base"]), "--replay", "replay.json", "-o", "fused",
                                      "--max-steps", "1", "--grad-accum", "1", "--embed-dim", "auto", "--n-heads", "2",
                                      "--n-proj", "16", "--report-to", "none"])
    assert first.exit_code == 0, first.output
    recorded = yaml.safe_load((work / "fused/fusion_config.yaml").read_text())
    assert recorded["plans"] == [str(work / "plan.h5")] and recorded["replay"] == [str(work / "replay.json")]
    assert recorded["output"] == str(work / "fused") and recorded["report-to"] == "none"
    monkeypatch.chdir(tmp_path)
    again = CliRunner().invoke(main, ["--config", str(work / "fused/fusion_config.yaml"), "-o", "again"])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again/adapter_model.safetensors").read_bytes() == (work / "fused/adapter_model.safetensors").read_bytes()


@pytest.mark.parametrize("text, message", [
    ("lr: 1e-3\nlearning-rate: 2\n", "unknown key 'learning-rate'"),
    ("max-steps: lots\n", "key 'max-steps'"),
    ("- a\n- b\n", "must be a mapping"),
    ("lr: [1, 2]\n", "key 'lr' must be a single value"),
    ("seed: {a: 1}\n", "key 'seed' must be a single value"),
    ("lr: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
])
def test_bad_config_files_are_refused_naming_the_key_and_the_file(fusion, tmp_path, text, message):
    config = tmp_path / "fuse.yaml"
    config.write_text(text)
    result = CliRunner().invoke(main, ["--config", str(config), str(fusion["plan"]), "--base-model", str(fusion["base"]),
                                       "--replay", str(fusion["replay"]), "-o", str(tmp_path / "out")])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in result.stderr, result.output
    assert str(config) in result.stderr and not (tmp_path / "out").exists()


def test_report_to_tensorboard_logs_every_step_through_accelerate(fusion, tmp_path):
    from tb_events import scalars

    result = _run(fusion, tmp_path, **{"--report-to": "tensorboard", "--max-steps": "3", "-q": True})
    assert result.exit_code == 0, result.output
    logged = scalars(tmp_path / "out.runs")
    history = json.loads((tmp_path / "out/fusion_report.json").read_text())["tasks"][0]["history"]
    assert [step for step, _ in logged["train/loss"]] == [1, 2, 3]
    assert [round(v, 4) for _, v in logged["train/loss"]] == [round(h["loss"], 4) for h in history]
    assert "train/alpha/q_proj.r4" in logged and "train/rdm" in logged
    assert "report-to: tensorboard" in (tmp_path / "out/fusion_config.yaml").read_text()  # a re-run logs alike


def test_report_to_wandb_without_wandb_is_refused_before_loading(fusion, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    result = _run(fusion, tmp_path, **{"--report-to": "wandb"})
    assert result.exit_code == 2 and "pip install wandb" in result.output and not (tmp_path / "out").exists()


def test_a_fusion_of_a_null_source_says_it_is_a_control(fusion, tmp_path):
    from hf_analyze.execute import execute
    from hf_analyze.planner import AnalyzeSettings, analyze
    from hf_analyze.report import build_report
    from hf_common.model_card import read_front_matter
    from hf_eval.null_source import write_null_source

    write_null_source(fusion["qwen"], tmp_path / "null", seed=0, force=False)
    analysis = analyze(fusion["target"], [tmp_path / "null"], AnalyzeSettings(block_size="auto"))
    execute(analysis, build_report(analysis), tmp_path / "null-plan.h5")
    result = _run(fusion, tmp_path, plan=tmp_path / "null-plan.h5", **{"--max-steps": "0"})
    assert result.exit_code == 0, result.output
    card = (tmp_path / "out/README.md").read_text()
    assert "# NULL-SOURCE CONTROL, not for use" in card and "A control, not a model to use" in card
    assert "null-source-control" in read_front_matter(tmp_path / "out")["tags"]
    real = _run(fusion, tmp_path, **{"--max-steps": "0", "-o": tmp_path / "real"})
    assert real.exit_code == 0 and "null-source-control" not in read_front_matter(tmp_path / "real")["tags"]
