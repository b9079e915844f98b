"""The cross-family benchmark's results: ``results.json`` and a Markdown report (tables of means, spreads and
bootstrap intervals), rewritten after every evaluation.  Used by ``bench_cross_family.py``; also runs alone:

    python -m benchmarks report WORK [--publish [STEM]]    # re-render WORK/results*.json (and merge)
    python -m benchmarks report WORK/results.json --into benchmarks/results/NAME.json

``--into`` adds a work folder's runs to a published file of the same settings (a table built over several machines
or sessions, each starting with an empty work folder): runs of the same name are replaced, the others kept, and so are
the published intervals that the work folder cannot recompute (their evaluations are not on this machine).  The source
tasks may differ (one source, two in one plan): the table then keeps a section per set of source tasks, whose runs are
compared and judged only among themselves.  ``--publish`` merges the same way into ``benchmarks/results/STEM.json``
(default ``cross_family``), or writes it where there is none yet.  Each run keeps its per-example counts, so that the
intervals of a merged table cover every seed, whichever machine evaluated it.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from benchmarks.cross_family_rows import comparisons, groups, keep_counts, label, source_sets, sources_of
from hf_common.atomic import write_text_atomic
from hf_eval.compare import mean_std

HERE = Path(__file__).resolve().parent


def distill_record(distill: dict) -> dict:
    """What a run's fusion report says about distill's examples: per source, the answers kept and dropped and, for
    data-free runs, what the writer wrote and the filter kept (older reports lack the temperature: it was 1.0)."""
    sources = {}
    for i, v in distill["sources"].items():
        sources[i] = {k: v[k] for k in ("prompts", "kept", "empty", "truncated")}
        if "synthesis" in v:
            x = v["synthesis"]
            sources[i]["synthesis"] = {"candidates": x["candidates"], "kept": x["kept"],
                                       "temperature": x.get("temperature", 1.0), "writer": x.get("writer", "target")}
    return {"n_generated_examples": distill["n_generated_examples"], "sources": sources}


def keep_first_measured(run: dict, earlier: dict | None) -> None:
    """A run recorded again with the scores it had (its evaluation cached) keeps when it was first measured; a run
    whose scores changed was measured again, and keeps its own stamp."""
    if earlier is None or earlier.get("tasks") != run.get("tasks"):
        return
    if "measured" in earlier:
        run["measured"] = earlier["measured"]
    else:  # measured before runs recorded it
        run.pop("measured", None)


def merge_results(results: dict, other: dict) -> None:
    """Add to ``results`` the runs and choices of ``other`` that it does not hold (its own entries win)."""
    theirs = {r["name"]: r for r in other.get("runs", [])}
    for run in results["runs"]:
        keep_first_measured(run, theirs.get(run["name"]))
    names = {r["name"] for r in results["runs"]}
    results["runs"] += [r for r in other.get("runs", []) if r["name"] not in names]
    for key in ("experts", "expert_scores"):
        results[key] = {**other.get(key, {}), **results.get(key, {})}
    for key in ("chosen_lr", "validation"):
        for tag, methods in other.get(key, {}).items():
            results[key][tag] = {**methods, **results[key].get(tag, {})}


def earlier_results(path: Path, meta: dict) -> dict:
    """What an earlier invocation on the same work folder measured with the same settings (other ``--labels`` or
    ``--methods`` allowed), so that results accumulate instead of being replaced."""
    return matching_results(json.loads(path.read_text()), meta) if path.exists() else {}


def matching_results(earlier: dict, meta: dict, also_free: tuple[str, ...] = ()) -> dict:
    """``earlier``'s measurements if its mode and settings are ``meta``'s (but for the settings that choose what runs,
    and those named in ``also_free``), else nothing."""
    before, now = earlier.get("settings", {}), json.loads(json.dumps(meta["settings"]))  # tuples and lists alike
    # a setting added since (for a new method) does not count, nor those that choose what runs but not how a run
    # goes: the label counts, the rates searched and how far past them (a run at a rate is the same run)
    shared = (set(before) & set(now)) - {"labels", "grid", "beyond", *also_free}
    if earlier.get("mode") != meta["mode"] or any(before[k] != now[k] for k in shared):
        return {}
    return {key: earlier[key] for key in ("experts", "expert_scores", "runs", "chosen_lr", "validation") if key in earlier}


def scores_prf(score: dict) -> dict:
    """Precision, recall and F1 of one score entry (what each run keeps per task and macro); for a label task (scored by
    accuracy) also its metric's name and the accuracy, the figure its rows read."""
    kept = {k: score[k] for k in ("precision", "recall", "f1")}
    if score.get("score_name", "f1") != "f1":
        kept.update(score_name=score["score_name"], score=score["score"], metric=score["metric"])
    return kept


