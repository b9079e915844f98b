"""``hf-fuse``: train the transfer network on replay data and export one fused PEFT adapter.

Exit codes: 0 fused, 2 bad input or usage (nothing written), 3 training diverged
(non-finite loss; the last good checkpoint is kept), 4 unexpected error (please report), 130 interrupted
(checkpoint saved; ``--resume`` continues from it).

The options of the fusion methods are not written here: each method's settings classes declare them
(``hf_common.settings``), and :class:`FuseCommand` adds them from the registry (``hf_fuse.methods``) whenever the
command's parameters are read, so a method added as one file has its options, its config-file keys and its
``--method`` choice without an edit here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

import click

from hf_common import __version__
from hf_common.cli_support import Command, check_json_target, errors_to_exit_codes, library_environment, write_json
from hf_common.config_file import config_option, dump, resolved_config
from hf_common.console import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_OK, setup_logging


def _registry():
    from . import methods

    return methods


class FuseCommand(Command):
    """``hf-fuse``: the common options written below, then every registered method's options."""

    _own: list[click.Parameter]
    _built: tuple[tuple, list[click.Parameter]] | None = None

    @property
    def params(self) -> list[click.Parameter]:
        """The command's own parameters, ``--method`` and every registered method's options: one list (click
        relies on the objects' identity) until the registry changes."""
        registry = _registry()
        key = tuple(registry.METHODS.items())
        if self._built is None or self._built[0] != key:
            self._built = (key, [*self._own, *_method_options(registry)])
        return self._built[1]

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._own, self._built = value, None


def _method_options(registry) -> list[click.Parameter]:
    from hf_common.settings import click_options

    method_option = click.Option(["--method"], type=click.Choice(list(registry.METHODS)), default="hypernet",
                                 show_default=True, help="Fusion method: " + "; ".join(
                                     f"{name}: {m.help}" for name, m in registry.METHODS.items()) + ".")
    classes = dict.fromkeys(cls for method in registry.METHODS.values() for cls in method.settings_classes)
    return [method_option, *click_options(classes, _flag_owners(registry))]


def _flags(method, sections: set[str] | None = None) -> dict[str, object]:
    """``method``'s option specs (``hf_common.settings.Flag``) by flag, of the given settings sections (default: all)."""
    from hf_common.settings import flags

    return {spec.flag: spec for cls in method.settings_classes if sections is None or cls.section in sections
            for _, spec in flags(cls)}


def _flag_owners(registry) -> dict[str, list[str]]:
    """Every method option's flag, with the methods that declare it."""
    owners: dict[str, list[str]] = {}
    for method in registry.METHODS.values():
        for flag in _flags(method):
            owners.setdefault(flag, []).append(method.name)
    return owners


@click.command(cls=FuseCommand, context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.version_option(__version__, prog_name="hf-fuse")
@click.argument("plans", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="PLAN.h5...")
@click.option("--base-model", required=True, type=click.Path(path_type=Path), metavar="PATH",
              help="Target base model: a Hugging Face model folder, a .gguf file, a folder with one .gguf, or smollm2 / gemma3.")
@click.option("--replay", "replay", multiple=True, required=True, type=click.Path(path_type=Path), metavar="DATA",
              help="Replay data (Alpaca JSON/JSONL or chat 'messages'); repeat to mix several files.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), metavar="OUT_DIR",
              help="Folder for the fused PEFT adapter (must be new unless --force).")
@click.option("--preset", type=click.Choice(["default", "paper"]), default="default", show_default=True,
              help="paper: the authors' released code where the paper is silent (xavier init, weight decay 0.01, no "
                   "clipping, warm-up rounded down, alpha reset per task); flags given explicitly still win.")
@click.option("--weight-decay", type=float, default=None, help="AdamW weight decay (default 0; paper preset 0.01).")
@click.option("--max-grad-norm", type=float, default=None, help="Gradient clipping norm, 0 = off (default 1; paper preset 0).")
@click.option("--warmup-rounding", type=click.Choice(["up", "down"]), default=None,
              help="Warm-up steps rounded up (default) or down (paper preset).")
@click.option("--optimizer", type=click.Choice(["adamw", "adafactor"]), default="adamw", show_default=True,
              help="adamw (paper), or adafactor: factored second moments and no first moment, a fraction of AdamW's "
                   "optimiser memory (see README: the HyperNet's memory).")
@click.option("--step-in-backward", is_flag=True,
              help="Update each HyperNet parameter as soon as its gradient is complete and free that gradient, so the "
                   "HyperNets' gradients (3 GB at paper sizes) never exist at once; with clipping on, a second HyperNet "
                   "backward measures the norm first. HyperNet training only (see README: the HyperNet's memory).")
@click.option("--loss-average", type=click.Choice(["micro-batch", "token"]), default="micro-batch", show_default=True,
              help="How a step's loss averages its micro-batches: each micro-batch's mean alike, or every answer token "
                   "of the step alike (as transformers' Trainer and TRL do).")
@click.option("--group-by-length", is_flag=True,
              help="Micro-batches of examples of similar length (sorted within groups of 16 micro-batches "
                   "of each epoch's shuffled order): less padding, less time; the same examples "
                   "per epoch, in another order.")
@click.option("--epochs", type=float, default=None,
              help="Passes over the replay mix (default: the method's, see --method; else 3).")
@click.option("--max-steps", type=int, default=None, help="Optimiser steps (overrides --epochs); 0 exports without training.")
@click.option("--batch-size", type=int, default=1, show_default=True, help="Examples per micro-batch.")
@click.option("--grad-accum", type=int, default=8, show_default=True, help="Micro-batches per optimiser step.")
@click.option("--lr", type=float, default=None,
              help="AdamW learning rate, cosine schedule (default: the method's, see --method; else 5e-5).")
@click.option("--warmup-ratio", type=float, default=0.05, show_default=True, help="Warm-up share of the optimiser steps.")
@click.option("--cutoff-len", type=int, default=1024, show_default=True, help="Token cut-off of a replay example.")
@click.option("--max-examples-per-file", type=int, default=None, help="Cap on examples taken from each replay file.")
@click.option("--drop-history", is_flag=True, help="Drop earlier turns ('history'): zero-shot prompts.")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=True, show_default=True,
              help="Recompute activations in the backward pass (less memory, more time).")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
              help="Seed of initialisation, data order and RDM draws (0 to 2^31-1).")
