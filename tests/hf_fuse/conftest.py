from __future__ import annotations

import pytest
from tiny_models import make_fusion_setting


@pytest.fixture(scope="session")
def fusion(tmp_path_factory):
    """Tiny Llama base model folder + target adapter + Qwen2/Gemma3 sources + replay file + plans."""
    return make_fusion_setting(tmp_path_factory.mktemp("fusion"))
