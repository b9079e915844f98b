"""What each fusion method costs, at one budget: wall time and peak memory of one run of each, one after
the other on the same machine, beside a HyperNet fusion and a plain LoRA run (replay-tune) of the same
optimiser steps.

It reuses a cross-family work folder (``bench_cross_family.py --mode cpu``: its plan, splits and distill's
answer cache).  Runs, each in its own process, with 0 source labels (the target task's replay only):

  replay-tune      the target LoRA trained further on the replay (the plain LoRA run)
  hypernet         hf-fuse, the paper's method
  distill-lora     hf-fuse --method distill, answers from the cache (generation is timed on its own)
  distill-hypernet the same answers, the HyperNet as the student
  distill-generate the source expert answering the unlabelled prompts, alone (a fresh cache)
  project          hf-fuse --method project (training-free)
  project-hypernet the projection, then the HyperNet trained on top of it

    python -m benchmarks method-cost [--work /tmp/hf-cross-family-cpu] [--steps 60] [--unlabeled-count 216]
                                           [--only hypernet,project-hypernet]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from benchmarks.bench_cross_family import device_name
from benchmarks.cross_family_setup import MODES, TARGET_TASK
from hf_eval.measure import measured as measure_command

HERE = Path(__file__).resolve().parent


def measured(cmd: list) -> dict:
    record = measure_command(cmd)
    if record["rc"] != 0:
        raise SystemExit(f"{cmd[:3]} failed:\n{record['stderr']}")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/hf-cross-family-cpu"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--unlabeled-count", type=int, default=216)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--only", type=lambda v: v.split(","), default=None, help="comma-separated runs (default: all)")
    args = parser.parse_args()
    mode = MODES["cpu"]
    data = args.work / "data"
    unlabeled = data / (f"unlabeled-{args.unlabeled_count}" if args.unlabeled_count != mode.n_unlabeled else "unlabeled")
    if not (args.work / "plan-real.h5").exists() or not (unlabeled / "findvehicle.json").exists():
        raise SystemExit(f"{args.work}: run bench_cross_family.py --mode cpu (with --unlabeled-count "
                         f"{args.unlabeled_count}) first")
    out = args.work / "cost"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    tool = Path(sys.executable).parent
    def budget(steps: int) -> list:
        return ["--max-steps", steps, "--batch-size", mode.budget.batch_size, "--grad-accum", mode.budget.grad_accum,
                "--drop-history", "--lr", args.lr, "--seed", 0]

    def fuse(steps: int) -> list:
        return [tool / "hf-fuse", args.work / "plan-real.h5", "--base-model", "smollm2", *replay, *budget(steps),
                "--no-gradient-checkpointing", "-q", "--force"]

    replay = ["--replay", data / "train" / f"{TARGET_TASK}.json"]
    distill = ["--method", "distill", "--source-model", "0=gemma3", "--unlabeled", f"0={unlabeled / 'findvehicle.json'}",
               "--gen-max-new-tokens", mode.new_tokens, "--gen-batch-size", 16]
    runs = {
        "replay-tune": [tool / "hf-eval", "replay-tune", "--base-model", "smollm2", "--adapter", args.work / "expert-mit-movie",
                        *replay, *budget(args.steps), "-o", out / "replay-tune", "-q", "--force"],
        "hypernet": [*fuse(args.steps), "--embed-dim", "auto", "-o", out / "hypernet"],
        "distill-lora": [*fuse(args.steps), *distill, "--gen-cache", args.work / "gen-cache", "-o", out / "distill-lora"],
        "distill-hypernet": [*fuse(args.steps), *distill, "--student", "hypernet", "--embed-dim", "auto",
                             "--gen-cache", args.work / "gen-cache",
                             "-o", out / "distill-hypernet"],
        "distill-generate": [*fuse(0), *distill, "--gen-cache", out / "fresh-cache", "-o", out / "distill-generate"],
        "project": [*fuse(0), "--method", "project", "--source-model", "0=gemma3", "-o", out / "project"],
        "project-hypernet": [*fuse(args.steps), "--method", "project-hypernet", "--source-model", "0=gemma3",
                             "-o", out / "project-hypernet"],
    }
    unknown = set(args.only or ()) - set(runs)
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(sorted(unknown))} (known: {', '.join(runs)})")
    results = {name: measured(cmd) for name, cmd in runs.items() if args.only is None or name in args.only}
    lines = [f"Cost of one run per method: SmolLM2-135M target, Gemma-3-270M source, {args.steps} optimiser steps of "
             f"{mode.budget.batch_size} x {mode.budget.grad_accum} examples where a method trains, lr {args.lr:g}, "
             f"{args.unlabeled_count} unlabelled prompts for distill; {device_name()}, "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
             f"{'run':<17} {'wall s':>8} {'peak RSS MiB':>13}"]
    for name, r in results.items():
        lines.append(f"{name:<17} {r['seconds']:>8.1f} {r['peak_mib']:>13.0f}")
    if "distill-generate" in results:
        lines.append("distill-generate: the source model loads and answers every prompt, then exports with 0 steps; "
                     "distill-lora and distill-hypernet read those answers from the cache")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
