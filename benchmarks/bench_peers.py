"""Peer benchmark: our LoRA training loop (``hf_runtime.trainer``, as ``hf-eval train-expert`` and distill's LoRA
student run it) against TRL's ``SFTTrainer`` with a PEFT LoRA config, on the same work.

Same examples (the first ``--examples`` records of a task's training pool, tokenised once by our formatter and given
to TRL as ``input_ids`` + ``labels``, so both train on identical tokens with the loss on the answers only),
same LoRA (r 8, alpha 16, dropout 0.05, the seven projections), AdamW (fused), cosine schedule with 5 % warm-up,
batch 4 x 2 accumulation, the same steps and seeds, fp32 on the CPU (TRL's SFTConfig defaults to bf16 autocast, even on
the CPU: it is turned off), no gradient checkpointing.  Each run is its
own process (peak RSS per run); then both adapters of each seed are scored on held-out examples of the task.

TRL is an optional extra (``pip install '.[peers]'``): without it the benchmark says so and exits 0 having run
nothing.  ``--smoke`` runs the whole script on a tiny model in seconds (a check of the script, not a result).

    python -m benchmarks peers [--steps 20] [--seeds 0,1] [--examples 64] [--heldout 24] [--json FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import child_env, module_command

HERE = Path(__file__).resolve().parent

TASK_FILE = HERE.parent.parent / "shared/data/uie/ET_FindVehicle_sample300.json"
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def child_ours(args) -> dict:
    """hf-eval train-expert's path: a new LoRA, trained through the one loop."""
    import torch

    from hf_eval.baselines import new_lora
    from hf_runtime.data import ReplayConfig, load_replay
    from hf_runtime.lora import LoraObjective
    from hf_runtime.model import load_model_and_tokenizer, resolve_base_model
    from hf_runtime.trainer import Checkpointer, TrainSettings, train

    model, tokenizer = load_model_and_tokenizer(resolve_base_model(args.base_model), torch.device("cpu"), torch.float32)
    examples = load_replay([args.train], tokenizer, ReplayConfig(drop_history=True)).examples
    torch.manual_seed(args.seed)
    peft_model = new_lora(model, LORA["r"], LORA["lora_alpha"], LORA["target_modules"], LORA["lora_dropout"])
    settings = TrainSettings(max_steps=args.steps, batch_size=4, grad_accum=2, lr=args.lr, seed=args.seed,
                             gradient_checkpointing=False, checkpoint_every=10**9, loss_average=args.loss_average,
                             group_by_length=args.group_by_length)
    objective = LoraObjective(peft_model, seed=args.seed, gradient_checkpointing=False, pad_id=tokenizer.pad_token_id,
                              device=torch.device("cpu"), loss_average=settings.loss_average)
    started = time.perf_counter()
    history = train(objective, examples, settings, torch.device("cpu"), Checkpointer(args.out.with_suffix(".ckpt"), {})).history
    seconds = time.perf_counter() - started
    peft_model.save_pretrained(args.out, save_embedding_layers=False)
    return {"step_seconds": [h["time_s"] for h in history], "seconds": seconds, "loss": [h["loss"] for h in history],
            "tokens_per_step": 8 * statistics.mean(len(e.input_ids) for e in examples)}  # padding excluded


