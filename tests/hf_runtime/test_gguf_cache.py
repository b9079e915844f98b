import json
import logging
import os

import pytest
import torch
from tiny_models import make_tiny_gguf

from hf_runtime import gguf_cache
from hf_runtime.model import _source, load_config, load_model_and_tokenizer, resolve_base_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    return make_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HETEROFUSION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_first_load_converts_and_later_loads_read_the_identical_copy(gguf_file, cache):
    ref = resolve_base_model(gguf_file)
    assert _source(ref) == (gguf_file.parent, gguf_file.name)  # nothing cached yet
    model, tokenizer = load_model_and_tokenizer(ref, CPU, torch.float32)
    folder = gguf_cache.cached(gguf_file)
    assert folder is not None and folder.parent == cache / "gguf"
    assert _source(ref) == (folder, None)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert getattr(model.config, "quantization_config", None) is not None  # the live model was left as loaded

    again, tokenizer2 = load_model_and_tokenizer(ref, CPU, torch.float32)
    assert not getattr(again, "is_quantized", False)
    first, second = model.state_dict(), again.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    chat = [{"role": "user", "content": "kubrick paris red"}]
    assert tokenizer2.apply_chat_template(chat, tokenize=False) == tokenizer.apply_chat_template(chat, tokenize=False)
    assert tokenizer2("hanks rome 1960").input_ids == tokenizer("hanks rome 1960").input_ids
    assert load_config(ref).num_hidden_layers == 2


def test_a_changed_file_gets_a_new_cache_entry(gguf_file, cache):
    load_model_and_tokenizer(resolve_base_model(gguf_file), CPU, torch.float32)
    assert gguf_cache.cached(gguf_file) is not None
    stat = gguf_file.stat()
    os.utime(gguf_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert gguf_cache.cached(gguf_file) is None


def test_cache_off_writes_nothing(gguf_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HETEROFUSION_CACHE", "none")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    model, _ = load_model_and_tokenizer(resolve_base_model(gguf_file), CPU, torch.float32)
    assert model.config.num_hidden_layers == 2
    half, _ = load_model_and_tokenizer(resolve_base_model(gguf_file), CPU, torch.bfloat16)  # loaded at bf16 directly
    assert half.dtype == torch.bfloat16
    assert gguf_cache.cache_folder(gguf_file) is None and not (tmp_path / "xdg").exists()


def test_unwritable_cache_warns_and_still_loads(gguf_file, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("HETEROFUSION_CACHE", str(blocker))
    with caplog.at_level(logging.WARNING, logger="hf_runtime.gguf_cache"):
        model, _ = load_model_and_tokenizer(resolve_base_model(gguf_file), CPU, torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert "could not cache" in caplog.text
    assert blocker.read_text().startswith("a file")
