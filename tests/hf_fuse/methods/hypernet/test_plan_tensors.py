import torch

from hf_common.adapter import load_adapter
from hf_common.plan import Plan
from hf_fuse.methods.hypernet.plan_tensors import build_group
from hf_runtime.model import tensors_from_plan


def test_delta_gather_reassembles_b_exactly(fusion):
    """Feeding the target tokens back as 'deltas' must give each unit's B rows: the gather is exact."""
    target = load_adapter(fusion["target"])
    with Plan(fusion["plan"]) as plan:
        for group in plan.groups:
            tensors = build_group(plan, group, torch.device("cpu"))
            recovered = tensors.delta_b(tensors.target_tokens)
            for unit, rows in zip(tensors.units, recovered):
                _, b = target.factors(target.modules[unit.module])
                assert torch.equal(rows, torch.from_numpy(b)[unit.rows])


def test_rebuilt_target_tokens_match_the_plan(fusion):
    with Plan(fusion["plan"]) as plan:
        tensors = tensors_from_plan(plan)
        for group in plan.groups:
            stored = build_group(plan, group, torch.device("cpu"))
            rebuilt = build_group(plan, group, torch.device("cpu"), tensors)
            assert torch.equal(stored.target_tokens, rebuilt.target_tokens)
            torch.testing.assert_close(stored.target_desc, rebuilt.target_desc, rtol=1e-4, atol=1e-5)


def test_sources_of_different_depths_share_one_padded_batch(fusion):
    with Plan(fusion["plan"]) as plan:
        q = build_group(plan, plan.groups[0], torch.device("cpu"))
    # target layers 1..3 see qwen (3 layers, tail-aligned); layers 2..3 also see gemma (2 layers)
    counts = q.source_mask.sum(1).tolist()
    assert counts == sorted(counts) and counts[0] < counts[-1]
    assert set(q.source_of_position[q.source_mask].tolist()) == {0, 1}
    assert (q.source_of_position[~q.source_mask] == -1).all()
