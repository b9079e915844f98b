import numpy as np
import pytest

from hf_analyze.execute import execute
from hf_analyze.planner import AnalyzeSettings, analyze, materialize_arrays
from hf_analyze.report import build_report
from hf_common.adapter import load_adapter
from hf_common.errors import ConfigError
from hf_common.plan import Plan


def test_groups_maps_and_unmatched_for_three_families(adapters):
    analysis = analyze(adapters["llama"], [adapters["qwen2"], adapters["gemma3"]], AnalyzeSettings(block_size=16))
    assert analysis.layer_maps == [[(2, 0), (3, 1), (4, 2), (5, 3)], [(3, 0), (4, 1), (5, 2)]]
    assert [g.name for g in analysis.groups] == [f"{r}.r4" for r in
                                                 ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")]
    q = analysis.groups[0]
    assert [u.layer for u in q.target_units] == [2, 3, 4, 5]
    # layers 3-5 see both sources (qwen first, then gemma): contexts are concatenated, never averaged
    assert [len(c) for c in q.contexts] == [1, 2, 2, 2]
    assert {q.source_units[i].source for i in q.contexts[1]} == {0, 1}
    reasons = {u["module"]: u["reason"] for u in analysis.unmatched}
    assert reasons["model.layers.0.self_attn.q_proj"] == "the layer is outside every source's layer map"
    assert len(reasons) == 14


def test_transfer_ratio_limits_layers(adapters):
    analysis = analyze(adapters["llama"], [adapters["qwen2"]], AnalyzeSettings(transfer_ratio=0.5))
    assert analysis.layer_maps == [[(4, 2), (5, 3)]]
    assert all(len(g.target_units) == 2 for g in analysis.groups)


def test_fused_target_modules_split_into_roles(adapters):
    analysis = analyze(adapters["phi3"], [adapters["llama"]], AnalyzeSettings(block_size=8))
    names = [g.name for g in analysis.groups]
    assert names == ["q_proj.r4", "k_proj.r4", "v_proj.r4", "o_proj.r4", "gate_proj.r4", "up_proj.r4", "down_proj.r4"]
    k_group = analysis.groups[1]
    unit = k_group.target_units[0]
    assert unit.module.path.endswith("self_attn.qkv_proj") and unit.label.endswith("[k_proj]")
    # Phi-3 tiny: 4 heads of 8, 2 KV heads -> q 32 rows, k 16, v 16
    np.testing.assert_array_equal(unit.b_rows, np.arange(32, 48))
    data = materialize_arrays(analysis, k_group)
    a, b = load_adapter(adapters["phi3"]).factors(unit.module)
    rows = data["target/rows"][: data["target/unit_row_offset"][1]]
    np.testing.assert_array_equal(rows[:32], a.T)
    np.testing.assert_array_equal(rows[32:], b[32:48])


def test_fused_source_modules_feed_llama_target(adapters):
    analysis = analyze(adapters["llama"], [adapters["gpt2"]], AnalyzeSettings(block_size=8))
    assert {g.role for g in analysis.groups} == {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"}
    reasons = {u["module"]: u["reason"] for u in analysis.unmatched}
    assert reasons["model.layers.5.mlp.gate_proj"] == "no source adapter has a gate_proj module"


def test_source_tokens_are_scale_and_rank_normalised(adapters):
    analysis = analyze(adapters["llama"], [adapters["qwen2"]], AnalyzeSettings(block_size=16))
    group = analysis.groups[6]  # down_proj: qwen r8 alpha16 -> llama r4 alpha8
    data = materialize_arrays(analysis, group)
    s_unit = group.source_units[0]
    start, stop = data["source/unit_row_offset"][:2]
    rows = data["source/rows"][start:stop]
    d_in = s_unit.unit.module.d_in
    a_n, b_n = rows[:d_in].T, rows[d_in:]
    assert a_n.shape[0] == 4 and data["source/unit_rank_method"][0] == "truncated-svd"
    a, b = load_adapter(adapters["qwen2"]).factors(s_unit.unit.module)
    full = 2.0 * b.astype(np.float64) @ a
    u, s, vt = np.linalg.svd(full)
    np.testing.assert_allclose(2.0 * b_n @ a_n, (u[:, :4] * s[:4]) @ vt[:4], atol=1e-4)


def test_settings_validation_names_flags():
    with pytest.raises(ConfigError, match="--transfer-ratio"):
        AnalyzeSettings(transfer_ratio=0)
    with pytest.raises(ConfigError, match="--block-size"):
        AnalyzeSettings(block_size=0)


def test_plan_round_trip(adapters, tmp_path):
    # every row a plan rebuilds from the adapters it holds is bit for bit what hf-analyze computed: sources of
    # higher rank (truncated SVD, stored), lower rank in bfloat16 (zero-padded), float16 with another scale
    # (rescaled), a fused qkv_proj (B rows per role)
    analysis = analyze(adapters["llama"], [adapters["qwen2"], adapters["gemma3"], adapters["mistral16"], adapters["phi3"]],
                       AnalyzeSettings(block_size="auto"))
    methods = {m for g in analysis.groups for m in materialize_arrays(analysis, g)["source/unit_rank_method"]}
    assert methods == {"same", "zero-padded", "truncated-svd"}
    report = build_report(analysis)
    execute(analysis, report, tmp_path / "plan.h5")
    with Plan(tmp_path / "plan.h5") as plan:
        assert plan.report == report and plan.block_size == analysis.block_size == 16  # gcd(32, 16, 64)
        assert plan.target_config["r"] == 4
        assert [g.name for g in plan.groups] == [g.name for g in analysis.groups]
        for group, planned in zip(plan.groups, analysis.groups):
            expected = materialize_arrays(analysis, planned)
            for key, value in expected.items():
                np.testing.assert_array_equal(group.array(key), value)
        tensors = plan.target_tensors()
        target = load_adapter(adapters["llama"])
        assert set(tensors) == set(target.tensors.keys())
        for key, (raw, dtype) in tensors.items():
            assert dtype == "F32"
            np.testing.assert_array_equal(raw, target.tensors.raw(key))
        np.testing.assert_array_equal(plan.layer_map(1), [[3, 0], [4, 1], [5, 2]])
        inputs = plan.provenance["inputs"]
        assert [i["role"] for i in inputs] == ["target", "source", "source", "source", "source"]
        assert all(len(f["sha256"]) == 64 for i in inputs for f in i["files"])
