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
import logging
from pathlib import Path

import click

from hf_common import __version__
from hf_common.cli_support import (
    Command,
    check_json_target,
    errors_to_exit_codes,
    generated_options,
    library_environment,
    shared_options,
    write_json,
)
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


def _training_options() -> list[click.Parameter]:
    """hf-fuse's options of the training loop and the replay data, generated from their settings classes: the
    HyperNet's paper defaults, the learning rate and epochs left to the method, the preset's fields to the preset."""
    from hf_common.settings import click_options
    from hf_runtime.settings import ReplayConfig, TrainSettings

    return click_options([TrainSettings, ReplayConfig], defaults={
        "epochs": None, "lr": None, "weight_decay": None, "max_grad_norm": None, "warmup_rounding": None}, helps={
        "epochs": "Passes over the replay mix (default: the method's, see --method; else 3).",
        "lr": "Learning rate, cosine schedule (default: the method's, see --method; else 5e-5).",
        "max_steps": "Optimiser steps (overrides --epochs); 0 exports without training.",
        "cutoff_len": "Token cut-off of a replay example.", "max_examples_per_file": "Cap on examples taken from each "
                                                                                   "replay file.",
        "seed": "Seed of initialisation, data order and RDM draws (0 to 2^31-1)."})


@click.command(cls=FuseCommand, context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.version_option(__version__, prog_name="hf-fuse")
@click.argument("plans", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="PLAN.h5...")
@shared_options("base_model", base_model="Target base model: a Hugging Face model folder, a .gguf file, a folder with one "
                                       ".gguf, or smollm2 / gemma3.")
@click.option("--replay", "replay", multiple=True, required=True, type=click.Path(path_type=Path), metavar="DATA",
              help="Replay data (Alpaca JSON/JSONL or chat 'messages'); repeat to mix several files.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), metavar="OUT_DIR",
              help="Folder for the fused PEFT adapter (must be new unless --force).")
@click.option("--preset", type=click.Choice(["default", "paper"]), default="default", show_default=True,
              help="paper: the authors' released code where the paper is silent (xavier init, weight decay 0.01, no "
                   "clipping, warm-up rounded down, alpha reset per task); flags given explicitly still win.")
@generated_options(_training_options())
@shared_options("device", "dtype", "checkpoint_dir", "resume")
@click.option("--json", "json_path", metavar="PATH|-", help="Also write the fusion report as JSON ('-': stdout).")
@click.option("--log-file", type=click.Path(path_type=Path), default=None,
              help="Training log (default: OUT_DIR.log beside the output).")
@click.option("--shard-base-model", is_flag=True,
              help="With several processes: shard the frozen base model across them (FSDP2), for a target that does "
                   "not fit on one device; an Accelerate FSDP config (accelerate launch --config_file) does the same.")
@shared_options("report_to", "tracker_dir", "base_model_id", "force", "quiet", "debug",
                force="Replace an existing output folder / JSON file.")
def main(plans, replay, output, method, preset, **options) -> None:
    """Fuse the sources of PLAN.h5 into its target adapter; several plans run as a sequential pipeline."""
    library_environment()
    from hf_runtime.distributed import process_console, processes

    o = options
    procs = processes()  # several under accelerate launch / torchrun: only the main one reports and writes
    console = process_console(o["quiet"], o["debug"], report_to_stderr=o["json_path"] == "-")
    log_path = Path(o["log_file"] or output.with_name(output.name + ".log"))
    with _no_log_on_bad_input(log_path), errors_to_exit_codes(console):
        from .report import render

        if o["quiet"]:
            from hf_runtime.model import quiet_progress_bars

            quiet_progress_bars()
        check_json_target(o["json_path"], o["force"])
        from hf_runtime.trackers import check_report_to

        check_report_to(o["report_to"])
        job, config = _job(click.get_current_context(), plans, replay, output, method, preset, o)
        setup_logging(o["debug"], str(log_path) if procs.is_main else None)
        report = _run(job, config, console, procs, o)
        render(report, console, _registry().get_method(method)())
        if procs.is_main:
            write_json(o["json_path"], report, force=o["force"])
        console.success(f"fused adapter written to {output}")
        from hf_runtime.distributed import finish

        finish()
    raise SystemExit(EXIT_OK)


def _job(ctx: click.Context, plans, replay, output: Path, method: str, preset: str, o: dict):
    """The FuseJob of the command's options (the method's settings, the preset and the method's training defaults
    resolved) and the config it records."""
    from hf_common.settings import build
    from hf_runtime.settings import ReplayConfig, TrainSettings

    from .job import FuseJob

    chosen = resolve_preset(preset, **o)
    settings = method_settings(ctx, _registry().get_method(method), o, chosen)
    defaults = {"lr": TrainSettings.lr, "epochs": TrainSettings.epochs,
                **_registry().get_method(method).training_defaults(settings)}
    resolved = {"lr": defaults["lr"] if o["lr"] is None else o["lr"],
                "epochs": defaults["epochs"] if o["epochs"] is None else o["epochs"]}
    config = {k: v for k, v in resolved_config(ctx).items() if k not in _other_methods_keys(method)}
    config.update(resolved)  # what it ran with, the method's defaults resolved
    train = build(TrainSettings, o, {**chosen, **resolved})
    job = FuseJob(plans=list(plans), base_model=o["base_model"], replay=list(replay), output=output, train=train,
                  replay_config=build(ReplayConfig, o, {"seed": o["seed"]}), device=o["device"], dtype=o["dtype"],
                  checkpoint_dir=o["checkpoint_dir"], resume=o["resume"], force=o["force"], method=method,
                  settings=settings, shard_base_model=o["shard_base_model"], record={"fusion_config.yaml": dump(config)},
                  base_model_id=o["base_model_id"])
    return job, config


def _run(job, config: dict, console, procs, o: dict) -> dict:
    """The job, with the progress bar and the tracker; a diverged training exits 3."""
    from hf_runtime.trackers import StepTracker
    from hf_runtime.trainer import TrainingDiverged

    from .report import Progress
    from .run import run

    output = job.output
    try:
        runs = Path(o["tracker_dir"] or output.with_name(output.name + ".runs"))
        tracking = (o["report_to"] if procs.is_main else "none", runs, f"hf-fuse-{output.name}", config)
        with Progress(console) as progress, StepTracker(*tracking) as tracker:
            return run(job, lambda kind, payload: (progress.event(kind, payload), tracker.event(kind, payload)))
    except TrainingDiverged as exc:
        console.abort(str(exc), EXIT_DIVERGED)


def presets() -> dict[str, dict[str, object]]:
    """Every ``--preset``: the values the training settings and each registered method's settings classes declare
    for it (a class's ``presets``), by field name."""
    from hf_runtime.settings import TrainSettings

    classes = [TrainSettings, *dict.fromkeys(c for m in _registry().METHODS.values() for c in m.settings_classes)]
    out: dict[str, dict[str, object]] = {}
    for cls in classes:
        for name, values in getattr(cls, "presets", {}).items():
            out.setdefault(name, {}).update(values)
    return out


def resolve_preset(preset: str, **given) -> dict:
    """The preset's values, with every flag the user gave explicitly (not None) taking precedence."""
    return {key: given[key] if given.get(key) is not None else value for key, value in presets()[preset].items()}


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
        settings[cls.section] = build(cls, values, preset)
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