def headline(score: dict) -> float:
    """The figure a task's rows read: its F1, or for a label task the score its metric names (accuracy)."""
    return score.get("score", score["f1"])


def metric_name(results: dict, task: str) -> str:
    """"F1", or the name of a label task's metric as its runs recorded it."""
    named = next((r["tasks"][task].get("score_name") for r in results["runs"] if task in r["tasks"]), None)
    return "F1" if named in (None, "f1") else named


def provenance(runs: list[dict]) -> list[str]:
    """Where and when the runs of a table merged over machines were measured (runs record it since 2026-12-01)."""
    counts: dict[str, int] = defaultdict(int)
    for run in runs:
        m = run.get("measured")
        counts[f"{m['date']}, commit {m['commit']}, {m['device']}" if m else "before runs recorded it"] += 1
    if list(counts) in ([], ["before runs recorded it"]):
        return []
    return ["Runs measured: " + "; ".join(f"{where}: {n}" for where, n in counts.items()) + ".", ""]


def render(results: dict) -> str:
    target = next((r for r in results["runs"] if r["method"] == "target"), None)
    s = results["settings"]
    lines = [f"# Cross-family benchmark ({results['mode']} mode)", "",
             f"Commit {results['commit']}, {results['date']}, {results['device']}. Target: SmolLM2-135M-Instruct "
             f"{results['target_task']} expert; sources: Gemma-3-270M experts on {', '.join(results['source_tasks'])}. "
             f"Budget per run where a row names none: {json.dumps(s['budget'])}; learning rates chosen on "
             f"{s['n_validation']} validation examples per task (each row's grid: the second table); "
             f"{s['n_heldout']} held-out examples per task; "
             f"{s['seeds']} seeds; experts {s['expert_epochs']} epochs at lr {s['expert_lr']}.", "",
             *provenance(results["runs"]), "## Experts on their own tasks (the ceiling)", "",
             "| task | precision | recall | F1 (a label task: its accuracy) |", "|---|---|---|---|"]
    for task, score in results.get("expert_scores", {}).items():
        name = metric_name(results, task)
        lines.append(f"| {task} | {100 * score['precision']:.1f} | {100 * score['recall']:.1f} | {100 * headline(score):.1f}"
                     + ("" if name == "F1" else f" {name}") + " |")
    if target:
        own = target["tasks"][results["target_task"]]
        lines.append(f"| {results['target_task']} (the target alone) | {100 * own['precision']:.1f} | "
                     f"{100 * own['recall']:.1f} | {100 * own['f1']:.1f} |")
    lines += ["", "## Chosen learning rates (validation macro F1, %)", "", "| source labels | method | chosen | grid |",
              "|---|---|---|---|"]
    for tag, methods in results.get("validation", {}).items():
        for method, scores in methods.items():
            grid = ", ".join(f"{lr}: {100 * f:.1f}" for lr, f in scores.items())
            labels, _, budget = tag[1:].partition("-")
            lines.append(f"| {labels} | {method}{f' [{budget}]' if budget else ''} | "
                         f"{results['chosen_lr'][tag][method]:g} | {grid} |")
    views = source_sets(results)
    for view in views:
        lines += _render_set(view, f" (sources: {', '.join(view['source_tasks'])})" if len(views) > 1 else "")
    return "\n".join(lines) + "\n"