@click.option("--device", default=None, help="cuda, cuda:1, cpu... (default: CUDA if available).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
              help="Base model dtype (default: bfloat16 on GPU, float32 on CPU).")
@click.option("--checkpoint-every", type=int, default=50, show_default=True, help="Optimiser steps between checkpoints.")
@click.option("--checkpoint-dir", type=click.Path(path_type=Path), default=None,
              help="Where checkpoints go (default: OUT_DIR.ckpt beside the output).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint (written every --checkpoint-every steps "
              "and on Ctrl-C) of a training method.")
@click.option("--json", "json_path", metavar="PATH|-", help="Also write the fusion report as JSON ('-': stdout).")
@click.option("--log-file", type=click.Path(path_type=Path), default=None,
              help="Training log (default: OUT_DIR.log beside the output).")
@click.option("--shard-base-model", is_flag=True,
              help="With several processes: shard the frozen base model across them (FSDP2), for a target that does "
                   "not fit on one device; an Accelerate FSDP config (accelerate launch --config_file) does the same.")
@click.option("--report-to", type=click.Choice(["none", "tensorboard", "wandb"]), default="none", show_default=True,
              help="Log every optimiser step (loss, LM, RDM, lr, α per group) to TensorBoard event files or an offline "
                   "W&B run, through Accelerate's trackers.")
@click.option("--tracker-dir", type=click.Path(path_type=Path), default=None,
              help="Where the tracker writes (default: OUT_DIR.runs beside the output).")
@click.option("--base-model-id", default=None, metavar="ORG/NAME",
              help="The base model's Hub id, written into the adapter's config and card (default: the registry's id, "
                   "or the one the model's files state).")
