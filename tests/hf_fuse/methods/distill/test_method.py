"""``--method distill`` on tiny models of two families: a Llama target and a Qwen2 source with another hidden size,
another depth and another tokenizer."""

import json
import warnings
from pathlib import Path

import jsonschema
import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file
from tiny_models import make_distill_setting

from hf_fuse.cli import main

ROOT = Path(__file__).resolve().parents[4]
FAST = ["--max-steps", "2", "--grad-accum", "1", "--batch-size", "2", "--gen-max-new-tokens", "6", "--gen-batch-size", "4",
        "--max-examples-per-file", "8"]
HYPERNET = ["--embed-dim", "auto", "--n-heads", "2", "--n-proj", "16"]  # the HyperNet student's (refused for the LoRA one)


@pytest.fixture(scope="module")
def setting(fusion, tmp_path_factory):
    return make_distill_setting(fusion, tmp_path_factory.mktemp("distill"), n_prompts=5)


def _fuse(setting, out, *extra):
    argv = [str(setting["plan"]), "--base-model", str(setting["base"]), "--replay", str(setting["replay"]), "-o", str(out),
            "--method", "distill", "--source-model", f"0={setting['source_base']}", "--unlabeled",
            str(setting["unlabeled"]), *FAST, *map(str, extra)]
    return CliRunner().invoke(main, argv)


