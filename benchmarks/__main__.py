"""One entry point for every benchmark: ``python -m benchmarks NAME [OPTIONS]`` from the repository root
(``python -m benchmarks`` lists them; ``python -m benchmarks NAME --help`` says what each takes)."""

from __future__ import annotations

import runpy
import sys

BENCHMARKS = {  # name -> (module, what it measures)
    "analyze": ("bench_analyze", "hf-analyze's time, memory and plan size on 8B-shaped adapters, beside a naive stand-in"),
    "fuse": ("bench_fuse", "a fusion step's time and memory on SmolLM2-135M, beside a plain PEFT LoRA step"),
    "cross-family": ("bench_cross_family", "does a fused adapter carry what the source expert knows? (controls, seeds)"),
    "runs": ("runner", "many cross-family invocations from a runs file (benchmarks/runs/), resumable"),
    "report": ("report_cross_family", "re-render or merge cross-family results into benchmarks/results/"),
    "defaults": ("bench_defaults", "our defaults against the paper code's choices, on the validation split"),
    "answers": ("bench_answers", "what distill's answer caps and the data-free filter keep"),
    "method-cost": ("bench_method_cost", "wall time and peak memory of every method at one budget"),
    "peers": ("bench_peers", "our LoRA training loop against TRL's SFTTrainer on the same work"),
    "scale": ("bench_scale", "optimiser steps and tokens per second for 1..N processes"),
    "gpu-check": ("gpu_check", "everything that needs a GPU, in one call"),
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help") or sys.argv[1] not in BENCHMARKS:
        width = max(map(len, BENCHMARKS))
        lines = [f"  {name:<{width}}  {what}" for name, (_, what) in BENCHMARKS.items()]
        unknown = len(sys.argv) > 1 and sys.argv[1] not in ("-h", "--help")
        sys.stderr.write(("error: unknown benchmark " + repr(sys.argv[1]) + "\n" if unknown else "")
                         + "usage: python -m benchmarks NAME [OPTIONS]\n\n" + "\n".join(lines) + "\n")
        raise SystemExit(2 if unknown or len(sys.argv) < 2 else 0)
    name = sys.argv.pop(1)
    sys.argv[0] = f"python -m benchmarks {name}"
    runpy.run_module(f"benchmarks.{BENCHMARKS[name][0]}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