def _render_set(results: dict, suffix: str) -> list[str]:
    """The held-out table, intervals, bars and runs of one set of source tasks (``suffix`` names it in each title)."""
    tasks = [results["target_task"], *results["source_tasks"]]
    experts = results.get("experts", {})
    target = next((r for r in results["runs"] if r["method"] == "target"), None)
    s = results["settings"]
    names = {t: metric_name(results, t) for t in tasks}
    header = " | ".join(f"{t} {names[t]}" for t in tasks)
    lines = ["", f"## Held-out scores (%: F1, a label task its accuracy), mean ± std over seeds{suffix}", "",
              "Share of ceiling: the source task's F1 as a share of its expert's; the target task's as a share of the "
              "target alone.", "",
              f"| source labels | run | seeds | lr | {header} | macro F1 | share of ceiling | train s |",
              "|---|---|---|---|" + "---|" * len(tasks) + "---|---|---|"]
    for key, runs in sorted(groups(results["runs"], s).items(),
                            key=lambda kv: (-1 if kv[0][0] is None else kv[0][0], str(kv[0][1:]))):
        cells = []
        for task in tasks:
            mean, std = mean_std([headline(r["tasks"][task]) for r in runs])
            cells.append(f"{100 * mean:.1f} ± {100 * std:.1f}")
        mean, std = mean_std([r["macro"]["f1"] for r in runs])
        shares = []
        for task in tasks:
            ceiling = experts.get(task) if task != results["target_task"] else (
                headline(target["tasks"][task]) if target else None)
            if ceiling:
                closed = gap_closed(results, runs, task) if task != results["target_task"] else None
                shares.append(f"{task} {100 * mean_std([headline(r['tasks'][task]) for r in runs])[0] / ceiling:.0f} %"
                              + (f" (gap closed {round(100 * closed)} %)" if closed is not None else ""))
        lrs = sorted({r["lr"] for r in runs if r["lr"] is not None})
        seconds = mean_std([r["train_seconds"] for r in runs])[0]
        lines.append(f"| {'-' if key[0] is None else key[0]} | {label(key, s)} | {len(runs)} | "
                     f"{', '.join(f'{lr:g}' for lr in lrs) or '-'} | " + " | ".join(cells) +
                     f" | {100 * mean:.1f} ± {100 * std:.1f} | {'; '.join(shares)} | {seconds:.0f} |")
    comps = results.get("comparisons", [])
    if comps:
        lines += ["", f"## Paired bootstrap: differences of seed means (F1 points, 95 % interval over held-out examples){suffix}",
                  "",
                  "| source labels | comparison | seeds | " + " | ".join(tasks) + " | macro |",
                  "|---|---|---|" + "---|" * (len(tasks) + 1)]
        for comp in comps:
            cells = [f"{100 * comp['tasks'][t]['diff']:+.1f} [{100 * comp['tasks'][t]['low']:+.1f}, "
                     f"{100 * comp['tasks'][t]['high']:+.1f}]" for t in [*tasks, "macro"]]
            lines.append(f"| {comp['source_labels_per_task']} | {comp['comparison']} | {len(comp['seeds'])} | "
                         + " | ".join(cells) + " |")
    for bar in BARS:
        rows = bar_rows(results, bar)
        if rows:
            lines += ["", f"## The bar of {bar.title} (0 source labels, mean over seeds){suffix}", "",
                      f"Pass needs all of: {bar.conditions()}. Gap closed: (fused - target alone) / (expert - target "
                      "alone) on the source task; of labelled: the share of what the target reaches when trained on "
                      "every labelled source-task example of the pool (replay-tune, same steps), where measured.", "",
                      "| method | seeds | source task F1 (share of expert; gap closed) | null-source twin F1 | gap | "
                      "target task vs alone | vs twin | pass |", "|---|---|---|---|---|---|---|---|", *rows]
    lines += cost_table(results, suffix)
    lines += ["", f"## Every run{suffix}", "",
              "| run | " + " | ".join(f"{t} P / R / F1" for t in tasks) + " | train s | steps | peak MiB |",
              "|---|" + "---|" * (len(tasks) + 3)]
    for run in results["runs"]:
        cells = [f"{100 * headline(run['tasks'][t]):.1f} {names[t]}" if names[t] != "F1" else
                 " / ".join(f"{100 * run['tasks'][t][k]:.1f}" for k in ("precision", "recall", "f1")) for t in tasks]
        seconds = f"{run['train_seconds']:.0f}" + (" (resumed: the last part only)" if run.get("train_resumed") else "")
        lines.append(f"| {run['name']} | " + " | ".join(cells) + f" | {seconds} | {run.get('train_steps', '-')} | "
                     f"{run['train_peak_mib']:.0f} |")
    return lines


def cost_table(results: dict, suffix: str) -> list[str]:
    """Wall time, optimiser steps and peak memory of each row whose runs recorded their steps, beside one another:
    a fusion row beside the plain LoRA rows (replay-tune) of the table.  Seconds are the whole ``hf-fuse`` run's
    (a distill row's answer generation included); peak memory is the process's resident set."""
    rows = []
    for key, runs in sorted(groups(results["runs"], results["settings"]).items(), key=lambda kv: str(kv[0])):
        steps = [r["train_steps"] for r in runs if r.get("train_steps")]
        if not steps:
            continue
        seconds = mean_std([r["train_seconds"] for r in runs])[0]
        rows.append(f"| {label(key, results['settings'])} | {len(runs)} | {mean_std(steps)[0]:.0f} | {seconds:.0f} | "
                    f"{seconds / mean_std(steps)[0]:.1f} | {max(r['train_peak_mib'] for r in runs):.0f} |")
    if not rows:
        return []
    return ["", f"## Cost of each row (mean over its runs; replay-tune is plain LoRA){suffix}", "",
            "| run | runs | optimiser steps | wall s | s per step | peak MiB |", "|---|---|---|---|---|---|", *rows]


