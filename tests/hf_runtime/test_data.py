import json
from pathlib import Path

import pytest

from hf_common.errors import ConfigError, FileAccessError, InputError
from hf_runtime.data import (
    Conversation,
    Example,
    ReplayConfig,
    check_replay_files,
    collate,
    format_example,
    load_records,
    load_replay,
)

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "Please tell me all the entity words in the text. Option: genre, year, actor, director",
    "Text: what scary movie made in the 1960 s could be recommended Answer: genre: scary; year: 1960 s",
    "the quick brown fox jumps over the lazy dog while the user and the assistant talk",
    "system user assistant instruction input output history answer prompt 0123456789",
]
ALPACA = {"instruction": "Find entities. Text: a film by kubrick", "input": "a film by kubrick",
          "output": " director: kubrick",
          "history": [["Find entities. Text: tom hanks movie", " actor: tom hanks"],
                      ["Find entities. Text: 1960 s", " year: 1960 s"]]}


def _tokenizer(template: str | None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = template
    return fast


@pytest.fixture(scope="session")
def plain_tok():
    return _tokenizer(None)


@pytest.fixture(scope="session")
def chat_tok():
    return _tokenizer(CHATML)


def _write(path: Path, records, jsonl: bool = False) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) if jsonl else json.dumps(records), encoding="utf-8")
    return path


def _answer(tok, example: Example) -> str:
    return tok.decode([t for t in example.labels if t != -100])


def test_alpaca_json_jsonl_and_messages_load(tmp_path):
    plain = {"instruction": "Summarise", "input": "some text", "output": "short"}
    a = load_records(_write(tmp_path / "a.json", [ALPACA, plain]))
    b = load_records(_write(tmp_path / "b.jsonl", [ALPACA, plain], jsonl=True))
    assert a == b and len(a) == 2
    assert a[1] == Conversation(None, [("Summarise\nsome text", "short")])
    # the input is already in the instruction: not repeated
    assert a[0].turns[-1] == (ALPACA["instruction"], ALPACA["output"])
    assert a[0].turns[:2] == [tuple(p) for p in ALPACA["history"]]
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello"}, {"role": "user", "content": "name?"},
                         {"role": "assistant", "content": "fox"}]}
    (c,) = load_records(_write(tmp_path / "c.jsonl", [chat], jsonl=True))
    assert c == Conversation("Be brief.", [("hi", "hello"), ("name?", "fox")])


@pytest.mark.parametrize("templated", [False, True])
def test_labels_mask_prompt_and_answer_decodes(plain_tok, chat_tok, templated):
    tok = chat_tok if templated else plain_tok
    conv = Conversation("sys", [("tom hanks movie", " actor: tom hanks"), ("what scary movie", " genre: scary")])
    ex = format_example(tok, conv, 1024, source="mit")
    assert ex is not None and ex.source == "mit" and len(ex.input_ids) == len(ex.labels)
    n_prompt = ex.labels.index(next(t for t in ex.labels if t != -100))
    assert all(t == -100 for t in ex.labels[:n_prompt]) and ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    prompt_text = tok.decode(ex.input_ids[:n_prompt])
    if templated:
        assert _answer(tok, ex) == " genre: scary<|im_end|>\n"
        assert prompt_text.startswith("<|im_start|>system\nsys<|im_end|>") and prompt_text.endswith("<|im_start|>assistant\n")
        assert "actor: tom hanks" in prompt_text  # history is prompt, not trained on
    else:
        assert _answer(tok, ex) == " genre: scary</s>"
        assert prompt_text == "<s>sys\ntom hanks movie actor: tom hanks\nwhat scary movie"
    short = format_example(tok, conv, 1024, drop_history=True)
    assert "tom hanks" not in tok.decode(short.input_ids) and _answer(tok, short) == _answer(tok, ex)


def test_chat_template_fallback_when_prompt_is_not_a_prefix(chat_tok):
    tok = _tokenizer("{% if not add_generation_prompt %}<s>{% endif %}" + CHATML)
    ex = format_example(tok, Conversation(None, [("hi", "the fox")]), 64)
    assert _answer(tok, ex) == "the fox</s>" and tok.decode(ex.input_ids).endswith("<|im_start|>assistant\nthe fox</s>")


