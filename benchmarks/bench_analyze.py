"""Benchmark: hf-analyze end to end on 7-8B-shaped adapters, against merely reading the same files.

Generates (once, cached) a Llama-3.1-8B-shaped target adapter (32 layers, hidden 4096, KV 1024,
MLP 14336, r 8, all seven projections; fp32 as PEFT saves trained LoRA weights, or ``--dtype bf16``) and five
Qwen2.5-7B-shaped sources (28 layers, hidden 3584, KV 512, MLP 18944), then for 1, 3 and 5
sources times, each in a fresh process:
  - read:     loading every tensor of the same files into memory (safetensors.numpy.load_file)
  - stand-in: a naive analysis that loads, tiles every module's rows [A^T; B] into blocks and takes each
              block's singular values, writing nothing (what the authors' code does before it trains)
  - analyze:  `hf-analyze --target T --source S... -o plan.h5` (plan writing included)
and prints the median wall time, the ratios analyze/read and analyze/stand-in, the peak resident memory and the
plan's size against the input's.

Reference: the authors' code needs ~2 s on 2 cores to load, group, block and take
singular values for the target and 5 sources (writing nothing) and ~1 GB for that data.

    python -m benchmarks analyze [--work DIR] [--repeat 3] [--block-size 4096]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from hf_analyze.example import SHAPES, write_synthetic_adapter
from hf_eval.measure import measured

HERE = Path(__file__).resolve().parent

# both read with numpy (no torch, as hf-analyze), through the toolkit's reader: safetensors' own numpy loader has
# no bfloat16
READ = """
import sys
from hf_common.safetensors_io import SafetensorsFile
for folder in sys.argv[1:]:
    tensors = SafetensorsFile(folder + "/adapter_model.safetensors")
    arrays = [tensors.raw(key).copy() for key in tensors.keys()]
"""
STANDIN = """
import sys
import numpy as np
from hf_common.safetensors_io import SafetensorsFile
block = int(sys.argv[1])
for folder in sys.argv[2:]:
    tensors = SafetensorsFile(folder + "/adapter_model.safetensors")
    for key_a in (k for k in sorted(tensors.keys()) if "lora_A" in k):
        rows = np.concatenate([tensors.float32(key_a).T, tensors.float32(key_a.replace("lora_A", "lora_B"))])
        n = -(-len(rows) // block)
        tokens = np.zeros((n * block, rows.shape[1]), np.float32)
        tokens[:len(rows)] = rows
        np.linalg.svd(tokens.reshape(n, block, -1), compute_uv=False)
"""


def measure(cmd: list[str], repeat: int, remove: Path | None = None) -> dict:
    runs = []
    for _ in range(repeat):
        if remove is not None:  # a new plan each time: unlinking an old one on ext4+discard costs ~0.5 s
            remove.unlink(missing_ok=True)
        result = measured(cmd)
        if result["rc"] not in (0,):
            raise SystemExit(f"command failed ({result['rc']}): {' '.join(cmd)}\n{result['stderr']}")
        runs.append(result)
    return {"seconds": statistics.median(r["seconds"] for r in runs), "peak_mib": max(r["peak_mib"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/hf-bench-analyze"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--block-size", default="4096")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="the adapters' stored dtype")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.dtype == "fp32" else "-bf16"
    target = args.work / f"llama-3.1-8b{suffix}"
    sources = [args.work / f"qwen2.5-7b-{i}{suffix}" for i in range(5)]
    for folder, shape, seed in [(target, "llama-3.1-8b", 0)] + [(s, "qwen2.5-7b", i + 1) for i, s in enumerate(sources)]:
        if not (folder / "adapter_model.safetensors").exists():
            write_synthetic_adapter(folder, SHAPES[shape], rank=8, alpha=16, seed=seed,
                                    dtype={"fp32": "F32", "bf16": "BF16"}[args.dtype])
    hf_analyze = str(Path(sys.executable).with_name("hf-analyze"))
    rows = []
    for n in (1, 3, 5):
        folders = [target, *sources[:n]]
        read = measure([sys.executable, "-c", READ, *map(str, folders)], args.repeat)
        block = 4096 if args.block_size == "auto" else int(args.block_size)
        standin = measure([sys.executable, "-c", STANDIN, str(block), *map(str, folders)], args.repeat)
        plan = args.work / f"plan-{n}{suffix}.h5"
        cmd = [hf_analyze, "--target", str(target), *[x for s in sources[:n] for x in ("--source", str(s))],
               "-o", str(plan), "-q", "--block-size", args.block_size]
        analyze = measure(cmd, args.repeat, remove=plan)
        input_mb = sum((f / "adapter_model.safetensors").stat().st_size for f in folders) / 2**20
        rows.append((n, input_mb, read, standin, analyze, plan.stat().st_size / 2**20))
    header = f"{'sources':>7} {'input MiB':>9} {'read s':>7} {'stand-in s':>10} {'analyze s':>9} {'/read':>6} " \
             f"{'/stand-in':>9} {'read peak MiB':>13} {'analyze peak MiB':>16} {'plan MiB':>8} {'plan/input':>10}"
    lines = [f"hf-analyze benchmark ({args.dtype} adapters, block size {args.block_size}, median of {args.repeat}, "
             "fresh process each)", header]
    for n, input_mb, read, standin, analyze, plan_mb in rows:
        lines.append(f"{n:>7} {input_mb:>9.0f} {read['seconds']:>7.2f} {standin['seconds']:>10.2f} "
                     f"{analyze['seconds']:>9.2f} {analyze['seconds'] / read['seconds']:>6.2f} "
                     f"{analyze['seconds'] / standin['seconds']:>9.2f} {read['peak_mib']:>13.0f} "
                     f"{analyze['peak_mib']:>16.0f} {plan_mb:>8.0f} {plan_mb / input_mb:>10.2f}")
    lines.append("reference (authors' code, target + 5 sources, no writing): ~2 s, ~1 GB of data; "
                 "goal: within 2x of that time (<= 4 s) and under that memory")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