@dataclass(frozen=True)
class Bar:
    """A bar a method must clear at 0 source labels (means over seeds)."""

    title: str
    share: float  # of the expert's F1 on each source task
    max_std: float | None  # seed standard deviation there
    twin_gap: float  # the null-source twin at least this much lower there
    below_alone: float | None  # the target task at most this much below the target alone
    below_twin: float | None  # ... and at most this much below the twin
    seeds: int = 3
    kind: str = "prompts"  # which runs it judges: one source with its prompts, "data-free" runs, "two" or "three" sources

    def judges(self, results: dict, runs: list[dict]) -> bool:
        data_free, count = bool(runs[0].get("data_free")), len(results["source_tasks"])
        return {"prompts": not data_free and count == 1, "data-free": data_free,
                "two": count == 2 and not data_free, "three": count >= 3 and not data_free}[self.kind]

    def conditions(self) -> str:
        parts = [f"each source task at least {100 * self.share:.0f} % of its expert's score"]
        if self.max_std is not None:
            parts.append(f"a seed std of at most {100 * self.max_std:.0f} points there")
        parts.append(f"the null-source twin at least {100 * self.twin_gap:.0f} points lower there")
        limits = [f"{100 * self.below_alone:.0f} point below the target alone"] if self.below_alone is not None else []
        limits += [f"{100 * self.below_twin:.0f} below the twin"] if self.below_twin is not None else []
        parts.append(f"the target task at most {' and '.join(limits)}")
        parts.append(f"{self.seeds} seeds at least of both (seeds: the method's / its twin's)")
        return "; ".join(parts)


BARS = [Bar("the first transfer", 0.5, None, 0.2, 0.01, None),
        Bar("the second transfer, with the source task's unlabelled prompts", 0.8, 0.08, 0.2, 0.01, 0.02),
        Bar("the second transfer, data-free (5 seed prompts)", 0.5, None, 0.2, 0.01, 0.02, kind="data-free"),
        Bar("the second transfer, two experts in one plan", 0.6, None, 0.2, 0.01, 0.02, kind="two"),
        Bar("transfer breadth, data-free (5 seed prompts)", 0.8, 0.06, 0.2, None, 0.02, kind="data-free"),
        Bar("transfer breadth, with the source task's unlabelled prompts", 0.9, None, 0.2, None, 0.02),
        Bar("transfer breadth, three experts in one plan", 0.8, None, 0.2, None, 0.02, kind="three")]


def gap_closed(results: dict, runs: list[dict], task: str) -> float | None:
    """(fused - target alone) / (expert - target alone) on a source task: how much of what the expert adds arrives."""
    alone = next((headline(r["tasks"][task]) for r in results["runs"] if r["method"] == "target" and task in r["tasks"]), None)
    expert = results.get("experts", {}).get(task)
    if alone is None or expert is None or expert <= alone:
        return None
    return (mean_std([headline(r["tasks"][task]) for r in runs])[0] - alone) / (expert - alone)


def labelled_ceiling(results: dict, by_group: dict, steps, task: str) -> float | None:
    """The target trained on every labelled source-task example of the pool (replay-tune, same steps): what labels
    give at the same budget, mean over seeds."""
    runs = by_group.get((results["settings"]["pool"], "replay-tune", False, steps, None, None))
    return mean_std([headline(r["tasks"][task]) for r in runs])[0] if runs else None


