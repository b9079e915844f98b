"""What a source expert's answers are worth to distill: how many a length cap cuts, and how good the kept ones are.

The cross-family benchmark's FindVehicle expert (trained as ``bench_cross_family.py --mode cpu`` trains it, in the
same work folder, so either reuses the other's) answers the 216 prompts of its task's training pool, greedily, at
the benchmark's 48-token cap and at ``--gen-max-new-tokens auto`` (distill's own answer path: the same batching,
stop tokens, confidence and the same ``auto_cap``).  Each answer is then scored against the pool's labels,
**a diagnostic only**: distill never sees these labels, and no setting is chosen from this table (settings are
chosen on the validation split).  It shows what the cap drops and what a confidence filter could keep: F1 of
every answer, of the finished ones, and of the finished ones above each confidence quantile.

    python -m benchmarks answers [--work /tmp/hf-cross-family-cpu] [--json FILE]
    python -m benchmarks answers --synthesize 216 [--json FILE]    # data-free: what the filter keeps
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.cross_family_setup import EXPERT_BASE, MODES, split
from hf_common.console import Console
from hf_eval.experiment import Experiment
from hf_eval.study import Study

HERE = Path(__file__).resolve().parent

TASK = "findvehicle"


def answers(expert: Path, prompts_file: Path | list, cap: int | str, batch: int) -> tuple[list, int, float]:
    """The expert's answers as distill makes them (``auto``: the pilot, then the cap from it), to the prompts of a
    file or to a list of conversations."""
    import torch
    from peft import PeftModel

    from hf_fuse.methods.distill.answer_cache import PILOT, PILOT_CAP, auto_cap
    from hf_runtime.data import load_records, prompt_ids
    from hf_runtime.generation import generate_batches
    from hf_runtime.model import load_model_and_tokenizer, resolve_base_model

    model, tokenizer = load_model_and_tokenizer(resolve_base_model(EXPERT_BASE[TASK]), torch.device("cpu"), torch.float32)
    model = PeftModel.from_pretrained(model, expert).eval()
    conversations = prompts_file if isinstance(prompts_file, list) else load_records(prompts_file, prompts_only=True)
    prompts = {i: prompt_ids(tokenizer, c, 1024, True) for i, c in enumerate(conversations)}
    started, done = time.perf_counter(), {}

    def run(keys, limit):
        for group in generate_batches(model, tokenizer, {i: prompts[i] for i in keys}, limit, batch):
            done.update((g.key, g) for g in group)

    if cap == "auto":
        run(range(PILOT), PILOT_CAP)
        cap = auto_cap(list(done.values()))
    run([i for i in prompts if i not in done], cap)
    return [done[i] for i in range(len(conversations))], cap, time.perf_counter() - started


def synthesized(seeds_file: Path, n: int, work: Path, temperature: float) -> tuple[list, dict, float]:
    """Data-free: the target's base model (SmolLM2) writes ``n`` prompts in the style of the seeds, as distill's
    ``--synthesize`` does (same function, same filter); the kept ones and the filter's counts."""
    import torch

    from hf_fuse.methods.distill.synthesize import synthesize
    from hf_runtime.data import load_records
    from hf_runtime.model import load_model_and_tokenizer, resolve_base_model

    model, tokenizer = load_model_and_tokenizer(resolve_base_model("smollm2"), torch.device("cpu"), torch.float32)
    started = time.perf_counter()
    kept, stats = synthesize(model, tokenizer, load_records(seeds_file, prompts_only=True), n, work, seed=0, cutoff_len=1024,
                             temperature=temperature)
    return kept, stats, time.perf_counter() - started


