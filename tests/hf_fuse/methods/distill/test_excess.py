"""distill --answer-excess-keep: the excess of an answer (the expert's mean token log-probability minus its base
model's, the adapter off) is zero for a zero adapter and positive where the adapter raises the answer's tokens, on
tiny models of two families; the filter keeps the answers of highest excess, counts what it drops and caches the
values; a bad fraction is refused in one line."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tiny_models import make_distill_setting, make_source_model

from hf_fuse.cli import main
from hf_fuse.methods.distill.excess import answer_excess, keep_highest, token_excess
from hf_fuse.methods.distill.excess_tokens import keep_tokens

FAST = ["--max-steps", "1", "--grad-accum", "1", "--batch-size", "2", "--gen-batch-size", "4", "--max-examples-per-file", "4",
        "--gen-max-new-tokens", "4"]


def _expert(root: Path, family: str):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = make_source_model(root / family, family)["base"]
    model = AutoModelForCausalLM.from_pretrained(base)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_excess_is_zero_for_a_zero_adapter_and_positive_where_the_adapter_raises_the_answer(tmp_path, family):
    expert = _expert(tmp_path, family)  # PEFT starts B at zero: the adapter changes nothing
    prompt, answer = [5, 9, 14, 3, 7], [11, 4, 8, 12]
    assert answer_excess(expert, prompt, answer) == 0.0 and token_excess(expert, prompt, answer) == [0.0] * 4
    torch.manual_seed(0)
    trainable = [p for p in expert.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-2)
    ids = torch.tensor([prompt + answer])
    labels = torch.tensor([[-100] * len(prompt) + answer])
    for _ in range(15):  # the adapter learns to raise this answer's tokens
        optimizer.zero_grad()
        expert(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
    expert.eval()
    assert answer_excess(expert, prompt, answer) > 0.5
    per_token = token_excess(expert, prompt, answer)
    assert len(per_token) == 4 and all(x > 0 for x in per_token)  # each raised token, not only their mean
    assert sum(per_token) / 4 == pytest.approx(answer_excess(expert, prompt, answer))


def test_keep_highest_keeps_the_top_fraction_rounding_up_and_ties_by_index():
    values = {0: 0.1, 1: 0.9, 2: -0.3, 3: 0.9, 4: 0.5}
    assert keep_highest(values, 0.5) == {1, 3, 4}  # ceil(2.5) = 3
    assert keep_highest(values, 0.2) == {1}
    assert keep_highest(values, 1.0) == set(values)


@pytest.fixture(scope="module")
def setting(fusion, tmp_path_factory):
    return make_distill_setting(fusion, tmp_path_factory.mktemp("excess"), n_prompts=4)


def _argv(setting, out, *extra):
    return [str(setting["plan"]), "--base-model", str(setting["base"]), "--replay", str(setting["replay"]), "-o", str(out),
            "--method", "distill", "--source-model", f"0={setting['source_base']}", "--unlabeled",
            str(setting["unlabeled"]), *FAST, *map(str, extra)]


def _stats(out):
    return json.loads((out / "fusion_report.json").read_text())["distill"]["sources"]["0"]


def _finished_answers(setting, out):
    """A first run's answer cache, its answers made finished ones, each a different text (the random expert never
    finishes)."""
    assert CliRunner().invoke(main, _argv(setting, out)).exit_code == 0
    cache = Path(_stats(out)["cache"])
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    cache.write_text("".join(json.dumps({**r, "answer": f"person: alpha {'beta ' * r['i']}", "finished": True,
                                         "logprob": -0.5}) + "\n" for r in rows))


def test_the_filter_drops_the_answers_of_lowest_excess_counts_and_caches_them(setting, tmp_path):
    _finished_answers(setting, tmp_path / "out")
    result = CliRunner().invoke(main, _argv(setting, tmp_path / "out", "--force", "--answer-excess-keep", "0.5"))
    assert result.exit_code == 0, result.output
    stats = _stats(tmp_path / "out")
    assert stats["kept"] == 2 and stats["excess"]["dropped"] == 2 and stats["excess"]["scored"] == 4
    assert stats["excess"]["computed"] == 4 and "lowest excess" in result.stderr
    values = json.loads(Path(stats["excess"]["cache"]).read_text())
    assert sorted(values) == ["0", "1", "2", "3"] and stats["excess"]["threshold"] == sorted(values.values())[2]
    again = CliRunner().invoke(main, _argv(setting, tmp_path / "out", "--force", "--answer-excess-keep", "0.5"))
    assert again.exit_code == 0 and _stats(tmp_path / "out")["excess"]["computed"] == 0  # read from the cache
    assert _stats(tmp_path / "out")["kept"] == 2


@pytest.mark.parametrize("flag", ["--answer-excess-keep", "--answer-excess-tokens"])
@pytest.mark.parametrize("value", ["0", "1.5", "-0.2", "nan"])
def test_a_bad_fraction_is_refused_in_one_line_and_nothing_is_written(setting, tmp_path, flag, value):
    result = CliRunner().invoke(main, _argv(setting, tmp_path / "out", flag, value))
    assert result.exit_code == 2 and f"{flag} must be a fraction" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_token_selection_keeps_the_loss_where_the_expert_shows_most_and_on_the_end_of_the_answer():
    from tiny_models import tiny_tokenizer

    from hf_runtime.data import IGNORE_INDEX, Conversation, format_example

    tokenizer = tiny_tokenizer()
    answer = "person: kubrick; city: rome"
    example = format_example(tokenizer, Conversation("", [("List the entities. Text: kubrick in rome Answer:", answer)]),
                             256)
    scored = [k for k, label in enumerate(example.labels) if label != IGNORE_INDEX]
    # the expert's own tokens: "person: " low, "kubrick; " high, "city: " low, "rome" high
    expert = ([0, 8, 17, 23], [-0.2, 1.5, 0.1, 2.0])
    half, masked = keep_tokens(tokenizer, example, answer, expert, 0.5)
    lost = [k for k in scored if half.labels[k] == IGNORE_INDEX]
    assert masked == len(lost) > 0 and half.input_ids == example.input_ids  # the text stays, as context
    text = lambda ks: tokenizer.decode([example.input_ids[k] for k in ks])  # noqa: E731
    assert "kubrick" not in text(lost) and "rome" not in text(lost) and "person" in text(lost)
    tail = scored[-1]  # the end-of-turn token after the answer's text keeps its loss
    assert half.labels[tail] == example.labels[tail]
    assert keep_tokens(tokenizer, example, answer, expert, 1.0) == (example, 0)
    assert keep_tokens(tokenizer, example, "not this answer", expert, 0.5) == (example, 0)  # not found: unchanged


def test_the_token_selection_counts_what_it_masks_and_caches_the_values(setting, tmp_path):
    _finished_answers(setting, tmp_path / "out")
    result = CliRunner().invoke(main, _argv(setting, tmp_path / "out", "--force", "--answer-excess-tokens", "0.5"))
    assert result.exit_code == 0, result.output
    stats = _stats(tmp_path / "out")
    assert stats["kept"] == 4 and stats["excess_tokens"]["computed"] == 4 and stats["excess_tokens"]["masked"] > 0
    values = json.loads(Path(stats["excess_tokens"]["cache"]).read_text())
    assert sorted(values) == ["0", "1", "2", "3"] and all(len(v["starts"]) == len(v["values"]) for v in values.values())
    again = CliRunner().invoke(main, _argv(setting, tmp_path / "out", "--force", "--answer-excess-tokens", "0.5"))
    assert again.exit_code == 0 and _stats(tmp_path / "out")["excess_tokens"]["computed"] == 0
    assert _stats(tmp_path / "out")["excess_tokens"]["masked"] == stats["excess_tokens"]["masked"]