def _loads_cleanly(setting, adapter):
    from peft import PeftModel

    from hf_runtime.model import load_model_and_tokenizer, resolve_base_model

    model, _ = load_model_and_tokenizer(resolve_base_model(setting["base"]), torch.device("cpu"), torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PeftModel.from_pretrained(model, adapter)
    return not [w for w in caught if "key" in str(w.message).lower()]


@pytest.mark.parametrize("student", ["lora", "hypernet"])
def test_distill_exports_a_target_adapter_and_reports_the_generations(setting, tmp_path, student):
    result = _fuse(setting, tmp_path / "out", "--student", student, "--lr", "1e-3", *(HYPERNET if student == "hypernet" else []))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out/fusion_report.json").read_text())
    jsonschema.validate(report, json.loads((ROOT / "schemas/fusion-report.schema.json").read_text()))
    assert report["method"] == "distill" and report["distill"]["student"] == student
    stats = report["distill"]["sources"]["0"]
    assert stats["prompts"] == 5 and stats["kept"] + stats["empty"] + stats["truncated"] == 5 and stats["cached"] == 0
    fused = load_file(tmp_path / "out/adapter_model.safetensors")
    target = load_file(setting["target"] / "adapter_model.safetensors")
    assert fused.keys() == target.keys() and all(fused[k].dtype == target[k].dtype for k in target)
    changed = [k for k in target if not torch.equal(fused[k], target[k])]
    assert changed and (student == "lora" or all("lora_B" in k for k in changed))  # the HyperNet never changes A
    assert _loads_cleanly(setting, tmp_path / "out")
    assert len(report["tasks"][0]["history"]) == 2


@pytest.mark.parametrize(("student", "given", "lr", "epochs"),
                         [("lora", [], 3e-3, 2.0), ("lora", ["--lr", "1e-3", "--epochs", "1"], 1e-3, 1.0),
                          ("hypernet", HYPERNET, 5e-5, 3.0)])
def test_the_lora_student_trains_at_the_rate_and_budget_validation_chose_unless_given(setting, tmp_path, student,
                                                                                      given, lr, epochs):
    result = _fuse(setting, tmp_path / "out", "--student", student, "--max-steps", "0", *given)
    assert result.exit_code == 0, result.output
    recorded = yaml.safe_load((tmp_path / "out/fusion_config.yaml").read_text())
    assert (recorded["lr"], recorded["epochs"]) == (lr, epochs)


def test_distill_reuses_its_cached_generations(setting, tmp_path):
    first = _fuse(setting, tmp_path / "out")
    assert first.exit_code == 0, first.output
    cache = Path(json.loads((tmp_path / "out/fusion_report.json").read_text())["distill"]["sources"]["0"]["cache"])
    assert cache.parent == tmp_path / "out.work" and len(cache.read_text().splitlines()) == 5
    # A random tiny model never stops on its own: mark every answer finished, so the rerun keeps them all, and
    # cut the file as an interruption would (the last line half-written): that one answer is generated again.
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    rows = [{**r, "answer": r["answer"] or "person: alpha", "finished": True} for r in rows]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    cache.write_text(text[: len(text) - 10])
    again = _fuse(setting, tmp_path / "out", "--force")
    assert again.exit_code == 0, again.output
    stats = json.loads((tmp_path / "out/fusion_report.json").read_text())["distill"]["sources"]["0"]
    assert stats["cached"] == 4 and stats["kept"] >= 4
    assert json.loads((tmp_path / "out/fusion_report.json").read_text())["distill"]["n_generated_examples"] >= 4


@pytest.mark.parametrize("how, message", [
    ({"--source-model": None}, "--method distill needs --source-model"),
    ({"--source-model": "zero=DIR"}, "--source-model takes INDEX=PATH"),
    ({"--source-model": "3=DIR"}, "source index 3 is not in the plan"),
    ({"--source-model": "0=TARGET_BASE"}, "source adapter 0"),
    ({"--source-model": "0=/nonexistent/model"}, "base model not found"),
    ({"--unlabeled": None}, "--method distill needs --unlabeled"),
    ({"--unlabeled": "/nonexistent/prompts.json"}, "prompts.json"),
    ({"--unlabeled": "7=UNLABELED"}, "source index 7 is not in the plan"),
    ({"--gen-max-new-tokens": "0"}, "--gen-max-new-tokens must be a positive integer"),
    ({"--gen-batch-size": "0"}, "--gen-batch-size must be a positive integer"),
    ({"--method": "nope"}, "'nope' is not one of 'hypernet', 'distill', 'project', 'project-hypernet'"),
])
def test_distill_refuses_bad_input_before_loading_anything(setting, tmp_path, how, message):
    flags = {"--method": "distill", "--source-model": f"0={setting['source_base']}", "--unlabeled": str(setting["unlabeled"])}
    for key, value in how.items():
        value = value and value.replace("TARGET_BASE", str(setting["base"])).replace("UNLABELED", str(setting["unlabeled"]))
        flags[key] = value
    argv = [str(setting["plan"]), "--base-model", str(setting["base"]), "--replay", str(setting["replay"]),
            "-o", str(tmp_path / "out"), *[x for k, v in flags.items() if v is not None for x in (k, v)]]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.work").exists()


def test_distill_flags_belong_to_distill(setting, tmp_path):
    result = CliRunner().invoke(main, [str(setting["plan"]), "--base-model", str(setting["base"]), "--replay",
                                       str(setting["replay"]), "-o", str(tmp_path / "out"), "--unlabeled",
                                       str(setting["unlabeled"])])
    assert result.exit_code == 2 and "--unlabeled belongs to --method distill" in result.stderr


def test_plans_keep_each_source_adapter_verbatim(setting):
    from hf_common.plan import Plan

    with Plan(setting["plan"]) as plan:
        config, tensors = plan.source_adapter(0)
        assert plan.n_sources == 1 and config["r"] == 4
        original = load_file(setting["source_expert"] / "adapter_model.safetensors")
        assert sorted(tensors.keys()) == sorted(original)
        assert all(torch.equal(torch.from_numpy(tensors.float32(k)), original[k].float()) for k in original)


def test_replay_and_answer_repeat_set_the_mix_of_the_two_tasks(setting, tmp_path):
    first = _fuse(setting, tmp_path / "first", "--gen-cache", tmp_path / "cache")
    assert first.exit_code == 0, first.output
    cache = next((tmp_path / "cache").glob("generations-*.jsonl"))  # the random expert never stops: finish its answers
    cache.write_text("".join(json.dumps({**json.loads(line), "answer": "person: alpha", "finished": True}) + "\n"
                             for line in cache.read_text().splitlines()))
    runs = {}
    flags_of = {"default": [], "plain": ["--replay-repeat", 1], "replay": ["--replay-repeat", 3],
                "answers": ["--answer-repeat", 2, "--replay-repeat", 1]}
    for name, flags in flags_of.items():
        result = _fuse(setting, tmp_path / name, *flags, "--gen-cache", tmp_path / "cache")
        assert result.exit_code == 0, result.output
        runs[name] = json.loads((tmp_path / name / "fusion_report.json").read_text())
    n_replay, n_generated = runs["plain"]["replay"]["n_examples"], runs["plain"]["distill"]["n_generated_examples"]
    assert n_generated > 0 and runs["plain"]["distill"]["n_training_examples"] == n_replay + n_generated
    d = runs["default"]["distill"]  # auto, the ratio validation chose: with one source the replay twice, answers once
    assert d["replay_repeat"] == 2 and d["n_training_examples"] == 2 * n_replay + n_generated
    d = runs["replay"]["distill"]
    assert d["replay_repeat"] == 3 and d["n_training_examples"] == 3 * n_replay + n_generated
    d = runs["answers"]["distill"]
    assert d["answer_repeat"] == 2 and d["n_training_examples"] == n_replay + 2 * n_generated
    for flag, value, message in (("--replay-repeat", 0, "--replay-repeat must be an integer from 1 to 100 or auto"),
                                 ("--answer-repeat", 0, "--answer-repeat must be an integer from 1 to 100 (got 0)"),
                                 ("--answer-repeat", "auto", "'auto' is not a valid integer"),
                                 ("--replay-repeat", "twice", "must be a positive integer or 'auto'")):
        bad = _fuse(setting, tmp_path / "bad", flag, value)
        assert bad.exit_code == 2 and message in bad.stderr, bad.stderr
        assert not (tmp_path / "bad").exists()
