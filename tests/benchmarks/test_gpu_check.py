"""The GPU check (``benchmarks/gpu_check.sh``): it refuses a machine without CUDA at once, and its smoke mode runs
every part (pytest -m gpu, bench_fuse, bench_scale, a distill run) on tiny models on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _check(*args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable}
    return subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--out", str(tmp_path / "out"), "--work",
                           str(tmp_path / "work"), *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_refuses_without_cuda_at_once_and_writes_nothing(tmp_path):
    done = _check(tmp_path=tmp_path)
    assert done.returncode == 2 and "no CUDA device" in done.stderr and "--smoke" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_smoke_mode_runs_every_part_and_writes_its_figures(tmp_path):
    done = _check("--smoke", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    (path,) = (tmp_path / "out").glob("gpu-*-smoke.json")
    figures = json.loads(path.read_text())
    assert figures["smoke"] and figures["failed"] == [] and set(figures["parts"]) == {"pytest_gpu", "bench_fuse",
                                                                                        "bench_scale", "distill"}
    assert figures["parts"]["bench_fuse"]["figures"]["results"]["fuse-auto"]["seconds_per_micro_step"] > 0
    assert figures["parts"]["distill"]["steps"] == 2 and figures["parts"]["distill"]["generation"]["prompts"] == 8
    assert "4 of 4 parts passed" in done.stdout
