"""``hf-eval harness``: score adapters with EleutherAI's lm-evaluation-harness, the field's own evaluator.

For experts whose task is not extraction (maths, code, multiple choice, anything with an lm-eval task): the
base model is loaded once (a registry name, a model folder or a ``.gguf`` file, through the same loader as every
other command) and each adapter is put on it with PEFT and handed to the harness's ``HFLM`` as a ready model;
tasks are the harness's own or the user's task YAML files (``--include-path``).  Output, as ``evaluate``'s:
``results.json`` (the harness's metrics per adapter), every scored sample as JSONL, ``report.html``, and each
fusion beside its null-source twin (``hf_eval.controls``): the per-sample difference of each metric the harness
averages, with a paired-bootstrap interval.

Task files may name Python functions with the ``!function`` YAML tag, which the harness imports and runs.  A
user's task folder is scanned first and refused when it does so, unless ``--trust-task-code`` says the code is
the user's own (as transformers' ``trust_remote_code``); the harness's built-in tasks are part of the library.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from pathlib import Path

import numpy as np

from hf_common.atomic import atomic_folder
from hf_common.errors import ConfigError, InputError

from .controls import identity, pairs
from .html import is_number

INSTALL = "pip install 'heterofusion[harness]'"
_FUNCTION_TAG = re.compile(r"!function\b")


def require_harness():
    """The harness's modules, or a one-line refusal that says how to install them."""
    try:
        import lm_eval
        from lm_eval import evaluator
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise ConfigError(f"hf-eval harness needs lm-evaluation-harness, which is not installed ({INSTALL})") from exc
    # it records the git commit of the working folder by running git, whose "fatal: not a git repository" lands on
    # our stderr outside a repository; the same lookup with git's complaint discarded
    evaluator.get_git_commit_hash = _git_hash
    return lm_eval, HFLM, TaskManager


def _git_hash() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def check_task_code(include_paths: list[Path], trust: bool) -> None:
    """Refuse task files that would make the harness import and run code, unless the user trusts them."""
    for folder in include_paths:
        if not folder.is_dir():
            raise InputError("--include-path: not a folder of task YAML files", folder)
        for path in sorted(folder.rglob("*.y*ml")):
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if _FUNCTION_TAG.search(line.split("#", 1)[0]) and not trust:
                    raise InputError(f"line {number} names Python code with a !function tag, which the harness would "
                                     "import and run; pass --trust-task-code if this code is your own", path)


def task_manager(include_paths: list[Path], tasks: list[str]):
    """The harness's task index with the user's folders; every asked-for task (or group or tag) known."""
    _, _, TaskManager = require_harness()
    manager = TaskManager(verbosity="ERROR", include_path=[str(p) for p in include_paths] or None)
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ConfigError(f"--tasks: unknown task {', '.join(map(repr, unknown))} ({len(known)} tasks known; a folder of "
                          "your own task YAML files goes in with --include-path)")
    return manager


def run_harness(model, tokenizer, adapters: dict[str, Path | None], tasks: list[str], manager, settings: dict,
                on_adapter=lambda index, name: None) -> tuple[dict, dict[tuple[str, str], list[dict]]]:
    """Every adapter through the harness on ``tasks``: the results document and the scored samples."""
    from peft import PeftModel

    lm_eval, HFLM, _ = require_harness()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # it warns that a ready model is not a name: expected here
    results = {"format": "heterofusion-harness", "version": 1, "settings": settings, "tasks": tasks, "adapters": {},
               "lm_eval_version": getattr(lm_eval, "__version__", None)}
    samples: dict[tuple[str, str], list[dict]] = {}
    for index, (name, adapter) in enumerate(adapters.items()):
        on_adapter(index, name)
        started = time.perf_counter()
        evaluated = (PeftModel.from_pretrained(model, adapter) if adapter else model).eval()
        lm = HFLM(pretrained=evaluated, tokenizer=tokenizer, batch_size=settings["batch_size"])
        for request in ("loglikelihood", "loglikelihood_rolling", "generate_until"):  # their bars off (their own option)
            setattr(lm, request, functools.partial(getattr(lm, request), disable_tqdm=True))
        out = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=settings["num_fewshot"], limit=settings["limit"],
                                      task_manager=manager, apply_chat_template=settings["apply_chat_template"],
                                      bootstrap_iters=settings["bootstrap_iters"], log_samples=True,
                                      random_seed=settings["seed"], numpy_random_seed=settings["seed"],
                                      torch_random_seed=settings["seed"], fewshot_random_seed=settings["seed"])
        if adapter:
            model = evaluated.unload()
        for task, rows in out.get("samples", {}).items():
            samples[name, task] = rows
        results["adapters"][name] = {"adapter": str(adapter) if adapter else None, "results": out["results"],
                                     "n_samples": out.get("n-samples", {}), "n_shot": out.get("n-shot", {}),
                                     "seconds": round(time.perf_counter() - started, 1)}
    results["differences"] = sample_differences({n: identity(p) for n, p in adapters.items()}, samples, settings["seed"])
    return results, samples


def sample_differences(identities: dict[str, dict], samples: dict[tuple[str, str], list[dict]], seed: int = 0) -> list[dict]:
    """Per fusion and its null-source twin, per task and per-sample metric: mean difference over the same documents
    and a 95 % paired-bootstrap interval (the harness's own stderr is per adapter, not of a difference)."""
    from scipy.stats import bootstrap

    out = []
    for name, twin in pairs(identities):
        by_task = {}
        for (who, task), rows in samples.items():
            if who != name or (twin, task) not in samples:
                continue
            theirs = {r["doc_id"]: r for r in samples[twin, task]}
            for metric in rows[0].get("metrics", []) if rows else []:
                paired = [(r[metric], theirs[r["doc_id"]][metric]) for r in rows
                          if r["doc_id"] in theirs and is_number(r.get(metric)) and is_number(theirs[r["doc_id"]].get(metric))]
                if not paired:
                    continue
                diff = np.array([a - b for a, b in paired], dtype=np.float64)
                low = high = float(diff.mean())
                if len(diff) > 1 and diff.std() > 0:
                    ci = bootstrap((diff,), np.mean, n_resamples=2000, confidence_level=0.95, method="percentile",
                                   random_state=np.random.default_rng(seed)).confidence_interval
                    low, high = float(ci.low), float(ci.high)
                by_task.setdefault(task, {})[metric] = {"diff": float(diff.mean()), "low": low, "high": high,
                                                        "n": len(paired)}
        if by_task:
            out.append({"adapter": name, "control": twin, "method": identities[name]["method"], "difference": by_task})
    return out


def write(output: Path, results: dict, samples: dict[tuple[str, str], list[dict]], force: bool) -> None:
    """The results folder, atomically: results.json, every scored sample as JSONL, report.html."""
    from .html import harness_report

    with atomic_folder(output, force=force, what="results folder") as tmp:
        for (name, task), rows in samples.items():
            (tmp / "samples" / name).mkdir(parents=True, exist_ok=True)
            with open(tmp / "samples" / name / f"{task}.jsonl", "w") as handle:
                handle.writelines(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
        (tmp / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        (tmp / "report.html").write_text(harness_report(results).render())
