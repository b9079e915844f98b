"""Data parallel on two CPU processes (gloo), launched as a user would: torchrun -m hf_fuse / hf_eval.

The tolerance: two processes sum the same micro-batch gradients in another order (each process adds its
share, then the all-reduce adds the two partial sums), so results differ from one process only by float32
rounding; measured 1.4e-9 relative on this setting, tested at 1e-5.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from hf_runtime.distributed import Processes, my_share

RTOL = 1e-5
FUSE = ["--max-steps", "3", "--batch-size", "2", "--embed-dim", "auto", "--n-heads", "2", "--n-proj", "16", "--seed", "0",
        "--checkpoint-every", "2", "-q"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _launch(n: int, module: str, args: list, cwd) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)]
    command = [*launcher, "-m", module] if n > 1 else [sys.executable, "-m", module]
    return subprocess.run([*command, *map(str, args)], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


def _close(a_dir, b_dir) -> float:
    a, b = load_file(a_dir / "adapter_model.safetensors"), load_file(b_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max() / (a[k].abs().max() + 1e-12)) for k in a)


def test_my_share_splits_a_step_into_contiguous_equal_parts():
    batches = list(range(6))
    assert [my_share(batches, Processes(r, 3)) for r in range(3)] == [[0, 1], [2, 3], [4, 5]]
    assert my_share(batches, Processes()) == batches


def test_two_processes_equal_one_with_the_same_step_resume_with_one_and_write_once(fusion, tmp_path):
    common = [fusion["plan"], "--base-model", fusion["base"], "--replay", fusion["replay"], *FUSE]
    two = _launch(2, "hf_fuse", [*common, "--grad-accum", "2", "-o", tmp_path / "two"], tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    one = _launch(1, "hf_fuse", [*common, "--grad-accum", "4", "-o", tmp_path / "one"], tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    report = json.loads((tmp_path / "two/fusion_report.json").read_text())
    assert report["processes"] == 2 and report["settings"]["train"]["grad_accum"] == 4  # the whole step's micro-batches
    assert _close(tmp_path / "one", tmp_path / "two") < RTOL
    changed = load_file(tmp_path / "two/adapter_model.safetensors")
    target = load_file(fusion["target"] / "adapter_model.safetensors")
    assert any(not torch.equal(changed[k], target[k]) for k in target)  # it trained: the comparison is not vacuous
    # only the main process wrote: each step once in the log, no temporary leftovers
    steps = [line for line in (tmp_path / "two.log").read_text().splitlines() if "hf_runtime.trainer: task 0 step" in line]
    assert len(steps) == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # the 2-process run left its step-2 checkpoint; one process with the same step size resumes it
    resumed = _launch(1, "hf_fuse", [*common, "--grad-accum", "4", "-o", tmp_path / "resumed", "--checkpoint-dir",
                                     tmp_path / "two.ckpt", "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed task 0 at step 2" in (tmp_path / "resumed.log").read_text()
    assert _close(tmp_path / "two", tmp_path / "resumed") < RTOL


def test_bad_input_in_two_processes_is_said_once_and_nothing_is_written(fusion, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    result = _launch(2, "hf_fuse", [fusion["plan"], "--base-model", fusion["base"], "--replay", bad, *FUSE,
                                    "-o", tmp_path / "out"], tmp_path)
    assert result.returncode != 0
    assert result.stderr.count("error:") == 1 and "bad.json" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["evaluate", "replay-tune"])
def test_hf_eval_in_two_processes_equals_one(fusion, tmp_path, command):
    if command == "evaluate":
        args = ["evaluate", "--base-model", fusion["base"], "--adapter", f"t={fusion['target']}", "--data", fusion["replay"],
                "--max-examples", "5", "--max-new-tokens", "6", "--batch-size", "2", "-q"]
        runs = {n: _launch(n, "hf_eval", [*args, "-o", tmp_path / f"r{n}"], tmp_path) for n in (1, 2)}
        assert all(r.returncode == 0 for r in runs.values()), runs[2].stderr[-2000:]
        one, two = (json.loads((tmp_path / f"r{n}/results.json").read_text()) for n in (1, 2))
        assert one["adapters"] == {**two["adapters"], "t": {**two["adapters"]["t"], "seconds": one["adapters"]["t"]["seconds"]}}
        assert two["processes"] == 2
        rows = [(tmp_path / f"r{n}/predictions/t/replay.jsonl").read_text() for n in (1, 2)]
        assert rows[0] == rows[1] and len(rows[0].splitlines()) == 5
    else:
        args = ["replay-tune", "--base-model", fusion["base"], "--adapter", fusion["target"], "--replay", fusion["replay"],
                "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3", "-q"]
        runs = {n: _launch(n, "hf_eval", [*args, "--grad-accum", str(4 // n), "-o", tmp_path / f"r{n}"], tmp_path)
                for n in (1, 2)}
        assert all(r.returncode == 0 for r in runs.values()), runs[2].stderr[-2000:]
        assert _close(tmp_path / "r1", tmp_path / "r2") < RTOL


def test_sharded_base_model_equals_the_unsharded_run_and_holds_half_the_base_per_process(fusion, tmp_path):
    common = [fusion["plan"], "--base-model", fusion["base"], "--replay", fusion["replay"], *FUSE]
    sharded = _launch(2, "hf_fuse", [*common, "--grad-accum", "2", "--shard-base-model", "-o", tmp_path / "sharded"],
                      tmp_path)
    assert sharded.returncode == 0, sharded.stderr[-2000:]
    one = _launch(1, "hf_fuse", [*common, "--grad-accum", "4", "-o", tmp_path / "one"], tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    assert _close(tmp_path / "one", tmp_path / "sharded") < RTOL
    info = json.loads((tmp_path / "sharded/fusion_report.json").read_text())["sharded_base_model"]
    assert info["processes"] == 2 and info["base_parameters_here"] <= info["base_parameters"] // 2 + 1
    assert info["units"] == ["LlamaDecoderLayer"]


def test_sharding_needs_several_processes_and_says_so_before_loading(fusion, tmp_path):
    one = _launch(1, "hf_fuse", [fusion["plan"], "--base-model", fusion["base"], "--replay", fusion["replay"], *FUSE,
                                 "--shard-base-model", "-o", tmp_path / "out"], tmp_path)
    assert one.returncode == 2 and "needs several processes" in one.stderr and not (tmp_path / "out").exists()


def test_distill_lora_student_sharded_in_two_processes_equals_one(fusion, tmp_path):
    from tiny_models import make_distill_setting

    setting = make_distill_setting(fusion, tmp_path, n_prompts=4)
    common = [setting["plan"], "--base-model", fusion["base"], "--replay", fusion["replay"], "--method", "distill",
              "--source-model", f"0={setting['source_base']}", "--unlabeled", setting["unlabeled"], "--gen-max-new-tokens", "6",
              "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3", "-q"]
    two = _launch(2, "hf_fuse", [*common, "--grad-accum", "1", "--shard-base-model", "-o", tmp_path / "two"], tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    one = _launch(1, "hf_fuse", [*common, "--grad-accum", "2", "-o", tmp_path / "one", "--gen-cache", tmp_path / "two.work"],
                  tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    assert _close(tmp_path / "one", tmp_path / "two") < RTOL
    sources = json.loads((tmp_path / "one/fusion_report.json").read_text())["distill"]["sources"]["0"]
    assert sources["cached"] == sources["prompts"]  # the two-process run generated once, into the shared cache
