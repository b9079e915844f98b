"""``hf-eval``: evaluate adapters on held-out data, and build the baselines.

    hf-eval evaluate --base-model M --adapter target=DIR --adapter fused=DIR --data heldout.json -o results/
    hf-eval train-expert --base-model M --data train.json -o expert/
    hf-eval replay-tune --base-model M --adapter DIR --replay a.json --replay b.json --max-steps 90 -o tuned/
    hf-eval merge --base-model M --adapter A --adapter B --method ties -o merged/
    hf-eval null-source SRC_ADAPTER -o null/ --seed 0

Exit codes: 0 done, 2 bad input or usage (nothing written), 4 unexpected error (please report), 130 interrupted.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import click

from hf_common import __version__
from hf_common.atomic import check_output_path
from hf_common.cli_support import check_json_target, errors_to_exit_codes, write_json
from hf_common.console import Console, setup_logging

COMMON = [
    click.option("--base-model", required=True, type=click.Path(path_type=Path), metavar="PATH",
                 help="Hugging Face model folder, .gguf file, or 'smollm2' / 'gemma3' for the registry-installed models."),
    click.option("--device", default=None, help="cuda, cpu... (default: CUDA if available)."),
    click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
                 help="Model dtype (default: bfloat16 on GPU, float32 on CPU)."),
    click.option("--force", is_flag=True, help="Replace an existing output folder."),
    click.option("-q", "--quiet", is_flag=True, help="Print only errors."),
    click.option("--debug", is_flag=True, help="Show tracebacks and debug logging."),
]
TRAINING = [
    click.option("--epochs", type=float, default=1.0, show_default=True, help="Passes over the data."),
    click.option("--max-steps", type=int, default=None, help="Optimiser steps (overrides --epochs)."),
    click.option("--batch-size", type=int, default=4, show_default=True, help="Examples per micro-batch."),
    click.option("--grad-accum", type=int, default=1, show_default=True, help="Micro-batches per optimiser step."),
    click.option("--lr", type=float, default=2e-4, show_default=True, help="AdamW learning rate (cosine schedule)."),
    click.option("--cutoff-len", type=int, default=1024, show_default=True, help="Token cut-off of an example."),
    click.option("--max-examples-per-file", type=int, default=None, help="Cap on examples per data file."),
    click.option("--drop-history", is_flag=True, help="Zero-shot prompts: drop earlier turns."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of data order and initialisation."),
    click.option("--gradient-checkpointing", is_flag=True, help="Recompute activations in backward."),
    click.option("--report-to", type=click.Choice(["none", "tensorboard", "wandb"]), default="none", show_default=True,
                 help="Log every optimiser step to TensorBoard event files or an offline W&B run (Accelerate's trackers)."),
    click.option("--tracker-dir", type=click.Path(path_type=Path), default=None,
                 help="Where the tracker writes (default: OUT_DIR.runs beside the output)."),
]


def _options(options):
    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _quiet_libraries(quiet: bool) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    if quiet:
        from hf_fuse.model import quiet_progress_bars

        quiet_progress_bars()


def _load(base_model: Path, device: str | None, dtype: str | None):
    from hf_fuse.distributed import device_for
    from hf_fuse.model import load_model_and_tokenizer, pick_device, pick_dtype, resolve_base_model

    ref = resolve_base_model(base_model)
    torch_device = pick_device(device_for(device))
    model, tokenizer = load_model_and_tokenizer(ref, torch_device, pick_dtype(dtype, torch_device))
    return ref, model, tokenizer, torch_device


def _console(quiet: bool, debug: bool, report_to_stderr: bool = False) -> Console:
    from hf_fuse.distributed import process_console

    return process_console(quiet, debug, report_to_stderr)


def _finish() -> None:
    from hf_fuse.distributed import finish

    finish()


def _is_main() -> bool:
    from hf_fuse.distributed import processes

    return processes().is_main


def _train_settings(epochs, max_steps, batch_size, grad_accum, lr, seed, gradient_checkpointing):
    """Data parallel: --grad-accum counts each process's micro-batches; the settings count the whole step's."""
    from hf_fuse.distributed import per_step
    from hf_fuse.train import TrainSettings

    return per_step(TrainSettings(epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
                         seed=seed, gradient_checkpointing=gradient_checkpointing))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hf-eval")
def main() -> None:
    """Evaluate adapters and build baselines (experts, replay-tune, homogeneous merges)."""


@main.command()
@_options(COMMON)
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
def evaluate(base_model, device, dtype, force, quiet, debug, adapters, data, output, max_new_tokens, batch_size, max_examples,
             drop_history, metric, json_path, update_cards) -> None:
    """Generate answers (greedy) for held-out data and score them."""
    from .evaluate import evaluate_adapters, render

    console = _console(quiet, debug, report_to_stderr=json_path == "-")
    with errors_to_exit_codes(console):
        _quiet_libraries(quiet)
        setup_logging(debug)
        from .generate import EvalConfig

        check_json_target(json_path, force)

        config = EvalConfig(max_new_tokens=max_new_tokens, batch_size=batch_size, max_examples=max_examples,
                            drop_history=drop_history, metric=metric)
        named = _parse_adapters(adapters)
        check_output_path(output, force, "results folder")
        from hf_fuse.data import check_replay_files

        check_replay_files(list(data))
        _check_adapters_fit(base_model, named)
        _, model, tokenizer, _ = _load(base_model, device, dtype)
        results = evaluate_adapters(model, tokenizer, named, list(data), config, output, force=force, console=console)
        render(results, console)
        if _is_main():
            write_json(json_path, results, force=force)
        if update_cards and _is_main():
            from hf_common.model_card import update_scores

            note = (f"Measured on {', '.join(str(d) for d in data)} with {base_model}, greedy, at most {max_new_tokens} new "
                    f"tokens{f', first {max_examples} examples per file' if max_examples else ''}; details in {output}.")
            for name, path in named.items():
                if path:
                    update_scores(path, results["adapters"][name]["tasks"], note)
        console.success(f"results in {output}")
        _finish()


def _check_adapters_fit(base_model: Path, named: dict[str, Path | None]) -> None:
    """Every adapter's modules exist in the base model with its shapes (meta device: seconds, before any load)."""
    from hf_common.adapter import load_adapter
    from hf_fuse.model import check_fit, load_config, resolve_base_model

    ref = resolve_base_model(base_model)
    config = load_config(ref)
    for name, path in named.items():
        if path is not None:
            check_fit(config, None, ref, tensors=load_adapter(path).tensors, what=f"adapter {name} ({path})")


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
@_options(COMMON + TRAINING)
@click.option("--data", "data", multiple=True, required=True, type=click.Path(path_type=Path), help="Training data.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Adapter folder to write.")
@click.option("--rank", type=int, default=8, show_default=True, help="LoRA rank.")
@click.option("--alpha", type=float, default=16, show_default=True, help="LoRA alpha.")
def train_expert(base_model, device, dtype, force, quiet, debug, epochs, max_steps, batch_size, grad_accum, lr, cutoff_len,
                 max_examples_per_file, drop_history, seed, gradient_checkpointing, report_to, tracker_dir, data, output, rank,
                 alpha) -> None:
    """Train a LoRA expert (all seven projections) with PEFT."""
    console = _console(quiet, debug)
    with errors_to_exit_codes(console):
        _quiet_libraries(quiet)
        setup_logging(debug)
        check_output_path(output, force, "output folder")
        tracking = _tracking(report_to, tracker_dir, output, "train-expert", locals())
        import torch

        from hf_fuse.data import ReplayConfig, load_replay

        from .baselines import new_lora, save_adapter

        settings = _train_settings(epochs, max_steps, batch_size, grad_accum, lr, seed, gradient_checkpointing)
        ref, model, tokenizer, torch_device = _load(base_model, device, dtype)
        examples = load_replay(list(data), tokenizer, ReplayConfig(cutoff_len=cutoff_len, seed=seed, drop_history=drop_history,
                                                                   max_examples_per_file=max_examples_per_file)).examples
        torch.manual_seed(seed)
        peft_model = new_lora(model, rank, alpha)
        history = _train_with_progress(console, peft_model, examples, tokenizer, settings, torch_device, tracking)
        if _is_main():
            save_adapter(peft_model, output, force=force, base_model_name=ref.label, card_text=_card(
                "LoRA expert", ref.label, "Trained by `hf-eval train-expert` (PEFT LoRA on all seven projections).",
                {"data": [str(d) for d in data], "rank / alpha": f"{rank} / {alpha}", "settings": _settings_line(settings),
                 "loss": f"{history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}"}, ["expert"]))
        console.success(f"expert written to {output} (loss {history[0]['loss']:.4f} -> {history[-1]['loss']:.4f})")
        _finish()


