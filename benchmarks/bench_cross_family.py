"""Cross-family benchmark: does a fused adapter carry what the source expert knows?

Target: SmolLM2-135M-Instruct (Llama family) with an MIT-Movie expert.  Sources: Gemma-3-270M experts
(FindVehicle in ``cpu`` mode; CoNLL04 and FindVehicle, plus a SmolLM2 TweetNER7 expert, in ``full`` mode).
Every task file of the paper's replay data (300 examples) is split once, deterministically:

    examples   0..215   expert training and the replay pool
    examples 216..239   validation: learning rates are chosen here (never replay, never held out)
    examples 240..299   held out: only the final scores

For each number of labelled source-task examples in the replay (0, 16 and all 216; ``cpu`` mode runs 0 and
16 unless ``--labels`` says otherwise; the target task always brings its own 216):
  1. fusion (``hf-fuse``, the paper's HyperNet) and replay-tune (the target adapter trained further on
     the same replay with the same budget) each train at every rate of the same grid, seed 0, and each
     keeps the rate with the best validation macro F1, at each label count (``smoke`` mode once); where
     the grid's largest (smallest) rate wins, the next rate up (down) is tried too, twice at most (the same
     rule for every method; ``--grid`` replaces the mode's rates);
  2. at that rate, seeds 0..N-1 of fusion, of its **null-source twin** (every source replaced by
     ``hf-eval null-source`` noise of the same per-tensor norms, drawn with the same seed) and of
     replay-tune are scored on the held-out examples.
The target alone and each expert on its own task (the ceiling) are scored too.  The report gives
mean +- std over seeds, the share of each expert's F1 recovered, and paired bootstrap 95 % intervals
over held-out examples for fusion - replay-tune and fusion - null-source, per task and macro.

    python -m benchmarks cross-family --mode cpu    # about 2 hours on 2 CPU cores (experts included); resumable
    python -m benchmarks cross-family --mode full   # a GPU machine: 3 epochs, few-shot history kept
    python -m benchmarks cross-family --mode smoke  # minutes: the whole pipeline on 8 examples per task

Every step is skipped when its output exists, so an interrupted run continues where it stopped; the
results (WORK/results.json and .md; results_<TASKS>.* for other --sources, whose plans and runs are named
-src_<TASKS>) are rewritten after every evaluation.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
from dataclasses import asdict, replace
from datetime import date
from pathlib import Path

from benchmarks.cross_family_runs import Runner, Runners, method_variants
from benchmarks.cross_family_setup import EXPERT_BASE, MODES, TARGET_TASK, TASKS, source_tag, split
from benchmarks.report_cross_family import (
    distill_record,
    earlier_results,
    keep_first_measured,
    merge_results,
    scores_prf,
    write_report,
)
from hf_common.console import Console
from hf_eval.experiment import Experiment, StepFailed, locked
from hf_eval.study import Study, repeated

HERE = Path(__file__).resolve().parent


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import os

    return f"CPU, {os.cpu_count()} cores"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(MODES), default="cpu")
    parser.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared/data/uie",
                        help="the paper's replay files (read in place, never copied into the repository)")
    parser.add_argument("--work", type=Path, default=None, help="default: /tmp/hf-cross-family-MODE")
    parser.add_argument("--methods", type=lambda v: v.split(","), default=["hypernet", "replay-tune"],
                        help="comma-separated: hypernet, replay-tune, distill-lora, distill-hypernet, project, "
                             "project-hypernet (default: hypernet,replay-tune)")
    parser.add_argument("--sources", type=lambda v: tuple(v.split(",")), default=None,
                        help=f"source tasks instead of the mode's, comma-separated, of {', '.join(TASKS)} but the "
                             f"target's (several: one plan with an expert for each; results in "
                             f"WORK/results_<tasks>.json, published in their own section of the table)")
    parser.add_argument("--labels", type=lambda v: tuple(int(x) for x in v.split(",")), default=None,
                        help="labelled source-task examples in the replay, comma-separated (default: the mode's)")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimiser steps per run instead of the mode's (runs are named -T<steps>; results join the "
                             "same report as their own rows, so a longer budget sits beside the mode's)")
    parser.add_argument("--epochs", type=float, default=None,
                        help="passes over each run's own training set instead of a number of steps (runs are named "
                             "-E<epochs>): a distill run then takes more steps than its null-source twin, whose answers "
                             "are all dropped, and both see the target's replay equally often")
    parser.add_argument("--grid", type=lambda v: tuple(sorted(float(x) for x in v.split(","))), default=None,
                        metavar="RATES", help="learning rates tried on validation instead of the mode's, comma-separated "
                                              "(the search still goes past whichever edge wins)")
    parser.add_argument("--synthesize", type=int, default=None, metavar="N",
                        help="data-free distill: no unlabelled prompts; the target writes N prompts in the style of "
                             "--seed-count prompts drawn from each source task's training pool (runs named -S<N>x<seeds>)")
    parser.add_argument("--seed-count", type=int, default=5, help="seed prompts per source task for --synthesize")
    parser.add_argument("--unlabeled-count", type=int, default=None,
                        help="unlabelled prompts per source task for distill instead of the mode's (runs named -U<n>)")
    parser.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=None,
                        help="which seeds to run (default: 0..N-1 of the mode); e.g. another invocation on the same "
                             "work folder can take the last seed while this one runs the first ones")
    parser.add_argument("--lr", type=float, default=None, metavar="RATE",
                        help="the rate an earlier invocation chose on validation for these runs (its scores are in the "
                             "published table): no search, so a fresh work folder resumes a row's later seeds without "
                             "training seed 0 again")
    parser.add_argument("--only", choices=["fused", "twin"], default=None,
                        help="run only the fused runs, or only their null-source twins (default: both)")
    parser.add_argument("--variant", default=None, metavar="NAME",
                        help="a named variant of the trainable fusion methods: --fuse-args are added to their hf-fuse "
                             "commands, runs are named -V<NAME>, and the report gives them their own rows (with their own "
                             "rate chosen on validation and their own null-source twins)")
    parser.add_argument("--fuse-args", default="", metavar="ARGS",
                        help="hf-fuse options of --variant, one string, e.g. '--gen-max-new-tokens auto'")
    parser.add_argument("--prepare", action="store_true",
                        help="only what the runs share: experts, their scores, the target alone, every seed's plans and "
                             "null sources, and (with a distill method) the source experts' answers to the prompts for "
                             "every seed's real and null plan (a one-step run each), so that other invocations, on this "
                             "machine or a faster one, train from them (python -m benchmarks runs)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="every model's dtype (default float32: the same numbers on a CPU and on a GPU)")
    parser.add_argument("--publish", action="store_true",
                        help="also merge the results into benchmarks/results/cross_family.{json,md} (the runs "
                             "of other machines and source tasks there stay)")
    return parser.parse_args(argv)


def settings_of(args: argparse.Namespace):
    """The mode as the options change it, the training budget, and the options checked: ``(mode, budget,
    variant_args)``; a wrong option exits with one line."""
    mode = MODES[args.mode]
    if args.labels:
        mode = replace(mode, labels=args.labels)
    if args.grid:
        if not all(0 < x < 1 for x in args.grid) or len(set(args.grid)) != len(args.grid):
            raise SystemExit("--grid: distinct learning rates between 0 and 1, comma-separated")
        mode = replace(mode, grid=args.grid)
    if args.lr is not None and not 0 < args.lr < 1:
        raise SystemExit("--lr: a learning rate between 0 and 1")
    if args.sources:
        if not set(args.sources) <= set(TASKS) - {TARGET_TASK} or len(set(args.sources)) != len(args.sources):
            raise SystemExit(f"--sources: distinct tasks of {', '.join(sorted(set(TASKS) - {TARGET_TASK}))}")
        mode = replace(mode, sources=args.sources)
    if bool(args.variant) != bool(args.fuse_args.strip()):
        raise SystemExit("--variant and --fuse-args go together")
    if args.variant and not re.fullmatch(r"[A-Za-z0-9_.]+", args.variant):
        raise SystemExit("--variant: letters, digits, '.' and '_' only (it is part of file names)")
    if args.steps is not None and args.epochs is not None:
        raise SystemExit("--steps and --epochs: one or the other")
    budget = mode.budget if args.steps is None else replace(mode.budget, steps=args.steps)
    if args.epochs is not None:
        budget = replace(mode.budget, steps=None, epochs=args.epochs)
    if (budget.steps is not None and budget.steps < 1) or budget.epochs <= 0:
        raise SystemExit("--steps and --epochs must be positive")
    return mode, budget, shlex.split(args.fuse_args)


class CrossFamily:
    """One invocation's work folder, data, study, plans and results; the steps of ``main`` are its methods."""

    def __init__(self, args: argparse.Namespace, mode, budget, variant_args: list[str]) -> None:
        self.args, self.mode, self.budget, self.variant_args = args, mode, budget, variant_args
        self.work = args.work or Path(f"/tmp/hf-cross-family-{args.mode}")
        self.console = Console()
        self.exp = Experiment(self.work, self.console)
        self.data = split(args.data_dir, self.work, mode, args.unlabeled_count, args.seed_count)
        self.n_unlabeled = args.unlabeled_count or mode.n_unlabeled
        self._tags()
        self.study = Study(self.exp, "smollm2", budget, eval_args=["--max-new-tokens", mode.eval_tokens, "--batch-size", 16],
                           fuse_args=["--no-gradient-checkpointing", "-q"], dtype=args.dtype)
        self.tasks = [TARGET_TASK, *mode.sources]
        self.heldout = [self.data[t]["heldout"] for t in self.tasks]
        self.validation = [self.data[t]["val"] for t in self.tasks]
        self.meta = {"mode": args.mode, "settings": asdict(mode), "commit": git_commit(), "date": date.today().isoformat(),
                     "device": device_name(), "target_task": TARGET_TASK, "source_tasks": list(mode.sources)}
        self.results = {**self.meta, "experts": {}, "runs": [], "chosen_lr": {}, "validation": {}}
        # one results file per set of source tasks: invocations with other sources share the work folder (its experts
        # and caches), not the file, where their differing settings would void each other's runs
        tail = "" if mode.sources == MODES[args.mode].sources else "_" + "_".join(mode.sources)
        self.results_file = self.work / f"results{tail}.json"
        self.results.update(earlier_results(self.results_file, self.meta))
        self.publish = HERE / "results" / "cross_family.json" if args.publish else None
        unlabeled = {t: self.data[t]["unlabeled"] for t in mode.sources}  # the first n_unlabeled prompts of the pool
        self.source_models = repeated("--source-model", [f"{i}={EXPERT_BASE[t]}" for i, t in enumerate(mode.sources)])
        self.prompts = repeated("--unlabeled", [f"{i}={unlabeled[t]}" for i, t in enumerate(mode.sources)])
        if args.synthesize:  # data-free: the seeds instead of the unlabelled prompts
            self.prompts = [*repeated("--seed-prompts", [f"{i}={self.data[t]['seeds']}" for i, t in enumerate(mode.sources)]),
                            "--synthesize", args.synthesize]

    def _tags(self) -> None:
        """What run names end with: the budget, the source tasks, the variant, the prompts."""
        args, mode, budget = self.args, self.mode, self.budget
        tag = "" if budget == mode.budget else f"-T{budget.steps}" if budget.steps is not None else f"-E{budget.epochs:g}"
        self.src = source_tag(args.mode, mode.sources)
        self.tag = tag + self.src
        self.fusion_tag = self.tag + (f"-V{args.variant}" if args.variant else "")  # replay-tune takes no hf-fuse options
        self.distill_tag = self.fusion_tag + ("" if self.n_unlabeled == mode.n_unlabeled else f"-U{self.n_unlabeled}")
        if args.synthesize:
            self.distill_tag = self.fusion_tag + f"-S{args.synthesize}x{args.seed_count}"

    # -- steps ---------------------------------------------------------------------------------------------------------
    def record(self, run: dict, adapter: Path | None, step: str | None) -> None:
        """Score a run on the held-out examples and write it into the results (merged with what other invocations on
        this folder recorded meanwhile)."""
        scores = self.study.evaluate(run["name"], adapter, self.heldout)
        cost = (self.exp.records.get(step) or self.exp.records.get(adapter.name, {})) if step and adapter else {}
        report = adapter / "fusion_report.json" if adapter else None
        fused = json.loads(report.read_text()) if report and report.exists() else {}
        if "distill" in fused:
            run["distill"] = distill_record(fused["distill"])
        if fused.get("tasks"):  # optimiser steps, so that a row's seconds compare with a plain LoRA run's per step
            run["train_steps"] = sum(t.get("steps", 0) for t in fused["tasks"])
        entry = {**run, "tasks": {t: {**scores_prf(s), "cut": s.get("cut", 0)} for t, s in scores["tasks"].items()},
                 "macro": scores_prf(scores["macro"]),
                 "eval_dir": str(self.work / f"eval-{run['name']}"), "train_seconds": cost.get("seconds", 0.0),
                 "train_peak_mib": cost.get("peak_mib", 0.0), **({"train_resumed": True} if cost.get("resumed") else {}),
                 "measured": {k: self.meta[k] for k in ("commit", "date", "device")}}  # a merged table's runs differ
        with locked(self.work):  # what another invocation on this folder recorded meanwhile is kept
            merge_results(self.results, earlier_results(self.results_file, self.meta))
            keep_first_measured(entry, next((r for r in self.results["runs"] if r["name"] == run["name"]), None))
            self.results["runs"] = [r for r in self.results["runs"] if r["name"] != run["name"]] + [entry]
            write_report(self.work, self.results, self.publish, self.results_file.stem)

    def experts_and_target(self) -> None:
        """Every expert (trained once), the target alone, and each source expert on its own task (the ceiling)."""
        mode = self.mode
        experts = {t: self.study.expert(f"expert-{t}", EXPERT_BASE[t], self.data[t]["train"], epochs=mode.expert_epochs,
                                        lr=mode.expert_lr) for t in self.tasks}
        self.target = experts[TARGET_TASK]
        self.record({"name": f"target{self.src}", "method": "target", "seed": 0, "lr": None,
                     "source_labels_per_task": None, "null_source": False}, self.target, None)
        for task in mode.sources:
            scores = self.study.evaluate(f"expert-{task}", experts[task], [self.data[task]["heldout"]],
                                         base_model=EXPERT_BASE[task])
            self.results["experts"][task] = scores["tasks"][task].get("score", scores["tasks"][task]["f1"])
            self.results.setdefault("expert_scores", {})[task] = scores_prf(scores["tasks"][task])
        self.sources = [experts[t] for t in mode.sources]
        self.real_plan = self.study.plan(f"plan-real{self.src}", self.target, self.sources)

    def null_plan(self, seed: int) -> Path:
        return self.study.plan(f"plan-null-s{seed}{self.src}", self.target,
                               [self.study.null_source(s, seed) for s in self.sources])

    def replay_for(self, n: int) -> list[Path]:
        mode = self.mode
        return [self.data[TARGET_TASK]["train"], *[self.data[t]["train" if n >= mode.pool else f"train-{n}"]
                                                   for t in mode.sources if n > 0]]

    def prepare(self, runners: dict[str, Runner], seeds) -> None:
        """Only what the runs share: every seed's null plan and distill's answers (a one-step run each)."""
        for seed in seeds:
            self.null_plan(seed)
        distilling = [m for m in self.args.methods if method_variants().get(m, ("", None))[1] is not None]
        for method in distilling:
            for seed in seeds:  # one step each: the answers land in the shared cache
                for null in (False, True):
                    self.study.fuse(f"answers-{method}{'-null' if null else ''}-s{seed}{self.distill_tag}",
                                    self.null_plan(seed) if null else self.real_plan, self.replay_for(0), lr=1e-4,
                                    seed=seed, extra=[*Runners(self).distill_args(method_variants()[method][1]),
                                                      *self.variant_args, "--max-steps", 1])
        self.console.success(f"prepared in {self.work}")

    def choose(self, runners: dict[str, Runner], tune_at: int, chosen: dict[str, float]) -> None:
        """Each method's rate (or weight) at ``tune_at`` source labels: searched on validation, or ``--lr``."""
        for method in self.args.methods:
            runner = runners[method]
            if method in chosen:
                continue
            key = f"L{tune_at}{runner.tag}"
            if self.args.lr is not None:  # chosen earlier: its validation scores stay where they were published
                chosen[method] = self.results["chosen_lr"].setdefault(key, {})[method] = self.args.lr
                continue
            grid = self.mode.weights if runner.tunes_weight else self.mode.grid
            knob, scores = self.study.pick_lr(lambda x, train=runner.train, at=tune_at: train(at, x), grid,
                                              self.validation, f"{method} at {tune_at} source labels",
                                              beyond=0 if runner.tunes_weight else self.mode.beyond)
            chosen[method] = knob
            self.results["chosen_lr"].setdefault(key, {})[method] = knob
            self.results["validation"].setdefault(key, {})[method] = {f"{x:g}": f for x, f in scores.items()}

    def seeds_at(self, runners: dict[str, Runner], n: int, tune_at: int, chosen: dict[str, float], seeds) -> None:
        """Every seed of every method at ``n`` source labels, and its null-source twin, scored and recorded."""
        args, budget = self.args, self.budget
        for seed in seeds:
            for method in args.methods:
                runner = runners[method]
                for null in (False, True) if runner.has_twin else (False,):
                    if args.only and null != (args.only == "twin"):
                        continue
                    knob = chosen[method]
                    name, adapter = runner.train(n, knob, seed, null)
                    setting = {"lr": None, "project_weight": knob} if runner.tunes_weight else {"lr": knob}
                    variant = {"steps": budget.steps} if not runner.tunes_weight else {}
                    if not runner.tunes_weight and budget.steps is None:
                        variant["epochs"] = budget.epochs
                    if method_variants().get(method, ("", None))[1] is not None:
                        variant["n_unlabeled"] = 0 if args.synthesize else self.n_unlabeled
                        if args.synthesize:
                            variant.update(data_free=True, n_seed_prompts=args.seed_count, n_synthesized=args.synthesize)
                    if args.variant and not runner.tunes_weight and runner.has_twin:
                        variant.update(variant=args.variant, fuse_args=self.variant_args)
                    self.record({"name": name, "method": method, "seed": seed, **setting, "source_labels_per_task": n,
                                 "null_source": null, "lr_chosen_at_source_labels": tune_at, **variant}, adapter, name)


def main() -> None:
    args = parse_args()
    mode, budget, variant_args = settings_of(args)
    bench = CrossFamily(args, mode, budget, variant_args)
    runners = Runners(bench).all()
    unknown = set(args.methods) - set(runners)
    if unknown:
        raise SystemExit(f"--methods: unknown {', '.join(sorted(unknown))} (known: {', '.join(runners)})")
    bench.experts_and_target()
    seeds = args.seeds if args.seeds is not None else range(mode.seeds)
    if args.prepare:
        bench.prepare(runners, seeds)
        return
    chosen: dict[int, dict[str, float]] = {}
    for labels in mode.labels:
        n = min(labels, mode.pool)
        tune_at = n if mode.tune_at is None else min(mode.tune_at, mode.pool)
        bench.choose(runners, tune_at, chosen.setdefault(tune_at, {}))
        bench.seeds_at(runners, n, tune_at, chosen[tune_at], seeds)
    bench.console.success(f"results in {bench.results_file.with_suffix('.md')}"
                          + (f" and {bench.publish}" if bench.publish else ""))


if __name__ == "__main__":
    try:
        main()
    except StepFailed as exc:
        Console().abort(str(exc), 1)
