"""``hf-eval``: evaluate adapters on held-out data, and build the baselines.

    hf-eval evaluate --base-model M --adapter target=DIR --adapter fused=DIR --data heldout.json -o results/
    hf-eval harness --base-model M --adapter fused=DIR --tasks arc_easy --include-path my_tasks/ -o results/
    hf-eval train-expert --base-model M --data train.json -o expert/
    hf-eval replay-tune --base-model M --adapter DIR --replay a.json --replay b.json --max-steps 90 -o tuned/
    hf-eval merge --base-model M --adapter A --adapter B --method ties -o merged/
    hf-eval null-source SRC_ADAPTER -o null/ --seed 0

Exit codes: 0 done, 2 bad input or usage (nothing written), 4 unexpected error (please report), 130 interrupted.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from hf_common import __version__
from hf_common.atomic import check_output_path
from hf_common.cli_support import (
    Group,
    check_json_target,
    errors_to_exit_codes,
    generated_options,
    shared_options,
    write_json,
)
from hf_common.config_file import config_option
from hf_common.console import Console, setup_logging
from hf_common.terms import public_name

from .support import card, check_adapters_fit, finish, is_main, load, process_console, quiet_libraries

COMMON = ("base_model", "device", "dtype", "force", "quiet", "debug")  # hf_common.cli_support.shared_options


def _training_options() -> list[click.Parameter]:
    """The training commands' options of the loop and the data, generated from their settings classes with hf-eval's
    defaults (one LoRA training: a pass over the data at 2e-4, micro-batches of 4, no gradient checkpointing)."""
    from hf_common.settings import click_options
    from hf_runtime.settings import ReplayConfig, TrainSettings

    return click_options([TrainSettings, ReplayConfig], only=(
        "epochs", "max_steps", "batch_size", "grad_accum", "lr", "cutoff_len", "max_examples_per_file", "drop_history",
        "seed", "gradient_checkpointing", "loss_average", "group_by_length", "checkpoint_every"), defaults={
        "epochs": 1.0, "batch_size": 4, "grad_accum": 1, "lr": 2e-4, "gradient_checkpointing": False})


def training_options(func):
    """The options of ``train-expert`` and ``replay-tune``: the shared ones, then the training loop's."""
    func = shared_options("checkpoint_dir", "resume", "report_to", "tracker_dir")(func)
    func = generated_options(_training_options())(func)
    return shared_options(*COMMON, "base_model_id", force="Replace an existing output folder.")(func)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hf-eval")
def main() -> None:
    """Evaluate adapters and build baselines (experts, replay-tune, homogeneous merges)."""


@main.command()
@config_option
@shared_options(*COMMON, force="Replace an existing output folder.")
@click.option("--adapter", "adapters", multiple=True, metavar="NAME=DIR",
              help="An adapter to evaluate (repeat); none evaluates the base model alone.")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Held-out file (replay format); each file is one task.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Results folder.")
@click.option("--max-new-tokens", type=int, default=64, show_default=True, help="Cap on generated tokens.")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Prompts per generation batch.")
@click.option("--max-examples", type=int, default=None, help="Evaluate only the first N examples of each file.")
@click.option("--drop-history", is_flag=True, help="Zero-shot prompts: drop earlier turns.")
@click.option("--metric", type=click.Choice(["auto", "set", "relation", "exact"]), default="auto", show_default=True,
              help="How answers are scored (auto: from the instruction and gold answers).")
@click.option("--json", "json_path", metavar="PATH|-", help="Also write the scores as JSON ('-': stdout), as hf-analyze and "
              "hf-fuse do.")
@click.option("--update-cards", is_flag=True,
              help="Write the scores into each evaluated adapter's model card (README.md), replacing earlier ones.")
def evaluate(adapters, data, output, **options) -> None:
    """Generate answers (greedy) for held-out data and score them."""
    from .evaluate import evaluate_adapters, render

    o = options
    base_model, device, dtype, force, quiet, debug = (o[k] for k in COMMON)
    max_new_tokens, batch_size, max_examples = o["max_new_tokens"], o["batch_size"], o["max_examples"]
    drop_history, metric, json_path, update_cards = o["drop_history"], o["metric"], o["json_path"], o["update_cards"]

    console = process_console(quiet, debug, report_to_stderr=json_path == "-")
    with errors_to_exit_codes(console):
        quiet_libraries(quiet)
        setup_logging(debug)
        from .generate import EvalConfig

        check_json_target(json_path, force)

        config = EvalConfig(max_new_tokens=max_new_tokens, batch_size=batch_size, max_examples=max_examples,
                            drop_history=drop_history, metric=metric)
        named = _parse_adapters(adapters)
        check_output_path(output, force, "results folder")
        if update_cards:  # every card can be written, before the results are: a refusal leaves nothing behind
            from hf_common.model_card import CARD_NAME

            for path in (p for p in named.values() if p):
                check_output_path(path / CARD_NAME, True, "model card", file=True)
        from hf_runtime.data import check_replay_files

        check_replay_files(list(data))
        warnings = check_adapters_fit(base_model, named)
        _, model, tokenizer, _ = load(base_model, device, dtype)
        results = evaluate_adapters(model, tokenizer, named, list(data), config, output, force=force, console=console,
                                    warnings=warnings)
        render(results, console)
        if is_main():
            write_json(json_path, results, force=force)
        if update_cards and is_main():
            from hf_common.model_card import update_scores

            # a card travels to a Hub: files and folders by name, never by this machine's paths
            note = (f"Measured on {', '.join(public_name(str(d)) for d in data)} with {public_name(str(base_model))}, "
                    f"greedy, at most {max_new_tokens} new tokens"
                    f"{f', first {max_examples} examples per file' if max_examples else ''}; details in `hf-eval evaluate`'s "
                    f"results folder ({public_name(str(output))}).")
            for name, path in named.items():
                if path:
                    update_scores(path, results["adapters"][name]["tasks"], note)
        console.success(f"results in {output}")
        finish()