@main.command("replay-tune")
@_options(COMMON + TRAINING)
@click.option("--adapter", required=True, type=click.Path(path_type=Path), help="The target adapter to tune further.")
@click.option("--replay", "replay", multiple=True, required=True, type=click.Path(path_type=Path), help="Replay data.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Adapter folder to write.")
def replay_tune(base_model, device, dtype, force, quiet, debug, epochs, max_steps, batch_size, grad_accum, lr, cutoff_len,
                max_examples_per_file, drop_history, seed, gradient_checkpointing, report_to, tracker_dir, adapter, replay,
                output) -> None:
    """Train the target adapter further on the replay mix (the paper's same-backbone baseline)."""
    console = _console(quiet, debug)
    with errors_to_exit_codes(console):
        _quiet_libraries(quiet)
        setup_logging(debug)
        check_output_path(output, force, "output folder")
        tracking = _tracking(report_to, tracker_dir, output, "replay-tune", locals())
        load_target = _parse_adapters((str(adapter),))
        from hf_fuse.data import ReplayConfig, check_replay_files, load_replay

        from .baselines import check_adapter, save_adapter, trainable_from

        check_adapter(adapter)  # before any model loads
        check_replay_files(list(replay))

        settings = _train_settings(epochs, max_steps, batch_size, grad_accum, lr, seed, gradient_checkpointing)
        ref, model, tokenizer, torch_device = _load(base_model, device, dtype)
        examples = load_replay(list(replay), tokenizer, ReplayConfig(cutoff_len=cutoff_len, seed=seed, drop_history=drop_history,
                                                                     max_examples_per_file=max_examples_per_file)).examples
        peft_model = trainable_from(model, next(iter(load_target.values())))
        history = _train_with_progress(console, peft_model, examples, tokenizer, settings, torch_device, tracking)
        if _is_main():
            save_adapter(peft_model, output, force=force, base_model_name=ref.label, card_text=_card(
                "Replay-tuned adapter (baseline)", ref.label,
                "The target adapter trained further on replay data by `hf-eval replay-tune`: the baseline a fusion must beat.",
                {"target adapter": str(adapter), "replay": [str(r) for r in replay], "settings": _settings_line(settings),
                 "loss": f"{history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}"}, ["baseline", "replay-tune"], adapter))
        console.success(f"replay-tuned adapter written to {output}")
        _finish()