def bar_rows(results: dict, bar: Bar = BARS[0]) -> list[str]:
    """Per method with a null-source twin, at 0 source labels: the conditions of ``bar``."""
    target_task, experts = results["target_task"], results.get("experts", {})
    alone = next((headline(r["tasks"][target_task]) for r in results["runs"] if r["method"] == "target"), None)
    by_group = groups(results["runs"], results["settings"])
    rows = []
    for key, runs in sorted(by_group.items(), key=lambda kv: str(kv[0])):
        labels, method, null, steps, prompts, variant = key
        twin = by_group.get((labels, method, True, steps, prompts, variant))
        if labels != 0 or null or not twin or alone is None or not bar.judges(results, runs):
            continue
        cells, ok = [], True
        for task in results["source_tasks"]:
            real, spread = mean_std([headline(r["tasks"][task]) for r in runs])
            noise = mean_std([headline(r["tasks"][task]) for r in twin])[0]
            share = real / experts[task] if experts.get(task) else 0.0
            ok &= share >= bar.share and real - noise >= bar.twin_gap and (bar.max_std is None or spread <= bar.max_std)
            closed = gap_closed(results, runs, task)
            ceiling = labelled_ceiling(results, by_group, steps, task)
            cells.append((f"{task} {100 * real:.1f} ± {100 * spread:.1f} ({100 * share:.0f} %; gap closed "
                          f"{'-' if closed is None else f'{round(100 * closed)} %'}"
                          + (f"; {100 * real / ceiling:.0f} % of labelled" if ceiling else "") + ")",
                          f"{100 * noise:.1f}", f"{100 * (real - noise):+.1f}"))
        own = mean_std([headline(r["tasks"][target_task]) for r in runs])[0]
        change = own - alone
        twin_change = own - mean_std([headline(r["tasks"][target_task]) for r in twin])[0]
        ok &= (bar.below_alone is None or change >= -bar.below_alone) and (bar.below_twin is None
                                                                           or twin_change >= -bar.below_twin)
        ok &= len(runs) >= bar.seeds and len(twin) >= bar.seeds
        rows.append(f"| {label(key, results['settings'])} | {len(runs)} / {len(twin)} | {'; '.join(c[0] for c in cells)} | "
                    f"{'; '.join(c[1] for c in cells)} | "
                    f"{'; '.join(c[2] for c in cells)} | {100 * change:+.1f} | {100 * twin_change:+.1f} | "
                    f"{'yes' if ok else 'no'} |")
    return rows


def write_json_and_report(path: Path, results: dict) -> None:
    """``results`` as ``path`` (``.json``) and rendered as the ``.md`` beside it."""
    write_text_atomic(path, json.dumps(results, indent=2) + "\n", force=True)
    write_text_atomic(path.with_suffix(".md"), render(results), force=True)


def write_report(work: Path, results: dict, publish: Path | None = None, name: str = "results") -> None:
    """``WORK/NAME.json`` and ``.md``; with ``publish`` (a published table's ``.json``), merged into it when it exists
    (``merge_into``: the runs of other machines and source tasks stay), else written there."""
    keep_counts(results)
    results["comparisons"] = comparisons(results)
    write_json_and_report(work / f"{name}.json", results)
    if publish and publish.exists():
        merge_into(work / f"{name}.json", publish)
    elif publish:
        publish.parent.mkdir(parents=True, exist_ok=True)
        write_json_and_report(publish, results)


def merge_into(fresh_file: Path, into: Path) -> None:
    """``fresh_file``'s results over those published in ``into`` (``.json``; its ``.md`` is rewritten beside it).
    The two may hold other source tasks (one source, two in one plan): the table then holds both sets, each
    compared and judged on its own."""
    fresh, published = json.loads(fresh_file.read_text()), json.loads(into.read_text())
    keep_counts(fresh)
    earlier = matching_results(published, fresh, also_free=("sources",))
    if not earlier:
        raise SystemExit(f"{into}: its mode or settings differ from {fresh_file}'s; nothing merged")
    sources = list(dict.fromkeys([*published["source_tasks"], *fresh["source_tasks"]]))
    # the intervals that cannot be computed again (evaluations of another machine): the fresh file's, then the table's
    kept = [{**c, "sources": list(sources_of(c, origin))} for origin in (fresh, published)
            for c in origin.get("comparisons", [])]
    merge_results(fresh, earlier)
    fresh["source_tasks"] = fresh["settings"]["sources"] = sources
    fresh["comparisons"] = comparisons(fresh)
    done = {(tuple(c["sources"]), c["comparison"]) for c in fresh["comparisons"]}
    rows = {label(key, fresh["settings"]) for key in groups(fresh["runs"], fresh["settings"])}
    for c in kept:  # (one whose row is gone, as under a renamed label, goes with it)
        if (key := (tuple(c["sources"]), c["comparison"])) not in done and c["comparison"].split(" - ")[0] in rows:
            fresh["comparisons"].append(c)
            done.add(key)
    write_json_and_report(into, fresh)


if __name__ == "__main__":
    if "--into" in sys.argv:
        merge_into(Path(sys.argv[1]), Path(sys.argv[sys.argv.index("--into") + 1]))
        sys.exit(0)
    folder = Path(sys.argv[1])
    publish = "--publish" in sys.argv
    stem = sys.argv[sys.argv.index("--publish") + 1] if publish and sys.argv[-1] != "--publish" else "cross_family"
    for found in sorted(folder.glob("results*.json")):  # results_<TASKS>.json: runs with other --sources
        write_report(folder, json.loads(found.read_text()), HERE / "results" / f"{stem}.json" if publish else None,
                     found.stem)