@main.command()
@config_option
@shared_options(*COMMON, force="Replace an existing output folder.")
@click.option("--adapter", "adapters", multiple=True, metavar="NAME=DIR",
              help="An adapter to evaluate (repeat); none evaluates the base model alone.")
@click.option("--tasks", "tasks", multiple=True, required=True, metavar="NAME[,NAME...]",
              help="lm-evaluation-harness tasks, groups or tags (repeat or comma-separate).")
@click.option("--include-path", "include_paths", multiple=True, type=click.Path(path_type=Path),
              help="A folder of your own task YAML files (repeat). Their data_files paths are read from the working "
                   "folder, as the harness does.")
@click.option("--trust-task-code", is_flag=True,
              help="Let task YAML files of --include-path import and run Python code (!function tags); refused without.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Results folder.")
@click.option("--num-fewshot", type=click.IntRange(0), default=None, help="Examples in each prompt (default: the task's).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Score only the first N documents of each task.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True, help="Requests per forward pass.")
@click.option("--apply-chat-template", is_flag=True,
              help="Wrap prompts in the tokenizer's chat template (as the adapters were trained, for chat models).")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
              help="Seed of the harness's few-shot sampling and of its random generators.")
@click.option("--bootstrap-iters", type=click.IntRange(0), default=1000, show_default=True,
              help="Resamples of the harness's standard errors (0: none).")
@click.option("--json", "json_path", metavar="PATH|-", help="Also write the results as JSON ('-': stdout).")
def harness(adapters, tasks, include_paths, output, **options) -> None:
    """Score adapters with lm-evaluation-harness (pip install 'heterofusion[harness]'): its tasks or your own YAML
    files, each adapter on the base model loaded once; each fusion beside its null-source twin."""
    o = options
    base_model, device, dtype, force, quiet, debug = (o[k] for k in COMMON)
    trust_task_code, json_path = o["trust_task_code"], o["json_path"]
    os.environ.setdefault("TQDM_DISABLE", "1")  # the harness's per-request bars (read when tqdm is first imported)
    console = process_console(quiet, debug, report_to_stderr=json_path == "-")
    with errors_to_exit_codes(console):
        from .harness import check_task_code, require_harness, run_harness, task_manager, write

        require_harness()
        quiet_libraries(quiet)
        setup_logging(debug)
        from hf_common.errors import ConfigError
        from hf_runtime.distributed import processes

        if processes().world > 1:
            raise ConfigError("hf-eval harness runs in one process (the harness takes a ready model only there)")
        check_json_target(json_path, force)
        check_output_path(output, force, "results folder")
        names = [t.strip() for value in tasks for t in value.split(",") if t.strip()]
        check_task_code(list(include_paths), trust_task_code)
        named = _parse_adapters(adapters)
        warnings = check_adapters_fit(base_model, named)
        manager = task_manager(list(include_paths), names)
        _, model, tokenizer, _ = load(base_model, device, dtype)
        settings = {"base_model": str(base_model), **{k: o[k] for k in ("num_fewshot", "limit", "batch_size",
                                                                        "apply_chat_template", "seed", "bootstrap_iters")},
                    "include_paths": [str(p.resolve()) for p in include_paths]}
        results, samples = run_harness(model, tokenizer, named, names, manager, settings,
                                       lambda i, name: console.info(f"adapter {i + 1}/{len(named)}: {name}"))
        results["warnings"] = warnings
        write(output, results, samples, force)
        _render_harness(results, console)
        write_json(json_path, results, force=force)
        console.success(f"results in {output}")


def _render_harness(results: dict, console: Console) -> None:
    from .html import metric_rows

    columns, rows = metric_rows(results)
    console.table("lm-evaluation-harness metrics (± standard error)", ["adapter", *columns], rows)
    if results["differences"]:
        console.table("From the source experts: a fusion minus its null-source twin (95 % interval)",
                      ["fusion - twin", "task", "metric", "difference"],
                      [[f"{d['adapter']} - {d['control']}", task, metric, f"{v['diff']:+.3f} [{v['low']:+.3f}, "
                        f"{v['high']:+.3f}]"] for d in results["differences"] for task, metrics in d["difference"].items()
                       for metric, v in metrics.items()])


