import json
from pathlib import Path

import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from hf_eval.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_evaluate_writes_scores_and_every_prediction(fusion, tmp_path):
    result = run("evaluate", "--base-model", fusion["base"], "--adapter", f"target={fusion['target']}",
                 "--data", fusion["replay"], "-o", tmp_path / "results", "--max-new-tokens", "8", "--max-examples", "5",
                 "--batch-size", "2")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "results/results.json").read_text())
    task = results["adapters"]["target"]["tasks"]["replay"]
    assert task["metric"] == "set" and task["n_examples"] == 5 and 0.0 <= task["f1"] <= 1.0
    rows = (tmp_path / "results/predictions/target/replay.jsonl").read_text().splitlines()
    assert len(rows) == 5 and {"prompt", "gold", "prediction", "n_correct", "cut"} <= set(json.loads(rows[0]))
    # the tiny random model rambles: answers still going at the cap are counted and named in one warning line
    assert task["cut"] == sum(json.loads(r)["cut"] for r in rows) > 0
    assert f"target · replay: {task['cut']} of 5 answers reached --max-new-tokens 8" in " ".join(result.stderr.split())
    from html_check import check_report

    held = check_report(tmp_path / "results/report.html")
    assert held["images"] == 2 and held["links"] == ["predictions/target/replay.jsonl"]
    assert all((tmp_path / "results" / link).is_file() for link in held["links"])
    assert f"{100 * task['f1']:.1f}" in held["text"]
    again = run("evaluate", "--base-model", fusion["base"], "--data", fusion["replay"], "-o", tmp_path / "results")
    assert again.exit_code == 2 and "--force" in again.stderr


def test_a_label_task_is_scored_by_accuracy_and_its_table_says_so(fusion, tmp_path):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps([{"instruction": f"Is {w} a colour? \nOption: yes, no \nAnswer:", "input": "",
                                   "output": " yes" if w in ("red", "blue") else " no"}
                                  for w in ("red", "blue", "rome", "paris")]))
    result = run("evaluate", "--base-model", fusion["base"], "--data", labels, "-o", tmp_path / "results",
                 "--max-new-tokens", "4")
    assert result.exit_code == 0, result.output
    task = json.loads((tmp_path / "results/results.json").read_text())["adapters"]["base"]["tasks"]["labels"]
    assert task["metric"] == "exact" and task["score_name"] == "accuracy" and task["score"] == task["accuracy"]
    rows = [json.loads(r) for r in (tmp_path / "results/predictions/base/labels.jsonl").read_text().splitlines()]
    right = sum(r["prediction"].strip().rstrip(".").lower() == r["gold"].strip() for r in rows)
    assert task["accuracy"] == right / 4  # the tiny random model: whatever it says, scored by exact match
    outside = sum(r["prediction"].strip().rstrip(".").lower() not in ("yes", "no", "") for r in rows)
    assert task["malformed"] == outside  # an answer that is neither option
    assert f"{100 * task['accuracy']:.1f} acc" in result.stdout


def test_greedy_generation_is_batch_independent(fusion):
    from hf_eval.generate import EvalConfig, generate
    from hf_runtime.data import load_records, prompt_ids
    from hf_runtime.model import load_model_and_tokenizer, resolve_base_model

    model, tokenizer = load_model_and_tokenizer(resolve_base_model(fusion["base"]), torch.device("cpu"), torch.float32)
    prompts = [prompt_ids(tokenizer, c, 256) for c in load_records(fusion["replay"])[:4]]
    one = generate(model, tokenizer, prompts, EvalConfig(max_new_tokens=6, batch_size=1))
    four = generate(model, tokenizer, prompts, EvalConfig(max_new_tokens=6, batch_size=4))
    assert one == four and all(isinstance(text, str) and isinstance(ended, bool) for text, ended in one)