def test_truncation_keeps_answer_and_prompt_end(plain_tok):
    prompt = " ".join(["the quick brown fox jumps over the lazy dog"] * 6) + " END"
    conv = Conversation(None, [(prompt, " genre: scary")])
    full = format_example(plain_tok, conv, 10_000)
    n_answer = sum(t != -100 for t in full.labels)
    ex = format_example(plain_tok, conv, n_answer + 6)
    assert len(ex.input_ids) == n_answer + 6 and ex.input_ids[0] == plain_tok.bos_token_id
    assert ex.labels[-n_answer:] == full.labels[-n_answer:] and ex.input_ids[-n_answer - 5:] == full.input_ids[-n_answer - 5:]
    assert plain_tok.decode(ex.input_ids[1:-n_answer]).endswith(" END")
    tiny = format_example(plain_tok, conv, 4)  # answer alone too long: its tail goes, some prompt stays
    assert len(tiny.input_ids) == 4 and tiny.labels[:2] == [-100, -100]
    assert tiny.labels[2:] == full.labels[-n_answer:-n_answer + 2]
    assert len(format_example(plain_tok, conv, 1).input_ids) == 1


def test_load_replay_caps_deterministically(tmp_path, plain_tok):
    records = [{"instruction": f"question {i}", "output": f"answer {i}"} for i in range(20)]
    a, b = _write(tmp_path / "a.json", records), _write(tmp_path / "b.jsonl", records[:3], jsonl=True)
    config = ReplayConfig(cutoff_len=64, max_examples_per_file=5, seed=3)
    first, again = load_replay([a, b], plain_tok, config), load_replay([a, b], plain_tok, config)
    assert first == again and first.per_file == {"a": 5, "b": 3} and first.skipped == 0
    assert [e.source for e in first.examples] == ["a"] * 5 + ["b"] * 3
    assert first.n_tokens == sum(len(e.input_ids) for e in first.examples) > first.n_answer_tokens > 0
    other = load_replay([a], plain_tok, ReplayConfig(cutoff_len=64, max_examples_per_file=5, seed=4))
    assert [e.input_ids for e in other.examples] != [e.input_ids for e in first.examples[:5]]


def test_config_validation_names_flags():
    with pytest.raises(ConfigError, match="--cutoff-len"):
        ReplayConfig(cutoff_len=0)
    with pytest.raises(ConfigError, match="--max-examples-per-file"):
        ReplayConfig(max_examples_per_file=0)


@pytest.mark.parametrize(
    ("name", "content", "error", "message"),
    [
        ("missing.json", None, FileAccessError, "replay file not found"),
        ("bad.json", '[{"instruction": "a", "output": "b"},', InputError, "malformed JSON"),
        ("bad.jsonl", '{"instruction": "a", "output": "b"}\n\n{"instruction": oops}\n', InputError, "line 3: malformed JSON"),
        ("noout.json", json.dumps([{"instruction": "a", "output": "b"}] * 4 + [{"instruction": "a"}]), InputError,
         "record 5: expected instruction/output or messages"),
        ("empty.json", "[]", InputError, "no examples"),
        ("blank.jsonl", "\n", InputError, "no examples"),
        ("user_last.jsonl", json.dumps({"messages": [{"role": "user", "content": "q"}]}), InputError, "line 1: the last message"),
    ],
)
def test_malformed_inputs_name_the_file(tmp_path, name, content, error, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(error) as info:
        check_replay_files([path])
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value) and "\n" not in str(info.value)


def test_collate_pads_right():
    import torch

    batch = collate([Example([5, 6, 7], [-100, 6, 7], "a"), Example([8], [8], "b")], pad_id=2)
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 6, 7], [8, 2, 2]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1], [1, 0, 0]]))
    assert torch.equal(batch["labels"], torch.tensor([[-100, 6, 7], [8, -100, -100]]))


def test_paper_replay_file(chat_tok):
    path = Path(__file__).resolve().parents[3] / "shared/data/uie/mit-movie_sample300.json"
    if not path.exists():
        pytest.skip(f"{path} not present")
    records = load_records(path)
    assert len(records) == 300 and all(len(r.turns) == 4 for r in records)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert all(r.turns[-1][0] == d["instruction"] and r.turns[-1][0].count(d["input"]) == 1 for r, d in zip(records, raw))
    assert format_example(chat_tok, records[0], 256) is not None


@pytest.mark.parametrize("rows, message", [
    ([{"instruction": "Q", "input": "", "output": ""}, {"instruction": "R", "input": "", "output": "  "}],
     "every answer is empty"),
    ([{"instruction": "", "input": "", "output": "a"}, {"instruction": " ", "input": "", "output": "b"}],
     "every prompt is empty"),
])
def test_replay_files_with_nothing_to_learn_are_refused_before_loading(tmp_path, rows, message):
    import json

    from hf_common.errors import InputError
    from hf_runtime.data import check_replay_files

    path = tmp_path / "empty.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(InputError, match=message) as info:
        check_replay_files([path])
    assert str(path) in str(info.value)
