import h5py
import numpy as np
import pytest

from hf_analyze.execute import execute
from hf_analyze.planner import AnalyzeSettings, analyze
from hf_analyze.report import build_report
from hf_common.errors import OutputExistsError, PlanFormatError, PlanVersionError
from hf_common.plan import Plan


@pytest.fixture()
def plan_path(adapters, tmp_path):
    analysis = analyze(adapters["llama"], [adapters["qwen2"]], AnalyzeSettings(block_size=16))
    execute(analysis, build_report(analysis), tmp_path / "plan.h5")
    return tmp_path / "plan.h5"


def test_checksum_finds_a_changed_value(plan_path):
    with h5py.File(plan_path, "r+") as handle:
        rows = handle["groups/q_proj.r4/source/descriptors"]
        rows[0, 0] = rows[0, 0] + 1.0
    with pytest.raises(PlanFormatError, match="checksum mismatch in /groups/q_proj.r4/source/descriptors"):
        Plan(plan_path)
    Plan(plan_path, verify=False).close()  # the layout itself is still readable


def test_checksum_finds_a_removed_dataset(plan_path):
    with h5py.File(plan_path, "r+") as handle:
        del handle["layer_maps/source_0"]
    with pytest.raises(PlanFormatError, match="plan checksum mismatch"):
        Plan(plan_path)


def test_newer_version_is_refused(plan_path):
    with h5py.File(plan_path, "r+") as handle:
        handle.attrs["format_version"] = 3
    with pytest.raises(PlanVersionError, match="plan format version 3 is not supported"):
        Plan(plan_path)


def test_missing_group_array_is_a_layout_error(plan_path):
    with h5py.File(plan_path, "r+") as handle:
        del handle["groups/k_proj.r4/target/descriptors"]
    with pytest.raises(PlanFormatError, match="group k_proj.r4 lacks target/descriptors"):
        Plan(plan_path, verify=False)


@pytest.mark.parametrize("content", [b"", b"\x89HDF\r\n\x1a\n garbage", b"hello"])
def test_not_a_plan(tmp_path, content):
    (tmp_path / "x.h5").write_bytes(content)
    with pytest.raises(PlanFormatError, match="x.h5"):
        Plan(tmp_path / "x.h5")


def test_other_hdf5_file_is_not_a_plan(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle["x"] = np.zeros(3)
    with pytest.raises(PlanFormatError, match="not a fusion plan"):
        Plan(tmp_path / "other.h5")


def test_existing_plan_is_not_overwritten(adapters, plan_path):
    before = plan_path.read_bytes()
    analysis = analyze(adapters["llama"], [adapters["gemma3"]], AnalyzeSettings())
    with pytest.raises(OutputExistsError, match="--force"):
        execute(analysis, build_report(analysis), plan_path)
    assert plan_path.read_bytes() == before
    execute(analysis, build_report(analysis), plan_path, force=True)
    with Plan(plan_path) as plan:
        assert plan.report["sources"][0]["family"] == "gemma"


def test_failure_while_writing_leaves_nothing(adapters, tmp_path, monkeypatch):
    from hf_analyze import execute as execute_module

    analysis = analyze(adapters["llama"], [adapters["qwen2"]], AnalyzeSettings())

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(execute_module, "materialize", broken)
    with pytest.raises(RuntimeError):
        execute(analysis, build_report(analysis), tmp_path / "plan.h5")
    assert list(tmp_path.iterdir()) == []


def test_a_version_1_plan_with_every_row_stored_is_still_read(plan_path, tmp_path):
    """Version 1 stored every unit's rows; version 2 rebuilds them from the adapters it holds. A version 1 plan,
    made here from a version 2 one as hf-analyze 0.2 wrote them, reads the same rows."""
    import shutil

    from hf_common.plan import combined_checksum, dataset_digest

    with Plan(plan_path) as plan:
        rows = {(g.name, side): g.array(f"{side}/rows") for g in plan.groups for side in ("target", "source")}
    old = shutil.copy(plan_path, tmp_path / "v1.h5")
    with h5py.File(old, "r+") as handle:
        for (name, side), value in rows.items():
            node = handle[f"groups/{name}"]
            del node[f"{side}/stored_rows"]
            node.create_dataset(f"{side}/rows", data=value)
            for key in ("unit_key_a", "unit_key_b", "unit_b_rows") if side == "source" else ():
                del node[f"source/{key}"]
        handle.attrs["format_version"] = 1
        hashes = {}

        def rehash(path, node):
            if isinstance(node, h5py.Dataset):
                data = node.asstr()[()] if h5py.check_string_dtype(node.dtype) else node[()]
                node.attrs["sha256"] = hashes[path] = dataset_digest(np.asarray(data, dtype=object if node.dtype.kind == "O"
                                                                          else node.dtype))

        handle.visititems(rehash)
        attrs = {k: handle.attrs[k] for k in ("format", "format_version", "created_by", "created_at")}
        handle.attrs["checksum"] = combined_checksum(hashes, {k: (int(v) if k == "format_version" else str(v))
                                                     for k, v in attrs.items()})
    with Plan(old) as plan:
        assert plan.version == 1
        for group in plan.groups:
            for side in ("target", "source"):
                np.testing.assert_array_equal(group.array(f"{side}/rows"), rows[group.name, side])


def test_a_version_2_plan_stores_no_row_it_can_rebuild(plan_path, adapters):
    with h5py.File(plan_path, "r") as handle:
        assert handle.attrs["format_version"] == 2
        for node in handle["groups"].values():
            assert "target/rows" not in node and "source/rows" not in node
            assert node["target/stored_rows"].shape[0] == 0  # the target's rows come from /target_adapter
            truncated = [m.decode() == "truncated-svd" for m in node["source/unit_rank_method"][()]]
            d = node["source/unit_d_in"][()] + node["source/unit_d_out"][()]
            assert node["source/stored_rows"].shape[0] == int(d[truncated].sum())
    size = plan_path.stat().st_size
    inputs = sum((adapters[k] / "adapter_model.safetensors").stat().st_size for k in ("llama", "qwen2"))
    assert size < 1.5 * inputs + 200_000  # the adapters verbatim, the spectra and the tables; not every row again
