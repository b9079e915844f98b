"""Benchmark: hf-analyze end to end on 7-8B-shaped adapters, against merely reading the same files.

Generates (once, cached) a Llama-3.1-8B-shaped target adapter (32 layers, hidden 4096, KV 1024,
MLP 14336, r 8, all seven projections, fp32 as PEFT saves trained LoRA weights) and five
Qwen2.5-7B-shaped sources (28 layers, hidden 3584, KV 512, MLP 18944), then for 1, 3 and 5
sources times, each in a fresh process:
  - read:    loading every tensor of the same files into memory (safetensors.numpy.load_file)
  - analyze: `hf-analyze --target T --source S... -o plan.h5` (plan writing included)
and prints the median wall time, the ratio analyze/read, and the peak resident memory.

Reference (issue 2): the authors' code needs ~2 s on 2 cores to load, group, block and take
singular values for the target and 5 sources (writing nothing) and ~1 GB for that data.

    python benchmarks/bench_analyze.py [--work DIR] [--repeat 3] [--block-size 4096]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from hf_analyze.example import SHAPES, write_synthetic_adapter  # noqa: E402
from hf_eval.measure import measured  # noqa: E402

READ = """
import sys
from safetensors.numpy import load_file
for folder in sys.argv[1:]:
    tensors = load_file(folder + "/adapter_model.safetensors")
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
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    target = args.work / "llama-3.1-8b"
    sources = [args.work / f"qwen2.5-7b-{i}" for i in range(5)]
    for folder, shape, seed in [(target, "llama-3.1-8b", 0)] + [(s, "qwen2.5-7b", i + 1) for i, s in enumerate(sources)]:
        if not (folder / "adapter_model.safetensors").exists():
            write_synthetic_adapter(folder, SHAPES[shape], rank=8, alpha=16, seed=seed)
    hf_analyze = str(Path(sys.executable).with_name("hf-analyze"))
    rows = []
    for n in (1, 3, 5):
        folders = [target, *sources[:n]]
        read = measure([sys.executable, "-c", READ, *map(str, folders)], args.repeat)
        plan = args.work / f"plan-{n}.h5"
        cmd = [hf_analyze, "--target", str(target), *[x for s in sources[:n] for x in ("--source", str(s))],
               "-o", str(plan), "-q", "--block-size", args.block_size]
        analyze = measure(cmd, args.repeat, remove=plan)
        input_mb = sum((f / "adapter_model.safetensors").stat().st_size for f in folders) / 2**20
        rows.append((n, input_mb, read, analyze, plan.stat().st_size / 2**20))
    header = f"{'sources':>7} {'input MiB':>9} {'read s':>7} {'analyze s':>9} {'ratio':>6} {'read peak MiB':>13} " \
             f"{'analyze peak MiB':>16} {'plan MiB':>8}"
    lines = [f"hf-analyze benchmark (block size {args.block_size}, median of {args.repeat}, fresh process each)", header]
    for n, input_mb, read, analyze, plan_mb in rows:
        lines.append(f"{n:>7} {input_mb:>9.0f} {read['seconds']:>7.2f} {analyze['seconds']:>9.2f} "
                     f"{analyze['seconds'] / read['seconds']:>6.2f} {read['peak_mib']:>13.0f} "
                     f"{analyze['peak_mib']:>16.0f} {plan_mb:>8.0f}")
    lines.append("reference (authors' code, target + 5 sources, no writing): ~2 s, ~1 GB of data; "
                 "goal: within 2x of that time (<= 4 s) and under that memory")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
