"""The honest baselines: LoRA experts, replay-tune and homogeneous merges.

- experts: plain PEFT LoRA fine-tuning through the one training loop (``hf_runtime.lora``, ``hf_runtime.trainer``);
- ``replay_tune``: the target adapter trained further on the same replay mix for the same
  number of optimiser steps as a fusion run: the paper's "directly adapting the same backbone".
- ``merge``: PEFT's own ``add_weighted_adapter`` (linear, TIES, DARE-TIES) for adapters of one
  base model; refused with a clear message when the families or shapes differ.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from hf_common.adapter import load_adapter
from hf_common.atomic import atomic_folder
from hf_common.errors import InputError

logger = logging.getLogger(__name__)
MERGE_METHODS = ("linear", "ties", "dare_ties")


def lora_modules(model) -> list[str]:
    """The LoRA-able projections of ``model`` (every module the family registry maps to a role: the seven projections
    of a Llama-style model, ``c_attn``/``c_proj``/``c_fc`` of GPT-2...), as PEFT ``target_modules`` names."""
    from hf_common.registry import ROLES, families

    model_type = getattr(model.config, "model_type", None)
    family = next((f for f in families().values() if model_type in f.model_types), None)
    if family is None:
        return list(ROLES)
    return list(dict.fromkeys(suffix.rsplit(".", 1)[-1] for suffix in family.modules))


def new_lora(model, rank: int = 8, alpha: float = 16, modules: list[str] | None = None, dropout: float = 0.05):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                                            target_modules=modules or lora_modules(model), task_type="CAUSAL_LM"))


def trainable_from(model, adapter_dir: Path):
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)


def save_adapter(peft_model, out_dir: Path, *, force: bool, base_model_name: str | None,
                 adapter_name: str = "default", card_text: str | None = None) -> None:
    """Save one adapter of ``peft_model`` to ``out_dir`` atomically (temporary folder, then rename), with our model
    card in place of PEFT's empty template; ``base_model_name`` (a Hub id, a model folder, or None for a GGUF base
    of unknown origin) replaces what PEFT would write, which for a GGUF base is a path into the conversion cache."""
    peft_model.peft_config[adapter_name].base_model_name_or_path = base_model_name
    with atomic_folder(out_dir, force=force) as tmp:
        # Our adapters never train embeddings (embedding LoRA is refused); saying so also stops PEFT from
        # probing the Hub for the base model's config.json, which must never happen at run time.
        peft_model.save_pretrained(tmp, selected_adapters=[adapter_name], save_embedding_layers=False)
        if adapter_name != "default":  # PEFT nests non-default adapters in a subfolder: lift its files up
            nested = tmp / adapter_name
            for item in nested.iterdir():
                os.replace(item, tmp / item.name)
            nested.rmdir()
        # PEFT fills an empty base model name from the model's config (a conversion-cache folder for a GGUF base)
        config = json.loads((tmp / "adapter_config.json").read_text())
        if config.get("base_model_name_or_path") != base_model_name:
            config["base_model_name_or_path"] = base_model_name
            (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if card_text is not None:
            (tmp / "README.md").write_text(card_text)


def check_adapter(path: Path):
    """A valid LoRA adapter whose every value is finite (a NaN would train into an all-NaN adapter)."""
    adapter = load_adapter(path)
    for module in adapter.modules.values():
        adapter.factors(module)  # raises, naming the file and the tensor, on NaN or inf
    return adapter


def check_homogeneous(adapters: list[Path]) -> None:
    """Merging needs one base model: same family, layer count and module shapes."""
    opened = [check_adapter(path) for path in adapters]
    first = opened[0]
    for other in opened[1:]:
        if other.family.name != first.family.name or other.n_layers != first.n_layers:
            raise InputError(
                f"homogeneous merges need adapters of one base model: {other.folder} is {other.family.name} with "
                f"{other.n_layers} layers, {first.folder} is {first.family.name} with {first.n_layers} layers "
                "(use hf-analyze and hf-fuse across families)", other.folder)
        shapes = {m.path: (m.d_in, m.d_out) for m in first.modules.values()}
        for module in other.modules.values():
            if module.path in shapes and shapes[module.path] != (module.d_in, module.d_out):
                raise InputError(f"module {module.path} is {module.d_in} -> {module.d_out} here but "
                                 f"{shapes[module.path][0]} -> {shapes[module.path][1]} in {first.folder}: "
                                 "not the same base model", other.folder)


def merge(model, adapters: list[Path], weights: list[float], method: str, density: float = 0.5):
    """A ``PeftModel`` whose adapter ``merged`` is PEFT's weighted combination of ``adapters``."""
    from peft import PeftModel

    if method not in MERGE_METHODS:
        raise InputError(f"--method must be one of {', '.join(MERGE_METHODS)}, got {method!r}")
    if len(weights) != len(adapters):
        raise InputError(f"{len(adapters)} adapters but {len(weights)} weights")
    check_homogeneous(adapters)
    names = [f"a{i}" for i in range(len(adapters))]
    peft_model = PeftModel.from_pretrained(model, adapters[0], adapter_name=names[0])
    for name, path in zip(names[1:], adapters[1:]):
        peft_model.load_adapter(path, adapter_name=name)
    kwargs = {} if method == "linear" else {"density": density}
    peft_model.add_weighted_adapter(names, weights, "merged", combination_type=method, **kwargs)
    peft_model.set_adapter("merged")
    return peft_model
