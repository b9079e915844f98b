from __future__ import annotations

import pytest
from factories import make_peft_adapter
from tiny_models import make_fusion_setting


@pytest.fixture(scope="session")
def adapters(tmp_path_factory):
    """A Llama target (6 layers, r 4) and sources of other families, depths and ranks."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        "llama": make_peft_adapter(root / "llama", "llama", n_layers=6, rank=4, alpha=8, seed=1),
        "qwen2": make_peft_adapter(root / "qwen2", "qwen2", n_layers=4, hidden=48, rank=8, alpha=16, seed=2),
        "gemma3": make_peft_adapter(root / "gemma3", "gemma3", n_layers=3, hidden=40, rank=2, alpha=4, seed=3,
                                    dtype="bfloat16"),
        "phi3": make_peft_adapter(root / "phi3", "phi3", n_layers=5, rank=4, alpha=8, seed=4),
        "gpt2": make_peft_adapter(root / "gpt2", "gpt2", n_layers=2, rank=4, alpha=8, seed=5),
        "mistral16": make_peft_adapter(root / "mistral", "mistral", n_layers=8, rank=4, alpha=16, seed=6,
                                       dtype="float16", with_model_config=False),
    }


@pytest.fixture(scope="session")
def fusion(tmp_path_factory):
    """Tiny Llama base model folder + target adapter + Qwen2/Gemma3 sources + replay file + plans."""
    return make_fusion_setting(tmp_path_factory.mktemp("fusion"))