def child_trl(args) -> dict:
    """TRL's SFTTrainer on the same token ids and answer masks."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from hf_runtime.data import ReplayConfig, load_replay
    from hf_runtime.model import load_model_and_tokenizer, resolve_base_model

    model, tokenizer = load_model_and_tokenizer(resolve_base_model(args.base_model), torch.device("cpu"), torch.float32)
    examples = load_replay([args.train], tokenizer, ReplayConfig(drop_history=True)).examples
    # TRL's collator takes a pre-tokenised example's "labels" when there are some (else every token is a label, the
    # prompt's too: TRL 1.16 does not read a "completion_mask" column of pre-tokenised data), so both train on the
    # answer tokens only
    data = Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    steps: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.started = time.perf_counter()

        def on_step_end(self, *_, **__):
            steps.append(time.perf_counter() - self.started)

    config = SFTConfig(output_dir=str(args.out) + ".trl", max_steps=args.steps, per_device_train_batch_size=4,
                       gradient_accumulation_steps=2, learning_rate=args.lr, lr_scheduler_type="cosine",
                       warmup_steps=math.ceil(0.05 * args.steps),  # our loop's warm-up, in whole steps
                       weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch_fused", seed=args.seed, logging_steps=1,
                       bf16=False, fp16=False,  # SFTConfig turns bf16 autocast on by default, also on the CPU: ours is fp32
                       save_strategy="no", report_to=[], use_cpu=True, gradient_checkpointing=False, packing=False,
                       completion_only_loss=True, max_length=None, dataloader_num_workers=0, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                         peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA), callbacks=[StepTimer()])
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.model.save_pretrained(args.out, save_embedding_layers=False)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"step_seconds": steps, "seconds": seconds, "loss": losses}


def child(args) -> None:
    import resource

    result = (child_ours if args.child == "ours" else child_trl)(args)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


def prepare(work: Path, n_examples: int, n_heldout: int, smoke: bool) -> tuple[Path, Path, Path, str]:
    """Training and held-out files, and the base model (SmolLM2, or a tiny stand-in with --smoke)."""
    work.mkdir(parents=True, exist_ok=True)
    if smoke:
        try:  # the test suite's tiny models (tests/support on PYTHONPATH, as the test of this script sets it)
            from tiny_models import make_fusion_setting, replay_records
        except ImportError:
            raise SystemExit("--smoke runs on the test suite's tiny models: PYTHONPATH=tests/support") from None

        setting = make_fusion_setting(work / "tiny")
        records, base, label = replay_records(n_examples + n_heldout, seed=3), setting["base"], "tiny Llama (smoke)"
    else:
        from benchmarks._standins import base_model

        records = json.loads(TASK_FILE.read_text())
        base, label = base_model("smollm2", work, ["the quick brown fox"])
    records = [{k: v for k, v in r.items() if k != "history"} for r in records]
    train, heldout = work / "train.json", work / "heldout.json"
    train.write_text(json.dumps(records[:n_examples]))
    heldout.write_text(json.dumps(records[-n_heldout:]))  # the file's last records: never in the training pool
    return train, heldout, base, label


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/hf-bench-peers"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1])
    parser.add_argument("--examples", type=int, default=64, help="training examples (the task's first records)")
    parser.add_argument("--heldout", type=int, default=24, help="held-out examples scored (the task's last records)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--smoke", action="store_true", help="a tiny model: checks the script in seconds")
    parser.add_argument("--loss-average", choices=["micro-batch", "token"], default="micro-batch",
                        help="how our loop averages a step's loss (TRL: every answer token alike)")
    parser.add_argument("--group-by-length", action="store_true",
                        help="our loop with length-grouped micro-batches (TRL keeps its default, group_by_length off)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--base-model", help=argparse.SUPPRESS)
    parser.add_argument("--train", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


def train_both(args: argparse.Namespace, base: str, train: Path) -> dict[str, dict[int, dict]]:
    """Every seed of both trainers, each in its own process: its timings, memory and losses."""
    runs: dict[str, dict[int, dict]] = {"ours": {}, "trl": {}}
    for seed in args.seeds:
        for who in runs:
            out = args.work / f"{who}-s{seed}"
            done = subprocess.run([*module_command("bench_peers"), "--child", who, "--base-model", str(base), "--train",
                                   str(train), "--out", str(out), "--seed", str(seed), "--steps", str(args.steps), "--lr",
                                   str(args.lr), "--loss-average", args.loss_average,
                                   *(["--group-by-length"] if args.group_by_length else [])],
                                  capture_output=True, text=True, env=child_env())
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{who} seed {seed} failed:\n{done.stderr[-3000:]}")
            runs[who][seed] = json.loads(line[7:])
            sys.stderr.write(f"{who} seed {seed}: {runs[who][seed]['seconds']:.1f} s\n")
    return runs


def score(args: argparse.Namespace, runs: dict, base: str, heldout: Path) -> dict[str, float]:
    """Held-out macro F1 of every trained adapter, by ``hf-eval evaluate``."""
    adapters = [x for who in runs for seed in args.seeds for x in ("--adapter", f"{who}-s{seed}={args.work / f'{who}-s{seed}'}")]
    scored = subprocess.run([sys.executable, "-m", "hf_eval", "evaluate", "--base-model", str(base), *adapters, "--data",
                             str(heldout), "--max-new-tokens", "48", "--batch-size", "8", "-o", str(args.work / "eval"),
                             "--force", "-q", "--json", "-"], capture_output=True, text=True)
    if scored.returncode:
        raise SystemExit(f"evaluation failed:\n{scored.stderr[-3000:]}")
    return {name: entry["macro"]["f1"] for name, entry in json.loads(scored.stdout)["adapters"].items()}


def summarise(runs: dict, f1: dict[str, float]) -> tuple[dict, float]:
    """Per trainer: seconds per step (median over steps after the first, mean over seeds), tokens per second, peak
    memory and F1 over seeds; and the mean tokens per step."""
    summary = {}
    for who, by_seed in runs.items():
        per_step = [statistics.median(r["step_seconds"][1:] or r["step_seconds"]) for r in by_seed.values()]
        scores = [f1[f"{who}-s{seed}"] for seed in by_seed]
        summary[who] = {"seconds_per_step": statistics.mean(per_step), "peak_rss_mib": max(r["peak_rss_mib"] for r in
                                                                                          by_seed.values()),
                        "f1_mean": statistics.mean(scores), "f1_std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                        "f1": scores, "final_loss": [r["loss"][-1] for r in by_seed.values()]}
    n_tokens = statistics.mean(r["tokens_per_step"] for r in runs["ours"].values())
    for entry in summary.values():
        entry["tokens_per_s"] = n_tokens / entry["seconds_per_step"]
    return summary, n_tokens


def report(args: argparse.Namespace, summary: dict, n_tokens: float, label: str) -> None:
    """The comparison printed, and written with --json."""
    ours, trl = summary["ours"], summary["trl"]
    grouped = ", length-grouped batches" if args.group_by_length else ""
    lines = [f"LoRA training, ours (loss average: {args.loss_average}{grouped}) vs TRL SFTTrainer: {label}, CPU fp32, "
             f"{args.examples} "
             f"examples, {args.steps} steps of 4 x 2, lr {args.lr:g}, seeds {','.join(map(str, args.seeds))}; F1 on "
             f"{args.heldout} held-out examples",
             f"{'trainer':<8} {'s/step':>7} {'tokens/s':>9} {'peak RSS MiB':>12} {'F1 mean ± std':>15}",
             *[f"{who:<8} {e['seconds_per_step']:>7.2f} {e['tokens_per_s']:>9.0f} {e['peak_rss_mib']:>12.0f} "
               f"{100 * e['f1_mean']:>8.1f} ± {100 * e['f1_std']:.1f}" for who, e in summary.items()],
             f"ours / TRL: time {ours['seconds_per_step'] / trl['seconds_per_step']:.2f}x, memory "
             f"{ours['peak_rss_mib'] / trl['peak_rss_mib']:.2f}x, F1 {100 * (ours['f1_mean'] - trl['f1_mean']):+.1f} points"]
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "bench_peers", "model": label, "steps": args.steps, "seeds": args.seeds,
                                         "examples": args.examples, "heldout": args.heldout, "lr": args.lr,
                                         "loss_average": args.loss_average, "group_by_length": args.group_by_length,
                                         "trl_bf16_autocast": False,
                                         "tokens_per_step_mean": n_tokens, "summary": summary}, indent=1) + "\n")


def main() -> None:
    args = parse_args()
    if args.child:
        return child(args)
    if importlib.util.find_spec("trl") is None or importlib.util.find_spec("datasets") is None:
        sys.stdout.write("bench_peers: TRL is not installed (pip install '.[peers]'); nothing was run\n")
        return
    train, heldout, base, label = prepare(args.work, args.examples, args.heldout, args.smoke)
    runs = train_both(args, base, train)
    summary, n_tokens = summarise(runs, score(args, runs, base, heldout))
    report(args, summary, n_tokens, label)


if __name__ == "__main__":
    main()
