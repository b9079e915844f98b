"""Cross-family benchmark on real models and the paper's replay data (issue 4).

Target: SmolLM2-135M-Instruct (Llama family) with an MIT-Movie expert.  Sources: Gemma-3-270M experts
on CoNLL04 (RE) and FindVehicle (ET), and a SmolLM2 expert on TweetNER7 (so the homogeneous merges
have something to merge).  Every task file is split deterministically: the first 240 examples may
be used for expert training and replay, the last 60 are held out for evaluation only.  Prompts are
zero-shot (the files' three-turn ``history`` is dropped) to keep sequences short on CPU.

Runs, all evaluated on the held-out examples of every task:
  target            the target adapter alone
  replay-tune       the target adapter trained further on the replay mix, same steps and seed as fusion
  merge-linear / merge-ties / merge-dare_ties   PEFT add_weighted_adapter of target + SmolLM2 expert
  hf-1src           HeteroFusion with the Gemma CoNLL04 source
  hf-all            HeteroFusion with all three sources
  hf-all-nodenoise  the same with --ablate denoise

    python benchmarks/bench_cross_family.py --mode quick   # about 12 minutes on 2 cores (GGUF cache warm)
    python benchmarks/bench_cross_family.py --mode full    # about 3 hours; run in the background, resumable

Every step is skipped when its output exists, so an interrupted run continues where it stopped.
Results: WORK/results.md and WORK/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from hf_common.console import Console  # noqa: E402
from hf_eval.experiment import Experiment, StepFailed  # noqa: E402

TASKS = {  # name -> (file, base model of its expert)
    "mit-movie": ("mit-movie_sample300.json", "smollm2"),
    "conll04": ("RE_conll04_sample300.json", "gemma3"),
    "findvehicle": ("ET_FindVehicle_sample300.json", "gemma3"),
    "tweetner7": ("TweetNER7_sample_15000_sample300.json", "smollm2"),
}
MODES = {  # train examples per task, held-out examples per task, expert epochs, fusion epochs, max new tokens
    "quick": dict(train=16, heldout=6, expert_epochs=1, fuse_epochs=1, new_tokens=40, expert_lr=3e-4),
    # full: every allowed example; fusion makes one pass over the 960-example replay mix (120 optimiser steps);
    # the paper's three passes would take about eight hours on 2 CPU cores.
    "full": dict(train=240, heldout=60, expert_epochs=3, fuse_epochs=1, new_tokens=96, expert_lr=2e-4),
}


def split(data_dir: Path, work: Path, mode: dict) -> dict[str, dict[str, Path]]:
    """First 240 for training/replay, last 60 held out; zero-shot records (no history)."""
    out = work / "data"
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for task, (filename, _) in TASKS.items():
        records = json.loads((data_dir / filename).read_text())
        if len(records) != 300:
            raise SystemExit(f"{data_dir / filename}: expected 300 records, found {len(records)}")
        zero_shot = [{k: v for k, v in r.items() if k != "history"} for r in records]
        train, heldout = zero_shot[:240][: mode["train"]], zero_shot[240:][: mode["heldout"]]
        paths[task] = {"train": out / f"{task}-train.json", "heldout": out / f"{task}-heldout.json"}
        paths[task]["train"].write_text(json.dumps(train))
        paths[task]["heldout"].write_text(json.dumps(heldout))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared/data/uie",
                        help="the paper's replay files (read in place, never copied into the repository)")
    parser.add_argument("--work", type=Path, default=None, help="default: /tmp/hf-cross-family-MODE")
    args = parser.parse_args()
    mode = MODES[args.mode]
    work = args.work or Path(f"/tmp/hf-cross-family-{args.mode}")
    console = Console()
    exp = Experiment(work, console)
    data = split(args.data_dir, work, mode)
    hf_eval, hf_analyze, hf_fuse = exp.tool("hf-eval"), exp.tool("hf-analyze"), exp.tool("hf-fuse")

    experts = {}
    for task, (_, base) in TASKS.items():
        experts[task] = work / f"expert-{task}"
        exp.run(f"expert-{task}", [hf_eval, "train-expert", "--base-model", base, "--data", data[task]["train"],
                                   "-o", experts[task], "--epochs", mode["expert_epochs"], "--batch-size", 4,
                                   "--lr", mode["expert_lr"], "--seed", 0, "--force"], experts[task])
    replay = [x for task in TASKS for x in ("--replay", data[task]["train"])]
    plans = {"1src": [experts["conll04"]], "all": [experts["conll04"], experts["findvehicle"], experts["tweetner7"]]}
    for name, sources in plans.items():
        exp.run(f"plan-{name}", [hf_analyze, "--target", experts["mit-movie"], *[x for s in sources for x in ("--source", s)],
                                 "--block-size", "auto", "-o", work / f"plan-{name}.h5", "--json",
                                 work / f"plan-{name}.json", "--force"], work / f"plan-{name}.h5")
    # No gradient checkpointing: replay-tune does not use it either, so wall times compare like with like.
    fuse_common = ["--base-model", "smollm2", *replay, "--epochs", mode["fuse_epochs"], "--embed-dim", "auto",
                   "--no-gradient-checkpointing", "--seed", 0, "--force"]
    heldout = [x for t in TASKS for x in ("--data", data[t]["heldout"])]
    results: dict[str, dict] = {}

    def evaluate(name: str, adapter: Path) -> None:
        """Evaluate one run at once and rewrite the table, so an interrupted run still reports what it finished."""
        out = work / f"eval-{name}"
        exp.run(f"eval-{name}", [hf_eval, "evaluate", "--base-model", "smollm2", "--adapter", f"{name}={adapter}",
                                 *heldout, "--max-new-tokens", mode["new_tokens"], "--batch-size", 8, "-o", out,
                                 "--force"], out)
        results[name] = json.loads((out / "results.json").read_text())["adapters"][name]
        write_results(work, args.mode, mode, results, exp.records)

    # Order: the runs that answer the main question (fusion vs. replay-tune) come first, so a long run that
    # is stopped early has already measured them.
    evaluate("target", experts["mit-movie"])

    def fuse(name: str, plan: str, *extra: str) -> None:
        out = work / name
        exp.run(name, [hf_fuse, work / f"plan-{plan}.h5", *fuse_common, *extra, "-o", out, "--json",
                       work / f"{name}.json"], out)
        evaluate(name, out)

    fuse("hf-all", "all")
    steps = json.loads((work / "hf-all.json").read_text())["tasks"][0]["steps"]  # replay-tune gets the same budget
    out = work / "replay-tune"
    exp.run("replay-tune", [hf_eval, "replay-tune", "--base-model", "smollm2", "--adapter", experts["mit-movie"],
                            *replay, "--max-steps", steps, "--batch-size", 1, "--grad-accum", 8, "--lr", 5e-5,
                            "--seed", 0, "-o", out, "--force"], out)
    evaluate("replay-tune", out)
    fuse("hf-1src", "1src")
    for method in ("linear", "ties", "dare_ties"):
        out = work / f"merge-{method}"
        exp.run(f"merge-{method}", [hf_eval, "merge", "--base-model", "smollm2", "--adapter", experts["mit-movie"],
                                    "--adapter", experts["tweetner7"], "--method", method, "-o", out, "--force"], out)
        evaluate(f"merge-{method}", out)
    fuse("hf-all-nodenoise", "all", "--ablate", "denoise")
    sys.stdout.write((work / "results.md").read_text())


def write_results(work: Path, mode_name: str, mode: dict, results: dict, records: dict) -> None:
    tasks = [f"{t}-heldout" for t in TASKS]
    header = "| run | " + " | ".join(f"{t.removesuffix('-heldout')} P / F1" for t in tasks) + \
             " | macro P / F1 | train s | train peak MiB | eval s |"
    lines = [f"# Cross-family benchmark ({mode_name} mode)", "",
             f"Settings: {json.dumps(mode)}; zero-shot prompts (history dropped); SmolLM2-135M target (MIT-Movie), "
             "Gemma-3-270M sources (CoNLL04, FindVehicle), SmolLM2 TweetNER7 expert; hf-fuse with --block-size auto "
             "and --embed-dim auto, no gradient checkpointing (as replay-tune), paper defaults otherwise; "
             "replay-tune: same replay mix, optimiser steps, batch 1 x 8 accumulation, lr 5e-5 and seed; CPU, 2 cores.", "",
             header, "|" + "---|" * (len(tasks) + 5)]
    for name, entry in results.items():
        cells = [f"{100 * entry['tasks'][t]['precision']:.1f} / {100 * entry['tasks'][t]['f1']:.1f}" for t in tasks]
        train, evaluation = records.get(name) or {}, records[f"eval-{name}"]
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {100 * entry['macro']['precision']:.1f} / {100 * entry['macro']['f1']:.1f} | "
                     f"{train.get('seconds', 0):.0f} | {train.get('peak_mib', 0):.0f} | {evaluation['seconds']:.0f} |")
    (work / "results.md").write_text("\n".join(lines) + "\n")
    (work / "results.json").write_text(json.dumps({"mode": mode_name, "settings": mode, "results": results,
                                                   "steps": records}, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except StepFailed as exc:
        Console().abort(str(exc), 1)