def test_train_expert_and_replay_tune(fusion, tmp_path):
    result = run("train-expert", "--base-model", fusion["base"], "--data", fusion["replay"], "-o", tmp_path / "expert",
                 "--max-steps", "3", "--batch-size", "4", "--lr", "1e-3", "--report-to", "tensorboard")
    assert result.exit_code == 0, result.output
    from tb_events import scalars

    assert [step for step, _ in scalars(tmp_path / "expert.runs")["train/loss"]] == [1, 2, 3]
    from hf_common.model_card import read_front_matter

    # a local base model is no Hub id: the card names its folder, adapter_config.json keeps the path for loading
    assert "base_model" not in read_front_matter(tmp_path / "expert")
    card = (tmp_path / "expert/README.md").read_text()
    assert f"| base model | {fusion['base'].name} |" in card and str(tmp_path) not in card
    assert json.loads((tmp_path / "expert/adapter_config.json").read_text())["base_model_name_or_path"] == str(fusion["base"])
    assert "expert" in read_front_matter(tmp_path / "expert")["tags"]
    expert = load_file(tmp_path / "expert/adapter_model.safetensors")
    assert len(expert) == 4 * 7 * 2 and any(".lora_B." in k and v.abs().sum() > 0 for k, v in expert.items())
    tuned = run("replay-tune", "--base-model", fusion["base"], "--adapter", fusion["target"], "--replay", fusion["replay"],
                "-o", tmp_path / "tuned", "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3")
    assert tuned.exit_code == 0, tuned.output
    before = load_file(fusion["target"] / "adapter_model.safetensors")
    after = load_file(tmp_path / "tuned/adapter_model.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)


def test_homogeneous_merges_and_refusal_across_families(fusion, tmp_path):
    from peft import PeftModel

    from hf_runtime.model import load_model_and_tokenizer, resolve_base_model

    for method in ("linear", "ties", "dare_ties"):
        result = run("merge", "--base-model", fusion["base"], "--adapter", fusion["target"], "--adapter", fusion["sibling"],
                     "--method", method, "-o", tmp_path / method)
        assert result.exit_code == 0, result.output
        model, _ = load_model_and_tokenizer(resolve_base_model(fusion["base"]), torch.device("cpu"), torch.float32)
        PeftModel.from_pretrained(model, tmp_path / method)
    refused = run("merge", "--base-model", fusion["base"], "--adapter", fusion["target"], "--adapter", fusion["qwen"],
                  "-o", tmp_path / "cross")
    assert refused.exit_code == 2 and "homogeneous merges need adapters of one base model" in refused.stderr
    assert not (tmp_path / "cross").exists()


def test_replay_tune_refuses_a_target_with_non_finite_values_before_loading(fusion, tmp_path):
    import shutil

    from safetensors.torch import save_file

    bad = shutil.copytree(fusion["target"], tmp_path / "nan-target")
    state = load_file(bad / "adapter_model.safetensors")
    key = next(k for k in state if "lora_B" in k)
    state[key][0, 0] = float("nan")
    save_file(state, bad / "adapter_model.safetensors")
    result = CliRunner().invoke(main, ["replay-tune", "--base-model", str(fusion["base"]), "--adapter", str(bad), "--replay",
                                       str(fusion["replay"]), "-o", str(tmp_path / "tuned"), "--max-steps", "1"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "non-finite" in result.stderr and str(bad) in result.stderr
    assert not (tmp_path / "tuned").exists()


def test_evaluate_refuses_an_adapter_of_another_base_model_before_loading(fusion, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--base-model", str(fusion["base"]), "--adapter", f"qwen={fusion['qwen']}",
                                       "--data", str(fusion["replay"]), "-o", str(tmp_path / "results")])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "adapter qwen" in result.stderr, result.output
    assert not (tmp_path / "results").exists()


def test_evaluate_json_to_stdout_and_quiet(fusion, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--base-model", str(fusion["base"]), "--adapter", f"t={fusion['target']}",
                                       "--data", str(fusion["replay"]), "-o", str(tmp_path / "r"), "--max-examples", "2",
                                       "--max-new-tokens", "4", "--json", "-", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["adapters"]["t"]["tasks"]["replay"]["n_examples"] == 2  # stdout is pure JSON


def test_update_cards_writes_the_scores_into_the_card_and_replaces_them_later(fusion, tmp_path):
    import shutil

    from hf_common.model_card import read_front_matter

    adapter = shutil.copytree(fusion["target"], tmp_path / "adapter")
    (adapter / "README.md").unlink(missing_ok=True)  # a card-less adapter gets a card naming its base model
    for round_ in range(2):
        result = CliRunner().invoke(main, ["evaluate", "--base-model", str(fusion["base"]), "--adapter", f"t={adapter}",
                                           "--data", str(fusion["replay"]), "-o", str(tmp_path / f"r{round_}"),
                                           "--max-examples", str(2 + round_), "--max-new-tokens", "4", "--update-cards", "-q"])
        assert result.exit_code == 0, result.output
    text = (adapter / "README.md").read_text()
    f1 = json.loads((tmp_path / "r1/results.json").read_text())["adapters"]["t"]["tasks"]["replay"]["f1"]
    assert text.count("## Scores") == 1 and "| replay | " in text and f"{100 * f1:.1f} |" in text
    assert "first 3 examples per file" in text and "first 2 examples" not in text
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert "base_model" not in read_front_matter(adapter)  # a local folder, not a Hub id: named in the body
    assert f"| base model | {Path(base).name} |" in text and base not in text


def test_update_cards_refuses_an_unwritable_card_before_writing_the_results(fusion, tmp_path):
    import shutil

    adapter = shutil.copytree(fusion["target"], tmp_path / "adapter")
    (adapter / "README.md").unlink(missing_ok=True)
    (adapter / "README.md").mkdir()  # a folder where the card goes
    result = CliRunner().invoke(main, ["evaluate", "--base-model", str(fusion["base"]), "--adapter", f"t={adapter}",
                                       "--data", str(fusion["replay"]), "-o", str(tmp_path / "results"), "--max-examples",
                                       "2", "--update-cards", "-q"])
    assert result.exit_code == 2 and str(adapter / "README.md") in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "results").exists()


def test_a_base_model_of_another_family_whose_shapes_fit_is_used_with_a_warning(fusion, tmp_path):
    from tiny_models import make_source_model

    qwen = make_source_model(tmp_path / "qwen", "qwen2", hidden=32, n_layers=4)["base"]  # the Llama target's shapes
    expected = "is a qwen2 model (qwen2), but adapter t"
    result = CliRunner().invoke(main, ["evaluate", "--base-model", str(qwen), "--adapter", f"t={fusion['target']}",
                                       "--data", str(fusion["replay"]), "-o", str(tmp_path / "results"), "--max-examples",
                                       "2", "--max-new-tokens", "2"])
    assert result.exit_code == 0 and expected in " ".join(result.stderr.split()), result.output
    assert any(expected in w for w in json.loads((tmp_path / "results/results.json").read_text())["warnings"])
    tuned = CliRunner().invoke(main, ["replay-tune", "--base-model", str(qwen), "--adapter", str(fusion["target"]),
                                      "--replay", str(fusion["replay"]), "--max-steps", "1", "-o", str(tmp_path / "tuned")])
    assert tuned.exit_code == 0 and "is a qwen2 model (qwen2), but adapter target" in " ".join(tuned.stderr.split())


def test_every_hf_eval_command_takes_a_config_file_and_flags_win(fusion, tmp_path):
    import hashlib

    hf_eval = main
    config = tmp_path / "expert.yaml"
    config.write_text(f"base-model: {fusion['base']}\ndata: [{fusion['replay']}]\nmax-steps: 2\nlr: 1.0e-3\n"
                      f"max-examples-per-file: 4\nquiet: true\n")
    by_file = CliRunner().invoke(hf_eval, ["train-expert", "--config", str(config), "-o", str(tmp_path / "a")])
    assert by_file.exit_code == 0, by_file.output
    by_flags = CliRunner().invoke(hf_eval, ["train-expert", "--base-model", str(fusion["base"]), "--data",
                                            str(fusion["replay"]), "--max-steps", "2", "--lr", "1e-3",
                                            "--max-examples-per-file", "4", "-q", "-o", str(tmp_path / "b")])
    assert by_flags.exit_code == 0, by_flags.output

    def digest(folder):
        return hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()

    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    winning = CliRunner().invoke(hf_eval, ["train-expert", "--config", str(config), "--max-steps", "1", "-o",
                                           str(tmp_path / "c")])
    assert winning.exit_code == 0 and digest(tmp_path / "c") != digest(tmp_path / "a")  # the flag's 1 step won
    config.write_text("base-model: x\nsteps: 3\n")
    bad = CliRunner().invoke(hf_eval, ["evaluate", "--config", str(config), "-o", str(tmp_path / "d")])
    assert bad.exit_code == 2 and "unknown key 'steps'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
