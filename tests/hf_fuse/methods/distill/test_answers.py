"""distill's answers: the length cap (given or ``auto``), the confidence filter, and the shared answer cache (a
schema for every line, a lock for runs at once), through the CLI on tiny models."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_models import make_distill_setting

from hf_common.cli_support import int_or_auto
from hf_fuse.cli import main
from hf_fuse.methods.distill.answer_cache import AUTO_FALLBACK, PILOT_CAP, CachedAnswer, auto_cap

FAST = ["--max-steps", "1", "--grad-accum", "1", "--batch-size", "2", "--gen-batch-size", "4", "--max-examples-per-file", "4"]


@pytest.fixture(scope="module")
def setting(fusion, tmp_path_factory):
    return make_distill_setting(fusion, tmp_path_factory.mktemp("answers"), n_prompts=5)


def _argv(setting, out, *extra):
    return [str(setting["plan"]), "--base-model", str(setting["base"]), "--replay", str(setting["replay"]), "-o", str(out),
            "--method", "distill", "--source-model", f"0={setting['source_base']}", "--unlabeled", str(setting["unlabeled"]),
            *FAST, *map(str, extra)]


def _stats(out):
    return json.loads((out / "fusion_report.json").read_text())["distill"]["sources"]["0"]


def test_auto_cap_is_half_again_the_longest_finished_pilot_answer():
    answers = [CachedAnswer("a", True, 10, -1.0), CachedAnswer("b", True, 30, -1.0), CachedAnswer("c", False, 512, -1.0)]
    assert auto_cap(answers) == 45
    assert auto_cap([CachedAnswer("a", True, 2, -1.0)]) == 16  # never below 16
    assert auto_cap([CachedAnswer("a", True, 500, -1.0)]) == PILOT_CAP
    assert auto_cap([CachedAnswer("x", False, 512, -1.0)]) == AUTO_FALLBACK  # nothing ended: an expert that never stops


def test_the_default_cap_is_auto_it_runs_a_pilot_and_reports_the_cap(setting, tmp_path):
    assert int_or_auto("auto") == "auto" and int_or_auto("7") == 7
    result = CliRunner().invoke(main, _argv(setting, tmp_path / "out"))  # no --gen-max-new-tokens: auto
    assert result.exit_code == 0, result.output
    stats = _stats(tmp_path / "out")
    # the tiny random expert never ends an answer: the pilot (5 prompts) runs to its cap, the fallback cap is reported
    assert stats["max_new_tokens"] == AUTO_FALLBACK and stats["truncated"] == 5
    rows = [json.loads(line) for line in Path(stats["cache"]).read_text().splitlines()]
    assert len(rows) == 5 and all(r["n_tokens"] == PILOT_CAP for r in rows)


def test_the_confidence_filter_drops_answers_below_the_threshold_and_counts_them(setting, tmp_path):
    assert CliRunner().invoke(main, _argv(setting, tmp_path / "out", "--gen-max-new-tokens", "4")).exit_code == 0
    cache = Path(_stats(tmp_path / "out")["cache"])
    # the random expert never finishes: make its answers finished ones of known confidence
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    confidence = {0: -0.1, 1: -0.2, 2: -0.9, 3: -1.5, 4: -3.0}
    cache.write_text("".join(json.dumps({**r, "answer": "person: alpha", "finished": True, "logprob": confidence[r["i"]]})
                             + "\n" for r in rows))
    kept = CliRunner().invoke(main, _argv(setting, tmp_path / "out", "--gen-max-new-tokens", "4", "--force"))
    assert kept.exit_code == 0 and _stats(tmp_path / "out")["kept"] == 5
    filtered = CliRunner().invoke(main, _argv(setting, tmp_path / "out", "--gen-max-new-tokens", "4", "--force",
                                              "--min-answer-logprob", "-1"))
    assert filtered.exit_code == 0, filtered.output
    stats = _stats(tmp_path / "out")
    assert stats["kept"] == 3 and stats["filtered"] == 2 and stats["cached"] == 5
    assert json.loads((tmp_path / "out/fusion_report.json").read_text())["distill"]["n_generated_examples"] == 3
    assert "2 below --min-answer-logprob" in filtered.stderr


def test_a_corrupt_cache_line_is_regenerated_with_a_warning_and_an_unreadable_cache_refused(setting, tmp_path):
    assert CliRunner().invoke(main, _argv(setting, tmp_path / "out", "--gen-max-new-tokens", "3")).exit_code == 0
    cache = Path(_stats(tmp_path / "out")["cache"])
    lines = cache.read_bytes().splitlines()
    cache.write_bytes(b"\n".join([lines[0].replace(b'"i": ', b'"i": 1e999, "x": '), *lines[1:]]) + b"\n")
    again = CliRunner().invoke(main, _argv(setting, tmp_path / "out", "--gen-max-new-tokens", "3", "--force"))
    assert again.exit_code == 0, again.output
    assert _stats(tmp_path / "out")["bad_cache_lines"] == 1 and _stats(tmp_path / "out")["cached"] == 4
    cache.unlink()
    cache.mkdir()
    refused = CliRunner().invoke(main, _argv(setting, tmp_path / "other", "--gen-max-new-tokens", "3", "--gen-cache",
                                             cache.parent, "-q"))
    assert refused.exit_code == 2 and "cannot read the answer cache" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "other").exists()


def test_two_runs_sharing_a_cache_at_once_generate_each_answer_once(setting, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    runs = [subprocess.Popen([sys.executable, "-m", "hf_fuse", *_argv(setting, tmp_path / f"out{k}", "--gen-cache",
                                                                      tmp_path / "shared", "--gen-max-new-tokens", "5", "-q")],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in (0, 1)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-2000:]
    (cache,) = (tmp_path / "shared").glob("*.jsonl")
    indices = [json.loads(line)["i"] for line in cache.read_text().splitlines()]
    assert sorted(indices) == [0, 1, 2, 3, 4]  # each answer once: the second run read the first's
    assert sorted(_stats(tmp_path / f"out{k}")["cached"] for k in (0, 1)) == [0, 5]


@pytest.mark.parametrize("flag, value, message", [
    ("--gen-max-new-tokens", "lots", "must be a positive integer or 'auto'"),
    ("--gen-max-new-tokens", "0", "--gen-max-new-tokens must be a positive integer or auto"),
    ("--min-answer-logprob", "0.5", "--min-answer-logprob must be a number <= 0"),
    ("--min-answer-logprob", "nan", "--min-answer-logprob must be a number <= 0"),
])
def test_bad_values_of_the_new_options_are_refused_in_one_line(setting, tmp_path, flag, value, message):
    result = CliRunner().invoke(main, _argv(setting, tmp_path / "out", flag, value))
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_the_token_level_loss_regenerates_answers_without_the_teachers_side_and_trains_on_it(setting, tmp_path):
    base = ["--gen-max-new-tokens", "4", "--seed", "3", "--gen-cache", tmp_path / "cache"]
    assert CliRunner().invoke(main, _argv(setting, tmp_path / "plain", *base)).exit_code == 0
    cache = Path(_stats(tmp_path / "plain")["cache"])
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    # finished answers without the teacher's side: a token-level run must generate them again (with it)
    cache.write_text("".join(json.dumps({**r, "answer": "person: alpha", "finished": True}) + "\n" for r in rows))
    again = CliRunner().invoke(main, _argv(setting, tmp_path / "token", *base, "--token-loss-weight", "1",
                                           "--token-loss-top-k", "3"))
    assert again.exit_code == 0, again.output
    assert _stats(tmp_path / "token")["cached"] == 0
    regenerated = [json.loads(line) for line in cache.read_text().splitlines()][len(rows):]
    assert sorted(r["i"] for r in regenerated) == [0, 1, 2, 3, 4]
    # the teacher's side is kept for answers that ended (the tiny random expert runs to the cap: none here)
    assert all(("top" in r) == r["finished"] for r in regenerated)
    assert all(len(r["top"]) == r["n_tokens"] and len(r["top"][0]) == 3 for r in regenerated if r["finished"])
    # finished answers that carry it: trained on with the token-level term, which changes the adapter
    taught = {"answer": "person: alpha", "finished": True, "n_tokens": 3, "starts": [0, 6, 8],
              "top": [[0.6, 0.3, 0.1], [0.9, 0.05, 0.05], [0.7, 0.2, 0.1]]}
    cache.write_text("".join(json.dumps({**r, **taught}) + "\n" for r in rows))
    for name, weight in (("with", "1"), ("without", "0")):
        run = CliRunner().invoke(main, _argv(setting, tmp_path / name, *base, "--token-loss-weight", weight,
                                             "--token-loss-top-k", "3", "--max-steps", "3", "--lr", "1e-2",
                                             "--replay-repeat", "1"))  # 3 steps of 2 draw 6 of 4 replay + 5 answers
        assert run.exit_code == 0, run.output
    report = json.loads((tmp_path / "with/fusion_report.json").read_text())
    assert report["distill"]["sources"]["0"]["aligned_positions"] > 0
    history = report["tasks"][0]["history"]  # every step records the term as weighted into its total (W = 1 here)
    assert any(h["token"] > 0 for h in history) and all(h["loss"] == pytest.approx(h["lm"] + h["token"]) for h in history)
    from html_check import check_report

    for name, drawn in (("with", True), ("without", False)):  # the weighted term beside the loss, only where it is one
        assert ("what W·token-level distance adds to the total" in check_report(tmp_path / name / "report.html")["text"]
                ) is drawn
    assert (tmp_path / "with/adapter_model.safetensors").read_bytes() != \
           (tmp_path / "without/adapter_model.safetensors").read_bytes()


@pytest.mark.parametrize("extra, message", [
    (["--token-loss-weight", "-1"], "--token-loss-weight must be a number >= 0"),
    (["--token-loss-weight", "inf"], "--token-loss-weight must be a number >= 0"),
    (["--token-loss-top-k", "0"], "--token-loss-top-k must be an integer from 1 to 1024"),
    (["--token-loss-weight", "1", "--student", "hypernet"], "--token-loss-weight trains the LoRA student only"),
])
def test_bad_token_loss_options_are_refused_in_one_line(setting, tmp_path, extra, message):
    result = CliRunner().invoke(main, _argv(setting, tmp_path / "out", *extra))
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_two_source_experts_of_two_families_distill_into_one_adapter(fusion, tmp_path):
    from tiny_models import make_source_model

    from hf_analyze.execute import execute
    from hf_analyze.planner import AnalyzeSettings, analyze
    from hf_analyze.report import build_report

    qwen = make_source_model(tmp_path / "qwen2", "qwen2")
    gemma = make_source_model(tmp_path / "gemma3", "gemma3", hidden=32, n_layers=2, seed=9)
    analysis = analyze(fusion["target"], [qwen["expert"], gemma["expert"]], AnalyzeSettings(block_size="auto"))
    execute(analysis, build_report(analysis), tmp_path / "plan.h5")
    prompts = [{"instruction": r["instruction"], "input": r["input"]} for r in json.loads(fusion["replay"].read_text())]
    (tmp_path / "a.json").write_text(json.dumps(prompts[:3]))
    (tmp_path / "b.json").write_text(json.dumps(prompts[3:5]))
    result = CliRunner().invoke(main, [str(tmp_path / "plan.h5"), "--base-model", str(fusion["base"]), "--replay",
                                       str(fusion["replay"]), "-o", str(tmp_path / "out"), "--method", "distill",
                                       "--source-model", f"0={qwen['base']}", "--source-model", f"1={gemma['base']}",
                                       "--unlabeled", f"0={tmp_path / 'a.json'}", "--unlabeled", f"1={tmp_path / 'b.json'}",
                                       *FAST, "--gen-max-new-tokens", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out/fusion_report.json").read_text())
    sources = report["distill"]["sources"]
    assert {i: s["prompts"] for i, s in sources.items()} == {"0": 3, "1": 2}  # each expert answers its own prompts
    # --replay-repeat auto: 2 per source, so the replay keeps its share of the mix beside two experts' answers
    n_generated = report["distill"]["n_generated_examples"]
    assert report["distill"]["replay_repeat"] == 4
    assert report["distill"]["n_training_examples"] == 4 * report["replay"]["n_examples"] + n_generated
    assert sources["0"]["cache"] != sources["1"]["cache"]
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(fusion["base"]), tmp_path / "out")  # loads cleanly