@main.command()
@_options(COMMON)
@click.option("--adapter", "adapters", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Adapters of ONE base model to merge (repeat).")
@click.option("--weight", "weights", multiple=True, type=float, help="Weight per adapter (default: 1 each).")
@click.option("--method", type=click.Choice(["linear", "ties", "dare_ties"]), default="linear", show_default=True,
              help="PEFT add_weighted_adapter combination type.")
@click.option("--density", type=float, default=0.5, show_default=True, help="Kept fraction for TIES / DARE.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Adapter folder to write.")
def merge(base_model, device, dtype, force, quiet, debug, adapters, weights, method, density, output) -> None:
    """Homogeneous merge through PEFT (refused when the adapters' base models differ)."""
    console = _console(quiet, debug)
    with errors_to_exit_codes(console):
        _quiet_libraries(quiet)
        setup_logging(debug)
        check_output_path(output, force, "output folder")
        from .baselines import check_homogeneous, save_adapter
        from .baselines import merge as merge_adapters

        check_homogeneous(list(adapters))  # before loading any weights
        ref, model, _, _ = _load(base_model, device, dtype)
        peft_model = merge_adapters(model, list(adapters), list(weights) or [1.0] * len(adapters), method, density)
        if _is_main():
            save_adapter(peft_model, output, force=force, base_model_name=ref.label, adapter_name="merged", card_text=_card(
                f"Merged adapter ({method})", ref.label, f"PEFT `add_weighted_adapter` ({method}) of adapters of one base model, "
                "by `hf-eval merge`.", {"adapters": [str(a) for a in adapters], "weights": list(weights) or "1 each",
                                       "density": density}, ["merge", method], *adapters))
        console.success(f"{method} merge of {len(adapters)} adapters written to {output}")
        _finish()


@main.command("null-source")
@click.argument("source", type=click.Path(path_type=Path), metavar="SRC_ADAPTER")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Adapter folder to write.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
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


def _card(title, base_model, how, details, tags, *inputs) -> str:
    from hf_common.model_card import card, license_of

    return card(title=title, base_model=base_model, how=how, details=details, tags=tags,
                license=license_of(*[Path(i) for i in inputs]))


def _settings_line(settings) -> str:
    length = f"{settings.max_steps} optimiser steps" if settings.max_steps is not None else f"{settings.epochs:g} epochs"
    return f"lr {settings.lr}, {length}, batch {settings.batch_size} x {settings.grad_accum}, seed {settings.seed}"


def _tracking(report_to: str, tracker_dir: Path | None, output: Path, command: str, options: dict) -> tuple:
    """What ``_train_with_progress`` needs to open the tracker, checked before any model loads."""
    from hf_fuse.trackers import check_report_to

    check_report_to(report_to)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()
              if k not in ("console", "force", "quiet", "debug", "report_to", "tracker_dir")}
    return report_to, Path(tracker_dir or output.with_name(output.name + ".runs")), f"{command}-{output.name}", config


def _train_with_progress(console, peft_model, examples, tokenizer, settings, device, tracking):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hf_fuse.lora import train_lora
    from hf_fuse.trackers import StepTracker

    with StepTracker(*tracking) as tracker, Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(), console=console.err, disable=console.quiet) as progress:
        task = progress.add_task("", total=None, loss="")

        def on_step(record, total):
            progress.update(task, total=total, completed=record["step"], loss=f"loss {record['loss']:.4f}")
            tracker.step(record)

        return train_lora(peft_model, examples, tokenizer.pad_token_id, settings, device, on_step)