def _parse_adapters(values: tuple[str, ...]) -> dict[str, Path]:
    from hf_common.errors import ConfigError

    named: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = Path(value).name, value
        if name in named:
            raise ConfigError(f"--adapter name {name!r} is used twice")
        if not Path(path).is_dir():
            from hf_common.errors import FileAccessError

            raise FileAccessError("no such adapter folder", path)
        named[name] = Path(path)
    return named or {"base": None}


@main.command("train-expert")
@config_option
@training_options
@click.option("--data", "data", multiple=True, required=True, type=click.Path(path_type=Path), help="Training data.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Adapter folder to write.")
@click.option("--rank", type=int, default=8, show_default=True, help="LoRA rank.")
@click.option("--alpha", type=float, default=16, show_default=True, help="LoRA alpha.")
def train_expert(data, rank, alpha, **options) -> None:
    """Train a LoRA expert with PEFT (every projection the family registry knows: all seven of a Llama-style model)."""
    from .training import AdapterTraining

    AdapterTraining("train-expert", "LoRA expert", "Trained by `hf-eval train-expert` (PEFT LoRA on every projection the "
                    "family registry knows: all seven of a Llama-style model).", ["expert"], list(data), options, rank=rank,
                    alpha=alpha).main()


@main.command("replay-tune")
@config_option
@training_options
@click.option("--adapter", required=True, type=click.Path(path_type=Path), help="The target adapter to tune further.")
@click.option("--replay", "replay", multiple=True, required=True, type=click.Path(path_type=Path), help="Replay data.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Adapter folder to write.")
def replay_tune(adapter, replay, **options) -> None:
    """Train the target adapter further on the replay mix (the paper's same-backbone baseline)."""
    from .training import AdapterTraining

    AdapterTraining("replay-tune", "Replay-tuned adapter (baseline)", "The target adapter trained further on replay data by "
                    "`hf-eval replay-tune`: the baseline a fusion must beat.", ["baseline", "replay-tune"], list(replay),
                    options, adapter=adapter).main()


@main.command()
@config_option
@shared_options(*COMMON, "base_model_id", force="Replace an existing output folder.")
@click.option("--adapter", "adapters", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Adapters of ONE base model to merge (repeat).")
@click.option("--weight", "weights", multiple=True, type=float, help="Weight per adapter (default: 1 each).")
@click.option("--method", type=click.Choice(["linear", "ties", "dare_ties"]), default="linear", show_default=True,
              help="PEFT add_weighted_adapter combination type.")
@click.option("--density", type=float, default=0.5, show_default=True, help="Kept fraction for TIES / DARE.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Adapter folder to write.")
def merge(adapters, weights, method, density, output, **options) -> None:
    """Homogeneous merge through PEFT (refused when the adapters' base models differ)."""
    base_model, device, dtype, force, quiet, debug = (options[k] for k in COMMON)
    base_model_id = options["base_model_id"]
    console = process_console(quiet, debug)
    with errors_to_exit_codes(console):
        quiet_libraries(quiet)
        setup_logging(debug)
        check_output_path(output, force, "output folder")
        from .baselines import check_homogeneous, save_adapter
        from .baselines import merge as merge_adapters

        check_homogeneous(list(adapters))  # before loading any weights
        ref, model, _, _ = load(base_model, device, dtype, base_model_id)
        peft_model = merge_adapters(model, list(adapters), list(weights) or [1.0] * len(adapters), method, density)
        if is_main():
            save_adapter(peft_model, output, force=force, base_model_name=ref.adapter_base_name, adapter_name="merged",
                         card_text=card(f"Merged adapter ({method})", ref, f"PEFT `add_weighted_adapter` ({method}) of "
                                        "adapters of one base model, by `hf-eval merge`.",
                                        {"adapters": [public_name(str(a)) for a in adapters],
                                         "weights": list(weights) or "1 each", "density": density}, ["merge", method], *adapters))
        console.success(f"{method} merge of {len(adapters)} adapters written to {output}")
        finish()


@main.command("null-source")
@config_option
@click.argument("source", type=click.Path(path_type=Path), metavar="SRC_ADAPTER")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Adapter folder to write.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed of the noise (0 to 2^32-1).")
@shared_options("force", "quiet", "debug", force="Replace an existing output folder.")
def null_source(source, output, seed, force, quiet, debug) -> None:
    """The null-source control of a source expert: same config, keys, shapes and dtypes, every tensor replaced
    by Gaussian noise of that tensor's Frobenius norm.  Fuse it in place of SRC_ADAPTER: what that run still
    gains came from the replay data, not from the expert's knowledge.  Needs no model and no torch."""
    from .null_source import write_null_source

    console = Console(quiet=quiet, debug=debug)
    with errors_to_exit_codes(console):
        setup_logging(debug)
        check_output_path(output, force, "output folder")
        summary = write_null_source(source, output, seed=seed, force=force)
        console.success(f"null-source of {source} (seed {seed}, {summary['tensors']} tensors) written to {output}")




