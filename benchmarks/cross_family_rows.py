"""The cross-family benchmark's rows and intervals: runs grouped into the report's rows (one per method, budget,
prompts and variant, with its null-source twin beside it), each row's label, and the paired bootstrap of a row
against its twin and against replay-tune of the same steps, from the per-example counts each run keeps."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from hf_eval.compare import paired_difference
from hf_eval.study import per_example_counts


def sources_of(entry: dict, results: dict) -> tuple[str, ...]:
    """The source tasks a run (or a comparison) covers: those of ``results`` among its scored tasks."""
    return tuple(entry.get("sources") or (t for t in results["source_tasks"] if t in entry["tasks"]))


def source_sets(results: dict) -> list[dict]:
    """``results`` per set of source tasks: a published table may hold plans of one source and plans of several,
    whose runs are grouped, compared and judged only among themselves (a view each: its tasks, runs, experts and
    comparisons)."""
    runs: dict[tuple, list] = defaultdict(list)
    for run in results["runs"]:
        runs[sources_of(run, results)].append(run)
    # fewer sources first, whichever file was merged last, so that a merge does not move the published sections
    return [{**results, "source_tasks": list(tasks), "runs": chosen,
             "experts": {t: v for t, v in results.get("experts", {}).items() if t in tasks},
             "comparisons": [c for c in results.get("comparisons", []) if sources_of(c, results) == tasks]}
            for tasks, chosen in sorted(runs.items(), key=lambda kv: len(kv[0]))]


def groups(runs: list[dict], settings: dict) -> dict[tuple, list[dict]]:
    """Runs by (source labels, method, null source, steps, unlabelled prompts, variant); the target-alone run is its
    own group.

    Steps and prompts are the mode's unless a run says otherwise (``bench_cross_family.py --steps`` /
    ``--unlabeled-count``); prompts count only for distill; a variant is ``--variant``'s name (None: the mode's)."""
    out: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        steps = run.get("steps", settings["budget"]["steps"])
        if "epochs" in run:
            steps = f"{run['epochs']:g} epoch{'' if run['epochs'] == 1 else 's'}"
        prompts = run.get("n_unlabeled", settings.get("n_unlabeled")) if run["method"].startswith("distill") else None
        if run.get("data_free"):
            prompts = f"data-free: {run['n_seed_prompts']} seeds, {run['n_synthesized']} written"
        out[(run["source_labels_per_task"], run["method"], run["null_source"], steps, prompts,
             run.get("variant"))].append(run)
    return out


def label(key: tuple, settings: dict) -> str:
    labels, method, null, steps, prompts, name = key
    if labels is None:
        return method
    variant = [steps if isinstance(steps, str) else f"{steps} steps"] if (steps != settings["budget"]["steps"]
                                                                           and method != "project") else []
    if prompts is not None and prompts != settings.get("n_unlabeled"):
        variant.append(f"{prompts} prompts" if isinstance(prompts, int) else prompts)
    if name:
        variant.append(name)
    shown = f" [{', '.join(variant)}]" if variant else ""
    return f"{method}{shown}{' (null sources)' if null else ''}"


def keep_counts(results: dict) -> None:
    """Keep each run's per-example counts in the results (``"n_pred n_gold n_correct"`` per example, joined by ``;``)
    while its evaluation is on this machine, so that a table merged over machines bootstraps every seed."""
    for r in results["runs"]:
        kept = r.get("per_example", {})
        for task in set(r.get("tasks", {})) - set(kept):
            try:
                counts = per_example_counts(Path(r["eval_dir"]), r["name"], task)
            except OSError:  # an evaluation of another machine
                continue
            kept[task] = ";".join(" ".join(map(str, c)) for c in counts)
        if kept:
            r["per_example"] = kept


def _run_counts(run: dict, task: str) -> list[tuple[int, ...]]:
    if task in run.get("per_example", {}):
        return [tuple(map(int, c.split())) for c in run["per_example"][task].split(";")]
    return per_example_counts(Path(run["eval_dir"]), run["name"], task)


def _counts(runs: list[dict], tasks: list[str]) -> dict[str, list]:
    return {t: [_run_counts(r, t) for r in sorted(runs, key=lambda r: r["seed"])] for t in tasks}


def comparisons(results: dict) -> list[dict]:
    """Paired bootstrap, at each label count and budget (same seeds only), of every fusion method against
    replay-tune of the same steps and against its own null-source twin, within each set of source tasks."""
    return [c for view in source_sets(results) for c in _comparisons(view)]


def _comparisons(results: dict) -> list[dict]:
    tasks = [results["target_task"], *results["source_tasks"]]
    s = results["settings"]
    by_group = groups(results["runs"], s)
    out = []
    for key in sorted((k for k in by_group if k[0] is not None and not k[2] and k[1] != "replay-tune"), key=str):
        labels, method, _, steps, prompts, variant = key
        fused = by_group[key]
        name = label(key, s)
        tune_key = (labels, "replay-tune", False, s["budget"]["steps"] if method == "project" else steps, None, None)
        for other_key, what in ((tune_key, f"{name} - {label(tune_key, s)}"),
                                ((labels, method, True, steps, prompts, variant), f"{name} - null-source")):
            other = by_group.get(other_key, [])
            seeds = sorted({r["seed"] for r in fused} & {r["seed"] for r in other})
            if not seeds:
                continue
            pick = [r for r in fused if r["seed"] in seeds], [r for r in other if r["seed"] in seeds]
            try:
                diff = paired_difference(_counts(pick[0], tasks), _counts(pick[1], tasks))
            except (OSError, ValueError):  # an evaluation folder of another machine: numbers only, no interval
                continue
            out.append({"source_labels_per_task": labels, "comparison": what, "seeds": seeds, "tasks": diff,
                        "method": method, "steps": steps, "sources": results["source_tasks"]})
    return out
