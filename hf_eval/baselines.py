"""The honest baselines: LoRA experts, replay-tune and homogeneous merges.

- ``train_lora``: plain PEFT LoRA fine-tuning with the same schedule machinery as hf-fuse
  (same seeded micro-batch stream, AdamW, cosine schedule with warm-up).
- ``replay_tune``: the target adapter trained further on the same replay mix for the same
  number of optimiser steps as a fusion run: the paper's "directly adapting the same backbone".
- ``merge``: PEFT's own ``add_weighted_adapter`` (linear, TIES, DARE-TIES) for adapters of one
  base model; refused with a clear message when the families or shapes differ.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch

from hf_common.adapter import load_adapter
from hf_common.atomic import atomic_folder
from hf_common.errors import InputError
from hf_fuse.data import Example
from hf_fuse.train import TrainSettings, lm_loss, micro_batches, schedule_length

logger = logging.getLogger(__name__)
ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MERGE_METHODS = ("linear", "ties", "dare_ties")


def train_lora(peft_model, examples: list[Example], pad_id: int, settings: TrainSettings, device: torch.device,
               on_step: Callable[[dict, int], None] | None = None) -> list[dict]:
    """Train the trainable (LoRA) parameters of ``peft_model``; returns the loss history."""
    from transformers import get_cosine_schedule_with_warmup

    micro_per_epoch, total = schedule_length(len(examples), settings)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay,
                                  fused=device.type in ("cpu", "cuda"))
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(settings.warmup_ratio * total), max(total, 1))
    if settings.gradient_checkpointing:
        peft_model.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model.base_model.model.enable_input_require_grads()
    peft_model.train()
    history = []
    for step in range(total):
        batches = micro_batches(step, examples, settings, micro_per_epoch)
        total_loss = 0.0
        for batch in batches:
            loss = lm_loss(peft_model, batch, pad_id, device) / len(batches)
            loss.backward()
            total_loss += loss.item()
        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        history.append({"step": step + 1, "loss": total_loss, "lr": scheduler.get_last_lr()[0]})
        logger.info("step %d/%d loss %.4f", step + 1, total, total_loss)
        if on_step:
            on_step(history[-1], total)
    peft_model.eval()
    return history


def new_lora(model, rank: int = 8, alpha: float = 16, modules: tuple[str, ...] = ALL_PROJECTIONS, dropout: float = 0.05):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(modules),
                                            task_type="CAUSAL_LM"))


def trainable_from(model, adapter_dir: Path):
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)


def save_adapter(peft_model, out_dir: Path, *, force: bool, base_model_name: str | None = None,
                 adapter_name: str = "default") -> None:
    """Save one adapter of ``peft_model`` to ``out_dir`` atomically (temporary folder, then rename)."""
    if base_model_name:
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


def check_homogeneous(adapters: list[Path]) -> None:
    """Merging needs one base model: same family, layer count and module shapes."""
    opened = [load_adapter(path) for path in adapters]
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
