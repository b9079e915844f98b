"""The GPU check: everything that needs a CUDA GPU, in one call of a few minutes (``benchmarks/gpu_check.sh``).

1. ``pytest -m gpu``: fuse, export, load and evaluate on CUDA in bfloat16 (tiny models);
2. ``bench_fuse.py`` at paper sizes (block 4096, embed 1024, 773 M HyperNet parameters) and at ``auto`` sizes, in
   bfloat16 on the GPU, beside a plain PEFT LoRA step of the same model and batch;
3. ``bench_scale.py`` on one GPU (steps and tokens per second);
4. one ``hf-fuse --method distill`` run at the cross-family benchmark's budget (216 unlabelled prompts answered
   to a 48-token cap in batches of 16, then 60 optimiser steps of 4 x 2 examples), timed end to end.

Where the model packages are not installed (a GPU machine cannot reach the registry), the models are stand-ins
with SmolLM2-135M's and Gemma-3-270M's architectures and shapes and random weights (``_standins.py``): the
times and memory are those of the real shapes; no score is measured here.  A random source expert never ends
an answer (and its stand-in tokenizer cannot spell most of what it picks), so in step 4 every answer runs to the
cap and is dropped: generation is timed at its worst case and the student trains on the replay alone.

The figures go to ``OUT/gpu-<device>-<date>.json`` with the device named.  Without CUDA it stops at once with
exit 2, unless ``--smoke`` (tiny models on the CPU: a check of this script, not a measurement).

    python -m benchmarks gpu-check [--out benchmarks/results] [--smoke]
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import child_env, module_command

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXIT_NO_GPU = 2


def log(message: str) -> None:
    sys.stderr.write(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def run(name: str, argv: list[str], env: dict | None = None) -> dict:
    """One part as a child process: its exit status, wall time and the end of its output."""
    log(f"{name}: {' '.join(map(str, argv))}")
    started = time.perf_counter()
    done = subprocess.run(list(map(str, argv)), cwd=ROOT, capture_output=True, text=True, env=child_env(env))
    seconds = time.perf_counter() - started
    tail = (done.stdout + done.stderr)[-4000:]
    log(f"{name}: exit {done.returncode} in {seconds:.1f} s")
    if done.returncode:
        sys.stderr.write(tail + "\n")
    return {"rc": done.returncode, "seconds": round(seconds, 1), "stdout": done.stdout[-6000:], "stderr": done.stderr[-3000:]}


def distill_run(work: Path, smoke: bool, device: str) -> dict:
    """hf-fuse --method distill at the benchmark's budget, on bench_fuse's target and a Gemma-3-shaped source."""
    from benchmarks._standins import base_model
    from benchmarks.bench_fuse import CORPUS, adapter_shape, prepare
    from hf_analyze.example import write_synthetic_adapter

    paths = prepare(work, "tiny-llama" if smoke else "smollm2")
    source_base, source_label = base_model("tiny-gemma3" if smoke else "gemma3", work, CORPUS)
    source = work / f"distill-source-{'tiny' if smoke else 'gemma3'}"
    if not source.exists():
        write_synthetic_adapter(source, adapter_shape(source_base), rank=8, alpha=16, seed=3)
    plan = work / f"plan-distill-{'tiny' if smoke else 'real'}.h5"
    if not plan.exists():
        subprocess.run([sys.executable, "-m", "hf_analyze", "--target", str(paths["target"]), "--source", str(source), "-o",
                        str(plan), "--block-size", "auto", "-q"], check=True)
    n_prompts, steps = (8, 2) if smoke else (216, 60)
    prompts = work / f"unlabeled-{n_prompts}.json"
    prompts.write_text(json.dumps([{"instruction": f"Please list the vehicle words in the text. Text: {CORPUS[0]} number {i} "
                                                   "Answer:", "input": ""} for i in range(n_prompts)]))
    out = work / "distill-out"
    part = run("distill", [sys.executable, "-m", "hf_fuse", plan, "--base-model", paths["base"], "--replay", paths["replay"],
                           "--method", "distill", "--source-model", f"0={source_base}", "--unlabeled", prompts,
                           "--max-steps", steps, "--batch-size", 4, "--grad-accum", 2, "--lr", "1e-3",
                           "--gen-max-new-tokens", 48, "--gen-batch-size", 16, "--cutoff-len", 256, "--device", device,
                           "--gen-cache", work / "gen-cache", "-o", out, "--force", "-q"])
    part.update(target=paths["label"], source=source_label, prompts=n_prompts, steps=steps)
    if part["rc"] == 0:
        report = json.loads((out / "fusion_report.json").read_text())
        history = report["tasks"][0]["history"]
        part.update(report_time_s=report["time_s"], training_s=round(sum(h["time_s"] for h in history), 2),
                    seconds_per_step=round(sum(h["time_s"] for h in history[1:]) / max(len(history) - 1, 1), 4),
                    generation=report["distill"]["sources"]["0"], peak_gpu_memory_mib=report.get("peak_gpu_memory_mib"),
                    dtype=report["dtype"])
    return part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for gpu-<device>-<date>.json")
    parser.add_argument("--work", type=Path, default=Path("/tmp/hf-gpu-check"))
    parser.add_argument("--smoke", action="store_true", help="tiny models, on the CPU when there is no GPU (script check)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.smoke:
        sys.stderr.write("gpu_check: no CUDA device (torch.cuda.is_available() is False): run it on a GPU machine, "
                         "or with --smoke for the CPU dry run\n")
        raise SystemExit(EXIT_NO_GPU)
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "CPU"
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    figures: dict = {"device": device, "smoke": args.smoke, "date": datetime.date.today().isoformat(),
                     "torch": torch.__version__, "cuda": torch.version.cuda, "parts": {}}
    parts = figures["parts"]
    gpu_tests = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py") if "mark.gpu" in p.read_text())
    parts["pytest_gpu"] = run("pytest -m gpu", [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                                                *gpu_tests])
    target = ["--target", "tiny-llama"] if args.smoke else []
    on = ["--device", "cuda", "--dtype", "bfloat16"] if cuda else ["--device", "cpu"]
    only = ["--only", "plain-ckpt", "fuse-auto"] if args.smoke else []
    parts["bench_fuse"] = run("bench_fuse", [*module_command("bench_fuse"), "--work", args.work, "--steps", 2, *on,
                                             *target, *only, "--json", args.work / "bench_fuse.json"])
    parts["bench_scale"] = run("bench_scale", [*module_command("bench_scale"), "--work", args.work, "--processes", "1",
                                               "--steps", 2 if args.smoke else 4, *target, "--json",
                                               args.work / "bench_scale.json"])
    for name in ("bench_fuse", "bench_scale"):
        result = args.work / f"{name}.json"
        if parts[name]["rc"] == 0 and result.exists():
            parts[name]["figures"] = json.loads(result.read_text())
    parts["distill"] = distill_run(args.work, args.smoke, "cuda" if cuda else "cpu")
    figures["total_s"] = round(time.perf_counter() - started, 1)
    failed = [name for name, part in parts.items() if part["rc"]]
    figures["failed"] = failed
    args.out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    path = args.out / f"gpu-{slug}-{figures['date']}{'-smoke' if args.smoke else ''}.json"
    path.write_text(json.dumps(figures, indent=1) + "\n")
    for name, part in parts.items():
        if name.startswith("bench") and part["rc"] == 0:
            sys.stdout.write(part["stdout"].strip() + "\n")
    d = parts["distill"]
    if d["rc"] == 0:
        sys.stdout.write(f"distill ({d['target']} <- {d['source']}): {d['prompts']} prompts, {d['steps']} steps; "
                         f"{d['report_time_s']} s in all, training {d['training_s']} s ({d['seconds_per_step']} s/step), "
                         f"answers kept {d['generation']['kept']} / {d['generation']['prompts']}, peak GPU "
                         f"{d['peak_gpu_memory_mib']} MiB\n")
    sys.stdout.write(f"gpu_check on {device}: {len(parts) - len(failed)} of {len(parts)} parts passed"
                     f"{' (failed: ' + ', '.join(failed) + ')' if failed else ''}, {figures['total_s']} s; figures in {path}\n")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
