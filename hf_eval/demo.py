"""The built-in example, end to end on the real models: ``python -m hf_eval.demo [WORK_DIR]``.

Two synthetic extraction tasks of the project's own (no external data): entity extraction for a
SmolLM2-135M target expert and relation extraction for a Gemma-3-270M source expert.  The experts
are trained on the fly (cached), then hf-analyze -> hf-fuse -> hf-eval compares the target adapter
before and after fusion on the held-out examples of both tasks.  Finished steps are reused.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from hf_common.console import Console

from .experiment import Experiment, StepFailed

PEOPLE = ["ada lovelace", "alan turing", "grace hopper", "marie curie", "nikola tesla", "emmy noether", "carl gauss"]
CITIES = ["paris", "lisbon", "nairobi", "kyoto", "lima", "oslo", "quito"]
VEHICLES = ["tram", "ferry", "bicycle", "cargo van", "glider", "canoe"]
SENTENCES = ["{p} took the {v} to {c}.", "In {c}, {p} repaired a {v}.", "{p} lives in {c} and rides a {v}.",
             "The {v} that {p} bought in {c} was red."]


def _records(kind: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        p, c, v = rng.choice(PEOPLE), rng.choice(CITIES), rng.choice(VEHICLES)
        text = rng.choice(SENTENCES).format(p=p, c=c, v=v)
        if kind == "ner":
            instruction = ('Please list all entity words in the text that fit the category.Output format is '
                           f'"type1: word1; type2: word2". \nOption: person, city, vehicle \nText: {text} \nAnswer:')
            output = f" person: {p}; city: {c}; vehicle: {v}"
        else:
            instruction = ('Given a sentence, please extract the subject and object containing a certain relation in the '
                           'sentence according to the following relation types, in the format of "relation1: word1, '
                           f'word2; relation2: word3, word4". \nOption: located in, uses \nText: {text} \nAnswer:')
            output = f" located in: {p}, {c}; uses: {p}, {v}"
        records.append({"instruction": instruction, "input": text, "output": output})
    return records


def main(work: Path) -> None:
    console = Console()
    exp = Experiment(work, console)
    data = {}
    for task, seed in (("ner", 1), ("relations", 2)):
        records = _records("ner" if task == "ner" else "re", 52, seed)
        data[task] = {"train": work / f"{task}-train.json", "heldout": work / f"{task}-heldout.json"}
        data[task]["train"].write_text(json.dumps(records[:40]))
        data[task]["heldout"].write_text(json.dumps(records[40:]))
    hf_eval, hf_analyze, hf_fuse = exp.tool("hf-eval"), exp.tool("hf-analyze"), exp.tool("hf-fuse")
    target, source = work / "smollm2-ner-expert", work / "gemma3-relations-expert"
    exp.run("target expert (SmolLM2, entities)", [hf_eval, "train-expert", "--base-model", "smollm2", "--data",
                                                   data["ner"]["train"], "-o", target, "--epochs", 1, "--lr", 3e-4, "--force"],
            target)
    exp.run("source expert (Gemma 3, relations)", [hf_eval, "train-expert", "--base-model", "gemma3", "--data",
                                                    data["relations"]["train"], "-o", source, "--epochs", 1, "--lr", 3e-4,
                                                    "--force"], source)
    plan = work / "plan.h5"
    exp.run("hf-analyze", [hf_analyze, "--target", target, "--source", source, "--block-size", "auto", "-o", plan,
                           "--force"], plan)
    fused = work / "fused"
    exp.run("hf-fuse", [hf_fuse, plan, "--base-model", "smollm2", "--replay", data["ner"]["train"], "--replay",
                        data["relations"]["train"], "--embed-dim", "auto", "--epochs", 1, "--grad-accum", 4,
                        "--lr", 1e-4, "--no-gradient-checkpointing",
                        "-o", fused, "--force"], fused)
    results = work / "scores"
    cached = results.exists()
    exp.run("hf-eval (before / after)", [hf_eval, "evaluate", "--base-model", "smollm2", "--adapter", f"before={target}",
                                         "--adapter", f"after={fused}", "--data", data["ner"]["heldout"], "--data",
                                         data["relations"]["heldout"], "--max-new-tokens", 32, "--batch-size", 12, "-o", results,
                                         "--force"],
            results)
    if cached:  # the evaluation step printed its table when it ran; a cached rerun shows it again
        from .evaluate import render

        render(json.loads((results / "results.json").read_text()), console)


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1] if len(sys.argv) > 1 else "example-output"))
    except StepFailed as exc:
        Console().abort(str(exc), 1)
