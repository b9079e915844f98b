import pytest
import torch

from hf_common.plan import Plan
from hf_fuse.methods.hypernet.patching import lora_b_linear, patched
from hf_runtime.model import attach_target, load_config, load_model_and_tokenizer, resolve_base_model, tensors_from_plan


@pytest.fixture()
def peft_model(fusion):
    ref = resolve_base_model(fusion["base"])
    load_config(ref)
    model, _ = load_model_and_tokenizer(ref, torch.device("cpu"), torch.float32)
    with Plan(fusion["plan"]) as plan:
        return attach_target(model, plan.target_config, tensors_from_plan(plan))


def test_patch_is_live_and_restored_exactly(peft_model):
    module = "model.layers.2.self_attn.q_proj"
    original = lora_b_linear(peft_model, module).weight
    before = original.detach().clone()
    new = before + 1.0
    with patched(peft_model, {module: new}) as leaves:
        live = lora_b_linear(peft_model, module).weight
        assert live is leaves[module] and torch.equal(live, new) and live.requires_grad
    assert lora_b_linear(peft_model, module).weight is original
    assert torch.equal(original, before) and not original.requires_grad


def test_patch_is_restored_when_the_forward_raises(peft_model):
    module = "model.layers.3.mlp.down_proj"
    original = lora_b_linear(peft_model, module).weight
    before = original.detach().clone()
    with pytest.raises(RuntimeError, match="boom"):
        with patched(peft_model, {module: torch.zeros_like(before)}):
            peft_model(input_ids=torch.tensor([[1, 2, 3]]))
            raise RuntimeError("boom")
    assert lora_b_linear(peft_model, module).weight is original
    assert torch.equal(original, before)
