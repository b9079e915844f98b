from hf_common.model_card import card, license_of, read_front_matter


def test_card_front_matter_round_trips(tmp_path):
    text = card(title="T", base_model="HuggingFaceTB/SmolLM2-135M-Instruct", how="made here", details={"a": [1, 2], "b": "x|y"},
                tags=["fusion-hypernet"], license="apache-2.0",
                scores={"ner": {"precision": 0.5, "recall": 0.25, "f1": 1 / 3}})
    (tmp_path / "README.md").write_text(text)
    front = read_front_matter(tmp_path)
    assert front == {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "library_name": "peft",
                     "tags": ["heterofusion", "lora", "fusion-hypernet"], "license": "apache-2.0"}
    assert "| a | 1, 2 |" in text and "x\\|y" in text and "| ner | 50.0 | 25.0 | 33.3 |" in text
    local = card(title="T", base_model="/models/smollm2", how="made here")  # a folder of this machine: its name only
    assert "base_model:" not in local and "| base model | smollm2 |" in local and "/models" not in local


def test_licences_are_read_never_guessed(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b/README.md").write_text("---\nlicense: mit\nbase_model: x\n---\n# card\n")
    (tmp_path / "c").mkdir()
    (tmp_path / "c/README.md").write_text("no front matter here\nlicense: gpl\n")
    assert license_of(tmp_path / "a", tmp_path / "b") == "mit"
    assert license_of(tmp_path / "a", tmp_path / "c", None) is None
    assert read_front_matter(tmp_path / "missing") == {}
