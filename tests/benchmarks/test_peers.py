"""The peer benchmark (``benchmarks/bench_peers.py``): without TRL it says so and runs nothing; in its smoke mode it
trains the same examples with our loop and with TRL's SFTTrainer, scores both and writes the figures."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_without_trl_it_says_so_and_runs_nothing(tmp_path, monkeypatch, capsys):
    from benchmarks import bench_peers as module

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    monkeypatch.setattr(sys, "argv", ["bench_peers.py", "--work", str(tmp_path / "work"), "--smoke"])
    module.main()
    assert "TRL is not installed" in capsys.readouterr().out and not (tmp_path / "work").exists()


@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="TRL is an optional extra (pip install '.[peers]')")
def test_smoke_mode_trains_both_and_writes_the_comparison(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": f"{ROOT}:{ROOT / 'tests/support'}"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_peers", "--smoke", "--steps", "3", "--seeds", "0,1",
                           "--examples", "16", "--heldout", "4", "--work", str(tmp_path / "work"), "--json",
                           str(tmp_path / "peers.json")], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((tmp_path / "peers.json").read_text())["summary"]
    for who in ("ours", "trl"):
        assert figures[who]["seconds_per_step"] > 0 and figures[who]["peak_rss_mib"] > 0 and len(figures[who]["f1"]) == 2
        assert all(0 <= f <= 1 for f in figures[who]["f1"])
    assert "ours / TRL: time" in done.stdout
