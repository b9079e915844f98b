"""Which of hf-fuse's defaults, ours or the paper code's, does better on the benchmark's *validation* split?

Where the paper is silent the authors' code decides five things differently from ours:
HyperNet init, AdamW weight decay, gradient clipping, warm-up rounding and α reset between sequential
tasks.  This script fuses with our defaults, with ``--preset paper`` (all five), and with each single
paper choice, at the cross-family benchmark's cpu setting (16 source labels, its chosen learning rate,
its budget), seeds 0..2, and scores every adapter on the validation examples only (never the held-out
ones).  α reset acts only between the tasks of a sequential run; the benchmark fuses one task, so it is
not measured here (docs/methods/hypernet.md says which way it was decided and why).

It reuses the experts, plan and splits of ``bench_cross_family.py`` (run that first; same ``--work``):

    python -m benchmarks defaults [--work /tmp/hf-cross-family-cpu] [--publish]

Results: WORK/defaults/defaults.{json,md}; ``--publish`` copies them to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import date
from pathlib import Path

from benchmarks.bench_cross_family import device_name, git_commit
from benchmarks.cross_family_setup import MODES, TARGET_TASK
from hf_common.atomic import write_text_atomic
from hf_common.console import Console
from hf_eval.compare import mean_std
from hf_eval.experiment import Experiment, StepFailed
from hf_eval.study import Study

HERE = Path(__file__).resolve().parent

VARIANTS = {  # name -> hf-fuse flags; "default" is no flag at all
    "default": [],
    "paper preset (all five)": ["--preset", "paper"],
    "init xavier": ["--init", "xavier"],
    "weight decay 0.01": ["--weight-decay", 0.01],
    "no clipping": ["--max-grad-norm", 0],
    "warm-up rounded down": ["--warmup-rounding", "down"],
}
LABELS = 16  # the setting at which the cpu mode tunes its learning rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/hf-cross-family-cpu"),
                        help="a bench_cross_family.py --mode cpu work folder (its experts, plan and splits)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--publish", action="store_true", help="also copy the results to benchmarks/results/")
    args = parser.parse_args()
    results_path = args.work / "results.json"
    if not results_path.exists() or not (args.work / "plan-real.h5").exists():
        raise SystemExit(f"{args.work}: no cross-family results; run benchmarks/bench_cross_family.py --mode cpu first")
    cross = json.loads(results_path.read_text())
    lr = cross.get("chosen_lr", {}).get(f"L{LABELS}", {}).get("hypernet")
    if lr is None:
        raise SystemExit(f"{results_path}: no learning rate chosen for hypernet at {LABELS} labels yet")
    mode = MODES[cross["mode"]]
    data = args.work / "data"
    replay = [data / "train" / f"{TARGET_TASK}.json", *[data / f"train-{LABELS}" / f"{t}.json" for t in mode.sources]]
    validation = [data / "val" / f"{t}.json" for t in (TARGET_TASK, *mode.sources)]
    console = Console()
    # its own step records (WORK/defaults/), so it can run while the cross-family benchmark goes on
    study = Study(Experiment(args.work / "defaults", console), "smollm2", mode.budget,
                  eval_args=["--max-new-tokens", mode.eval_tokens, "--batch-size", 16],
                  fuse_args=["--embed-dim", "auto", "--no-gradient-checkpointing", "-q"])
    scores: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for seed in range(args.seeds):
        adapters = {}
        for i, (name, flags) in enumerate(VARIANTS.items()):
            adapters[name] = study.fuse(f"v{i}-L{LABELS}-lr{lr:g}-s{seed}", args.work / "plan-real.h5", replay, lr=lr,
                                        seed=seed, extra=flags)
        evaluated = study.evaluate_many(f"val-s{seed}", {f"v{i}": a for i, a in enumerate(adapters.values())},
                                        validation)
        for i, name in enumerate(VARIANTS):
            scores[name].append(evaluated[f"v{i}"])
    results = {"date": date.today().isoformat(), "commit": git_commit(), "device": device_name(), "lr": lr,
               "source_labels_per_task": LABELS, "budget": cross["settings"]["budget"], "seeds": args.seeds,
               "n_validation_per_task": mode.n_validation,
               "variants": {name: {"flags": [str(f) for f in VARIANTS[name]], "macro_f1": [s["macro"]["f1"] for s in runs],
                                   "tasks": {t: [s["tasks"][t]["f1"] for s in runs] for t in runs[0]["tasks"]}}
                            for name, runs in scores.items()}}
    write(study.work, results, HERE / "results" if args.publish else None)
    console.success(f"results in {study.work / 'defaults.md'}")


def render(results: dict) -> str:
    tasks = list(next(iter(results["variants"].values()))["tasks"])
    base = mean_std(results["variants"]["default"]["macro_f1"])[0]
    lines = ["# hf-fuse defaults against the paper code's choices (validation split only)", "",
             f"Commit {results['commit']}, {results['date']}, {results['device']}. HyperNet fusion at "
             f"{results['source_labels_per_task']} source labels, lr {results['lr']:g}, budget "
             f"{json.dumps(results['budget'])}, seeds 0..{results['seeds'] - 1}, "
             f"{results['n_validation_per_task']} validation examples per task. F1 %, mean ± std over seeds.", "",
             "| variant | flags | " + " | ".join(tasks) + " | macro | vs default |", "|---|---|" + "---|" * (len(tasks) + 2)]
    for name, v in results["variants"].items():
        cells = [f"{100 * m:.1f} ± {100 * sd:.1f}" for m, sd in (mean_std(v["tasks"][t]) for t in tasks)]
        mean, std = mean_std(v["macro_f1"])
        lines.append(f"| {name} | {' '.join(v['flags']) or '-'} | " + " | ".join(cells) +
                     f" | {100 * mean:.1f} ± {100 * std:.1f} | {100 * (mean - base):+.1f} |")
    return "\n".join(lines) + "\n"


def write(work: Path, results: dict, publish: Path | None) -> None:
    for path, text in ((work / "defaults.json", json.dumps(results, indent=2) + "\n"), (work / "defaults.md", render(results))):
        write_text_atomic(path, text, force=True)
        if publish:
            shutil.copyfile(path, publish / path.name)


if __name__ == "__main__":
    try:
        main()
    except StepFailed as exc:
        Console().abort(str(exc), 1)
