"""What a source expert's answers are worth to distill: how many a length cap cuts, and how good the kept ones are.

The cross-family benchmark's FindVehicle expert (trained as ``bench_cross_family.py --mode cpu`` trains it, in the
same work folder, so either reuses the other's) answers the 216 prompts of its task's training pool, greedily, at
the benchmark's 48-token cap and at ``--gen-max-new-tokens auto`` (distill's own answer path: the same batching,
stop tokens, confidence and the same ``auto_cap``).  Each answer is then scored against the pool's labels,
**a diagnostic only**: distill never sees these labels, and no setting is chosen from this table (settings are
chosen on the validation split).  It shows what the cap drops and what a confidence filter could keep: F1 of
every answer, of the finished ones, and of the finished ones above each confidence quantile.

    python benchmarks/bench_answers.py [--work /tmp/hf-cross-family-cpu] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench_cross_family import EXPERT_BASE, MODES, split  # noqa: E402

from hf_common.console import Console  # noqa: E402
from hf_eval.experiment import Experiment  # noqa: E402
from hf_eval.study import Study  # noqa: E402

TASK = "findvehicle"


def answers(expert: Path, prompts_file: Path, cap: int | str, batch: int) -> tuple[list, int, float]:
    """The expert's answers as distill makes them (``auto``: the pilot, then the cap from it)."""
    import torch
    from peft import PeftModel

    from hf_fuse.methods.distill import PILOT, PILOT_CAP, auto_cap
    from hf_runtime.data import load_records, prompt_ids
    from hf_runtime.generation import generate_batches
    from hf_runtime.model import load_model_and_tokenizer, resolve_base_model

    model, tokenizer = load_model_and_tokenizer(resolve_base_model(EXPERT_BASE[TASK]), torch.device("cpu"), torch.float32)
    model = PeftModel.from_pretrained(model, expert).eval()
    conversations = load_records(prompts_file, prompts_only=True)
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
    args = parser.parse_args()
    mode = MODES["cpu"]
    data = split(args.data_dir, args.work, mode)
    study = Study(Experiment(args.work, Console()), "smollm2", mode.budget, dtype="float32")
    expert = study.expert(f"expert-{TASK}", EXPERT_BASE[TASK], data[TASK]["train"], epochs=mode.expert_epochs,
                          lr=mode.expert_lr)
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


if __name__ == "__main__":
    main()
