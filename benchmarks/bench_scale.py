"""Scaling benchmark: optimiser steps and tokens per second of hf-fuse with 1 and N processes at the same
effective batch (data parallel through torchrun, the launcher ``accelerate launch`` uses; gloo on CPU,
NCCL on GPUs).

Setting: bench_fuse.py's (the real SmolLM2-135M, a SmolLM2-shaped r 8 target adapter, one
Gemma-3-shaped source, ``--block-size auto`` / ``--embed-dim auto``, 256-token examples, no gradient
checkpointing), micro-batch 1, 8 micro-batches per optimiser step in all: 1 process x ``--grad-accum 8``
against N processes x ``--grad-accum 8/N``.  On CPU the cores are shared out (``OMP_NUM_THREADS`` =
cores / processes), so N processes use the same hardware as one; on GPUs each process takes one GPU.
The first step of every run is left out of the timing (one-off allocations).

    python -m benchmarks scale [--processes 1,2] [--steps 4] [--work DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.bench_fuse import SEQ, prepare

HERE = Path(__file__).resolve().parent

MICRO_PER_STEP = 8


def run(work: Path, paths: dict, n: int, steps: int, gpus: int) -> dict:
    out = work / f"scale-{n}"
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // n)) if not gpus else os.environ.get("OMP_NUM_THREADS", "4")}
    args = [str(paths["plan_auto"]), "--base-model", str(paths["base"]), "--replay", str(paths["replay"]),
            "--max-steps", str(steps), "--batch-size", "1", "--grad-accum", str(MICRO_PER_STEP // n), "--cutoff-len", str(SEQ),
            "--embed-dim", "auto", "--no-gradient-checkpointing", "--checkpoint-every", "100000", "-o", str(out), "--force",
            "-q"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)] if n > 1 else \
        [sys.executable]
    done = subprocess.run([*launcher, "-m", "hf_fuse", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{n} processes failed:\n{done.stderr[-3000:]}")
    report = json.loads((out / "fusion_report.json").read_text())
    timed = report["tasks"][0]["history"][1:]
    seconds = sum(h["time_s"] for h in timed) / len(timed)
    tokens = MICRO_PER_STEP * SEQ  # every example is cut to exactly SEQ tokens
    return {"processes": report["processes"], "threads_per_process": env["OMP_NUM_THREADS"], "seconds_per_step": seconds,
            "steps_per_s": 1 / seconds, "tokens_per_s": tokens / seconds, "peak_rss_mib_main": report["peak_memory_mib"]}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/hf-bench-fuse"))
    parser.add_argument("--processes", type=lambda v: [int(x) for x in v.split(",")], default=None,
                        help="process counts to time (default: 1,2 on CPU; 1 and every power of 2 up to the GPU count)")
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps per run (the first is not timed)")
    parser.add_argument("--target", choices=["smollm2", "tiny-llama"], default="smollm2",
                        help="target base model (tiny-llama: a smoke check of this script, not a measurement)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    gpus = torch.cuda.device_count()
    counts = args.processes or ([1, 2] if not gpus else sorted({1, *[2 ** k for k in range(1, 4) if 2 ** k <= gpus]}))
    if any(MICRO_PER_STEP % n for n in counts):
        raise SystemExit(f"--processes must divide {MICRO_PER_STEP} (the micro-batches of a step)")
    paths = prepare(args.work, args.target)
    device = torch.cuda.get_device_name(0) + f" x {gpus}" if gpus else f"CPU, {os.cpu_count()} cores"
    results = [run(args.work, paths, n, args.steps, gpus) for n in counts]
    base = results[0]["steps_per_s"]
    lines = [f"hf-fuse data-parallel scaling: {paths['label']}, one Gemma-3-shaped source, {MICRO_PER_STEP} micro-batches of 1 x "
             f"{SEQ} tokens per optimiser step, {args.steps - 1} timed steps; {device}",
             f"{'processes':>9} {'threads':>7} {'s/step':>8} {'steps/s':>8} {'tokens/s':>9} {'speed-up':>8} {'efficiency':>10}"]
    for r in results:
        speedup = r["steps_per_s"] / base
        lines.append(f"{r['processes']:>9} {r['threads_per_process']:>7} {r['seconds_per_step']:>8.2f} {r['steps_per_s']:>8.3f} "
                     f"{r['tokens_per_s']:>9.0f} {speedup:>8.2f} {speedup / (r['processes'] / counts[0] if gpus else 1):>10.2f}")
    if not gpus:
        lines.append("CPU: N processes share the same cores (threads = cores / N), so efficiency is the speed-up itself: "
                     "1.0 means nothing lost to communication (N times the speed is not possible on the same cores)")
    else:
        lines.append("GPU: efficiency = speed-up / (processes / first count): 1.0 is perfect scaling")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "bench_scale", "model": paths["label"], "device": device,
                                         "micro_batches_per_step": MICRO_PER_STEP, "tokens_per_example": SEQ,
                                         "timed_steps": args.steps - 1, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
