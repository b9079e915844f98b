"""The HyperNet's training step: the LM gradient reaches the HyperNets through the patched B's, with and without
gradient checkpointing."""

import pytest
import torch

from hf_common.plan import Plan
from hf_fuse.methods.hypernet import HyperNetObjective, HyperNetSettings
from hf_fuse.methods.hypernet.forward import new_b_tensors, run_hypernets
from hf_fuse.methods.hypernet.network import HyperNet, HyperNetConfig, HyperNets
from hf_fuse.methods.hypernet.patching import backward_through_patch, original_b, patched
from hf_fuse.methods.hypernet.plan_tensors import build_group
from hf_runtime.data import ReplayConfig, load_replay
from hf_runtime.model import attach_target, load_model_and_tokenizer, resolve_base_model, tensors_from_plan
from hf_runtime.trainer import lm_loss

CPU = torch.device("cpu")


def _setup(fusion, checkpointing: bool, nonzero_decoder: bool = False):
    model, tokenizer = load_model_and_tokenizer(resolve_base_model(fusion["base"]), CPU, torch.float32)
    with Plan(fusion["plan"]) as plan:
        peft_model = attach_target(model, plan.target_config, tensors_from_plan(plan))
        groups = [build_group(plan, g, CPU) for g in plan.groups]
    torch.manual_seed(0)
    nets = HyperNets({g.name: HyperNet(HyperNetConfig(g.block_size, g.rank, embed_dim=16, n_heads=2)) for g in groups})
    if nonzero_decoder:
        with torch.no_grad():
            for name in nets.names():
                nets[name].decoder[-1].weight.normal_(0, 0.01)
    replay = load_replay([fusion["replay"]], tokenizer, ReplayConfig())
    HyperNetObjective(peft_model, nets, groups, HyperNetSettings(), seed=0, gradient_checkpointing=checkpointing,
                      pad_id=tokenizer.pad_token_id, device=CPU).prepare()
    return peft_model, tokenizer, groups, nets, replay


def _lm_gradients(peft_model, tokenizer, groups, nets, replay):
    outputs = run_hypernets(nets, groups)
    originals = original_b(peft_model, {u.module for g in groups for u in g.units})
    new_b = new_b_tensors(nets, groups, outputs, originals)
    with patched(peft_model, new_b) as leaves:
        lm_loss(peft_model, replay.examples[:2], tokenizer.pad_token_id, CPU).backward()
    backward_through_patch(new_b, leaves, None)
    return {name: p.grad.clone() for name, p in nets.named_parameters() if p.grad is not None}


def test_lm_gradient_reaches_hypernets_and_alpha_only(fusion):
    peft_model, tokenizer, groups, nets, replay = _setup(fusion, checkpointing=True, nonzero_decoder=True)
    grads = _lm_gradients(peft_model, tokenizer, groups, nets, replay)
    for name in nets.names():
        key = name.replace(".", "__")
        for part in ("alpha", "decoder.2.weight", "encoder.row_proj.weight", "encoder.gate_mlp.0.weight",
                     "attention.in_proj_weight"):
            grad = grads[f"nets.{key}.{part}"]
            assert grad.abs().sum() > 0, (name, part)
    assert all(p.grad is None and not p.requires_grad for p in peft_model.parameters())


def test_gradient_checkpointing_is_active_and_keeps_the_lm_gradient(fusion):
    calls = {"n": 0}

    def count(*_):
        calls["n"] += 1

    results = {}
    for checkpointing in (False, True):
        peft_model, tokenizer, groups, nets, replay = _setup(fusion, checkpointing, nonzero_decoder=True)
        layer = peft_model.base_model.model.model.layers[1]
        handle = layer.self_attn.register_forward_hook(count)
        calls["n"] = 0
        results[checkpointing] = _lm_gradients(peft_model, tokenizer, groups, nets, replay)
        handle.remove()
        # with checkpointing the layer's forward runs again during backward
        assert calls["n"] == (2 if checkpointing else 1)
    assert results[True].keys() == results[False].keys()
    for key, grad in results[False].items():
        torch.testing.assert_close(results[True][key], grad, rtol=1e-4, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in results[True].values())


def test_settings_validation_names_flags():
    from hf_common.errors import ConfigError

    with pytest.raises(ConfigError, match="--ablate"):
        HyperNetSettings(ablate=("everything",))
    with pytest.raises(ConfigError, match="--n-proj"):
        HyperNetSettings(n_proj=0)
