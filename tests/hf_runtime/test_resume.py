"""Every command that trains through the one loop survives Ctrl-C: a real SIGINT mid-run exits 130 with a checkpoint
and no output, and ``--resume`` then ends with the bytes an uninterrupted run writes (distill's LoRA student,
``hf-eval replay-tune``, ``hf-eval train-expert``; the HyperNet's resume is in tests/hf_fuse/test_run.py); a
checkpoint made by two processes resumes with one."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from tiny_models import make_distill_setting

STEPS = ["--max-steps", "40", "--batch-size", "2", "--grad-accum", "2", "--lr", "1e-3", "--checkpoint-every", "1", "-q"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _digest(folder):
    return hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()


def _interrupted(command: list, checkpoint) -> subprocess.CompletedProcess:
    """Start ``command``, send SIGINT once its first checkpoint exists (mid-run: steps remain), wait for it."""
    # Ctrl-C's default disposition in the child: a suite started in the background by a non-interactive shell runs
    # with SIGINT ignored, which children inherit (Python then installs no KeyboardInterrupt handler)
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def _commands(kind, fusion, tmp_path):
    if kind == "distill-lora":
        setting = make_distill_setting(fusion, tmp_path / "setting", n_prompts=5)
        base = [sys.executable, "-m", "hf_fuse", setting["plan"], "--base-model", setting["base"], "--replay",
                setting["replay"], "--method", "distill", "--source-model", f"0={setting['source_base']}", "--unlabeled",
                setting["unlabeled"], "--gen-max-new-tokens", "6", "--gen-cache", tmp_path / "gen"]
    elif kind == "replay-tune":
        base = [sys.executable, "-m", "hf_eval", "replay-tune", "--base-model", fusion["base"], "--adapter", fusion["target"],
                "--replay", fusion["replay"]]
    else:
        base = [sys.executable, "-m", "hf_eval", "train-expert", "--base-model", fusion["base"], "--data", fusion["replay"]]
    return [*map(str, base), *STEPS]


@pytest.mark.parametrize("kind", ["distill-lora", "replay-tune", "train-expert"])
def test_sigint_checkpoints_and_resume_is_bit_identical(fusion, tmp_path, kind):
    import torch

    command = _commands(kind, fusion, tmp_path)
    straight = subprocess.run([*command, "-o", str(tmp_path / "straight")], env=_env(), capture_output=True, text=True,
                              timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    out = tmp_path / "resumed"
    stopped = _interrupted([*command, "-o", str(out)], tmp_path / "resumed.ckpt/task0.pt")
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "interrupted" in stopped.stderr and "Traceback" not in stopped.stderr
    assert not out.exists()
    step = torch.load(tmp_path / "resumed.ckpt/task0.pt", weights_only=True)["state"]["step"]
    assert 1 <= step < 40
    resumed = subprocess.run([*command, "-o", str(out), "--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _digest(out) == _digest(tmp_path / "straight")


def test_a_two_process_checkpoint_resumes_with_one_process(fusion, tmp_path):
    """replay-tune: the step-2 checkpoint of a run on 2 processes x 1 micro-batch, resumed by 1 process x 2 micro-batches
    (the same 2 per step), ends where one process alone ends, to float32 rounding (the all-reduce adds in another
    order)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "hf_eval"]
    common = ["replay-tune", "--base-model", fusion["base"], "--adapter", fusion["target"], "--replay", fusion["replay"],
              "--max-steps", "4", "--batch-size", "2", "--lr", "1e-3", "--checkpoint-every", "2", "-q"]
    straight = subprocess.run([sys.executable, "-m", "hf_eval", *map(str, common), "--grad-accum", "2", "-o",
                               str(tmp_path / "one")], env=_env(), capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    two = subprocess.run([*launcher, *map(str, common), "--grad-accum", "1", "-o", str(tmp_path / "two")], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    # the two-process run left its step-2 checkpoint: one process resumes it (2 micro-batches per step either way)
    resumed = subprocess.run([sys.executable, "-m", "hf_eval", *map(str, common), "--grad-accum", "2", "-o",
                              str(tmp_path / "resumed"), "--resume", "--checkpoint-dir", str(tmp_path / "two.ckpt")],
                             env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "one/adapter_model.safetensors"), load_file(tmp_path / "resumed/adapter_model.safetensors")
    assert max(float((a[k] - b[k]).abs().max() / (a[k].abs().max() + 1e-12)) for k in a) < 1e-5


@pytest.mark.parametrize("stage", ["generation", "training"])
def test_distill_killed_with_sigkill_resumes_to_the_uninterrupted_adapter(fusion, tmp_path, stage):
    """kill -9 (no handler runs, nothing is flushed on purpose): during the expert's answers, or after the first
    checkpoint. The same command with --resume reads no half-written cache line as an answer and ends with the bytes
    an uninterrupted run writes."""
    setting = make_distill_setting(fusion, tmp_path / "setting", n_prompts=12)
    base = [sys.executable, "-m", "hf_fuse", setting["plan"], "--base-model", setting["base"], "--replay", setting["replay"],
            "--method", "distill", "--source-model", f"0={setting['source_base']}", "--unlabeled", setting["unlabeled"],
            "--gen-max-new-tokens", "24", "--gen-batch-size", "1", *STEPS]
    straight = subprocess.run([*map(str, base), "--gen-cache", str(tmp_path / "gen-straight"), "-o",
                               str(tmp_path / "straight")], env=_env(), capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    command = [*map(str, base), "--gen-cache", str(tmp_path / "gen"), "-o", str(tmp_path / "out")]
    # Ctrl-C's default disposition in the child: a suite started in the background by a non-interactive shell runs
    # with SIGINT ignored, which children inherit (Python then installs no KeyboardInterrupt handler)
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def cache_lines() -> int:
        return sum(len(p.read_bytes().splitlines()) for p in (tmp_path / "gen").glob("*.jsonl"))

    ready = (lambda: 0 < cache_lines() < 12) if stage == "generation" else (tmp_path / "out.ckpt" / "task0.pt").exists
    deadline = time.monotonic() + 240
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL and not (tmp_path / "out").exists()
    resumed = subprocess.run([*command, "--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _digest(tmp_path / "out") == _digest(tmp_path / "straight")
    (cache,) = (tmp_path / "gen").glob("*.jsonl")
    rows = [line for line in cache.read_bytes().splitlines() if line.strip()]
    assert len({json.loads(line)["i"] for line in rows if line.startswith(b"{") and line.endswith(b"}")}) == 12