def confidence(got: list) -> dict:
    finished = [g.logprob for g in got if g.finished and g.text.strip()]
    return {"answers": len(got), "finished": len(finished),
            "mean_logprob": round(sum(finished) / len(finished), 4) if finished else None,
            "median_logprob": round(sorted(finished)[len(finished) // 2], 4) if finished else None}


def f1(pairs: list[tuple[str, str]]) -> float:
    from hf_eval.scoring import TaskScore

    score = TaskScore("set")
    for prediction, gold in pairs:
        score.add(prediction, gold)
    return score.f1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/hf-cross-family-cpu"))
    parser.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared/data/uie")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--synthesize", type=int, default=0, metavar="N",
                        help="instead: data-free, N prompts written from the benchmark's 5 seeds; how many the filter "
                             "keeps and how sure the expert is answering them, against 64 real prompts")
    parser.add_argument("--temperature", type=float, default=0.7,
                        help="with --synthesize: the writer's temperature (0.7, as hf-fuse's default)")
    args = parser.parse_args()
    mode = MODES["cpu"]
    data = split(args.data_dir, args.work, mode)
    study = Study(Experiment(args.work, Console()), "smollm2", mode.budget, dtype="float32")
    expert = study.expert(f"expert-{TASK}", EXPERT_BASE[TASK], data[TASK]["train"], epochs=mode.expert_epochs,
                          lr=mode.expert_lr)
    if args.synthesize:
        return data_free(args, data, expert)
    golds = [r["output"] for r in json.loads(data[TASK]["train"].read_text())]
    rows, out = [], {}
    for cap in (mode.new_tokens, "auto"):
        got, used, seconds = answers(expert, data[TASK]["unlabeled"], cap, 16)
        finished = [(g, gold) for g, gold in zip(got, golds) if g.finished and g.text.strip()]
        entry = {"cap": used, "seconds": round(seconds, 1), "answers": len(got), "finished": len(finished),
                 "cut_at_cap": sum(1 for g in got if not g.finished), "f1_all": f1([(g.text, d) for g, d in zip(got, golds)]),
                 "f1_finished": f1([(g.text, d) for g, d in finished]),
                 "longest_finished": max((g.n_tokens for g, _ in finished), default=0)}
        confidences = sorted(g.logprob for g, _ in finished)
        for q in (0.25, 0.5):  # keep the finished answers above this quantile of the expert's confidence
            if confidences:
                threshold = confidences[int(q * len(confidences))]
                kept = [(g.text, d) for g, d in finished if g.logprob >= threshold]
                entry[f"above_q{int(100 * q)}"] = {"threshold": round(threshold, 4), "kept": len(kept), "f1": f1(kept)}
        out[str(cap)] = entry
        rows.append(f"cap {cap!s:>4} -> {used:>3} tokens: {entry['finished']:>3} of {entry['answers']} finished, "
                    f"{entry['cut_at_cap']:>3} cut; F1 all {100 * entry['f1_all']:.1f}, finished "
                    f"{100 * entry['f1_finished']:.1f}; " + "; ".join(
                        f"top {100 - int(k[-2:])} % by confidence ({v['kept']}, logprob >= {v['threshold']}) "
                        f"{100 * v['f1']:.1f}" for k, v in entry.items() if k.startswith("above_")) +
                    f"; {entry['seconds']:.0f} s")
    sys.stdout.write(f"{TASK} expert's answers to its {len(golds)} training-pool prompts (F1 against the pool's labels, a "
                     "diagnostic: distill never sees them)\n" + "\n".join(rows) + "\n")
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "bench_answers", "task": TASK, "date": time.strftime("%Y-%m-%d"),
                                         "by_cap": out}, indent=1) + "\n")


def data_free(args, data: dict, expert: Path) -> None:
    from hf_runtime.data import load_records

    (args.work / "synthesized").mkdir(parents=True, exist_ok=True)
    kept, stats, seconds = synthesized(data[TASK]["seeds"], args.synthesize, args.work / "synthesized",
                                         args.temperature)
    real = load_records(data[TASK]["unlabeled"], prompts_only=True)[:64]
    on_real, cap, _ = answers(expert, real, "auto", 16)
    on_kept, _, answer_seconds = answers(expert, kept, cap, 16) if kept else ([], cap, 0.0)
    out = {"benchmark": "bench_answers --synthesize", "task": TASK, "date": time.strftime("%Y-%m-%d"), "filter": stats,
           "synthesis_seconds": round(seconds, 1), "answer_seconds": round(answer_seconds, 1), "cap": cap,
           "expert_on_real_prompts": confidence(on_real), "expert_on_kept_prompts": confidence(on_kept),
           "examples": [c.turns[-1][0][-300:] for c in kept[:3]], "temperature": args.temperature}
    r, k = out["expert_on_real_prompts"], out["expert_on_kept_prompts"]
    sys.stdout.write(f"{TASK}, data-free from 5 seeds, temperature {args.temperature:g}: {stats['kept']} of "
                     f"{stats['candidates']} written prompts kept "
                     f"({stats['unfinished']} unfinished, {stats['length']} length, {stats['lines']} lines, "
                     f"{stats['copies']} copies, {stats['unlikely']} unlikely), {seconds:.0f} s\n"
                     f"the expert (cap {cap}) finishes {k['finished']} of {k['answers']} answers to them, mean token "
                     f"log-probability {k['mean_logprob']} (median {k['median_logprob']}); on 64 real prompts "
                     f"{r['finished']} of {r['answers']}, {r['mean_logprob']} (median {r['median_logprob']})\n")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
