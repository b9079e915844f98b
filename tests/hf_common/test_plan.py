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
        rows = handle["groups/q_proj.r4/source/rows"]
        rows[0, 0] = rows[0, 0] + 1.0
    with pytest.raises(PlanFormatError, match="checksum mismatch in /groups/q_proj.r4/source/rows"):
        Plan(plan_path)
    Plan(plan_path, verify=False).close()  # the layout itself is still readable


def test_checksum_finds_a_removed_dataset(plan_path):
    with h5py.File(plan_path, "r+") as handle:
        del handle["layer_maps/source_0"]
    with pytest.raises(PlanFormatError, match="plan checksum mismatch"):
        Plan(plan_path)


def test_newer_version_is_refused(plan_path):
    with h5py.File(plan_path, "r+") as handle:
        handle.attrs["format_version"] = 2
    with pytest.raises(PlanVersionError, match="plan format version 2 is not supported"):
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