@click.option("--force", is_flag=True, help="Replace an existing output folder / JSON file.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
def main(plans, base_model, replay, output, method, preset, weight_decay, max_grad_norm, warmup_rounding, optimizer,
         step_in_backward, loss_average, group_by_length, epochs, max_steps, batch_size, grad_accum, lr, warmup_ratio, cutoff_len,
         max_examples_per_file, drop_history,
         gradient_checkpointing, seed, device, dtype, checkpoint_every, checkpoint_dir, resume, json_path, log_file,
         shard_base_model, report_to, tracker_dir, base_model_id, force, quiet, debug, **method_options) -> None:
    """Fuse the sources of PLAN.h5 into its target adapter; several plans run as a sequential pipeline."""
    library_environment()
    from hf_runtime.distributed import process_console, processes

    procs = processes()  # several under accelerate launch / torchrun: only the main one reports and writes
    console = process_console(quiet, debug, report_to_stderr=json_path == "-")
    log_path = Path(log_file or output.with_name(output.name + ".log"))
    with _no_log_on_bad_input(log_path), errors_to_exit_codes(console):
        from hf_runtime.data import ReplayConfig
        from hf_runtime.trackers import StepTracker, check_report_to
        from hf_runtime.trainer import TrainingDiverged, TrainSettings

        from .job import FuseJob
        from .methods import get_method
        from .report import Progress, render
        from .run import run

        if quiet:
            from hf_runtime.model import quiet_progress_bars

            quiet_progress_bars()
        check_json_target(json_path, force)
        check_report_to(report_to)
        ctx = click.get_current_context()
        chosen = resolve_preset(preset, init=method_options.get("init"), weight_decay=weight_decay,
                                max_grad_norm=max_grad_norm, warmup_rounding=warmup_rounding,
                                reset_alpha=method_options.get("reset_alpha"))
        settings = method_settings(ctx, get_method(method), method_options, chosen)
        defaults = {"lr": TrainSettings.lr, "epochs": TrainSettings.epochs, **get_method(method).training_defaults(settings)}
        lr = defaults["lr"] if lr is None else lr
        epochs = defaults["epochs"] if epochs is None else epochs
        config = {k: v for k, v in resolved_config(ctx).items() if k not in _other_methods_keys(method)}
        config.update(lr=lr, epochs=epochs)  # what it ran with, the method's defaults resolved
        job = FuseJob(
            plans=list(plans), base_model=base_model, replay=list(replay), output=output,
            train=TrainSettings(epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
                                warmup_ratio=warmup_ratio, seed=seed, gradient_checkpointing=gradient_checkpointing,
                                checkpoint_every=checkpoint_every, weight_decay=chosen["weight_decay"],
                                max_grad_norm=chosen["max_grad_norm"], warmup_rounding=chosen["warmup_rounding"],
                                optimizer=optimizer, loss_average=loss_average, group_by_length=group_by_length,
                                step_in_backward=step_in_backward),
            replay_config=ReplayConfig(cutoff_len=cutoff_len, max_examples_per_file=max_examples_per_file, seed=seed,
                                       drop_history=drop_history),
            device=device, dtype=dtype, checkpoint_dir=checkpoint_dir, resume=resume, force=force,
            method=method, settings=settings, shard_base_model=shard_base_model,
            record={"fusion_config.yaml": dump(config)}, base_model_id=base_model_id,
        )
        setup_logging(debug, str(log_path) if procs.is_main else None)
        try:
            runs = Path(tracker_dir or output.with_name(output.name + ".runs"))
            tracking = (report_to if procs.is_main else "none", runs, f"hf-fuse-{output.name}", config)
            with Progress(console) as progress, StepTracker(*tracking) as tracker:
                report = run(job, lambda kind, payload: (progress.event(kind, payload), tracker.event(kind, payload)))
        except TrainingDiverged as exc:
            console.abort(str(exc), EXIT_DIVERGED)
        render(report, console, get_method(method)())
        if procs.is_main:
            write_json(json_path, report, force=force)
        console.success(f"fused adapter written to {output}")
        from hf_runtime.distributed import finish

        finish()
    raise SystemExit(EXIT_OK)


PRESETS = {  # where the paper is silent: our defaults, and what the authors' released code does
    "default": {"init": "torch", "weight_decay": 0.0, "max_grad_norm": 1.0, "warmup_rounding": "up", "reset_alpha": False},
    "paper": {"init": "xavier", "weight_decay": 0.01, "max_grad_norm": 0.0, "warmup_rounding": "down", "reset_alpha": True},
}


def resolve_preset(preset: str, **given) -> dict:
    """The preset's values, with every flag the user gave explicitly (not None) taking precedence."""
    return {key: given[key] if given.get(key) is not None else value for key, value in PRESETS[preset].items()}


@contextlib.contextmanager
def _no_log_on_bad_input(log_path: Path):
    """A run refused for bad input (exit 2) leaves no log it created; a diverged (3) or crashed (4) run keeps it."""
    existed = log_path.exists()
    try:
        yield
    except SystemExit as exc:
        if exc.code == EXIT_BAD_INPUT and not existed and log_path.exists():
            root = logging.getLogger()
            for handler in list(root.handlers):
                if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == log_path.resolve():
                    root.removeHandler(handler)
                    handler.close()
            log_path.unlink()
        raise


def method_settings(ctx: click.Context, method, values: dict, preset: dict) -> dict:
    """The settings objects of ``method`` from the options; an option of a section this run of the method does not
    read is refused, naming the flag and the methods it belongs to (one rule for every method)."""
    from hf_common.errors import ConfigError
    from hf_common.settings import build, given

    registry = _registry()
    settings = {}
    for cls in method.settings_classes:
        fields = {f.name for f in dataclasses.fields(cls)}
        overrides = {k: v for k, v in preset.items() if k in fields}
        settings[cls.section] = build(cls, values, overrides)
    used = method.sections_used(settings)
    allowed, declared = _flags(method, used), _flags(method)
    all_specs = {flag: spec for other in registry.METHODS.values() for flag, spec in _flags(other).items()}
    for flag, owners in _flag_owners(registry).items():
        name = all_specs[flag].name
        if flag not in allowed and name in values and given(ctx, name):
            how = f"--method {method.name}" + (" with these settings" if flag in declared else "")
            raise ConfigError(f"{flag} belongs to --method {' / '.join(owners)}; {how} does not use it")
    return {section: value for section, value in settings.items() if section in used}


def _other_methods_keys(method: str) -> set[str]:
    """Config-file keys of options that only other methods read (left out of the recorded config)."""
    registry = _registry()
    return {flag[2:] for flag in _flag_owners(registry) if flag not in _flags(registry.METHODS[method])}
