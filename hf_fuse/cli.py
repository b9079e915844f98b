"""``hf-fuse``: train the transfer network on replay data and export one fused PEFT adapter.

Exit codes: 0 fused, 2 bad input or usage (nothing written), 3 training diverged
(non-finite loss; the last good checkpoint is kept), 4 unexpected error (please report), 130 interrupted
(checkpoint saved).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

import click

from hf_common import __version__
from hf_common.cli_support import check_json_target, errors_to_exit_codes, int_or_auto, write_json
from hf_common.config_file import config_option, dump, resolved_config
from hf_common.console import EXIT_BAD_INPUT, EXIT_OK, setup_logging

EXIT_DIVERGED = 3


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.version_option(__version__, prog_name="hf-fuse")
@click.argument("plans", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="PLAN.h5...")
@click.option("--base-model", required=True, type=click.Path(path_type=Path), metavar="PATH",
              help="Target base model: a Hugging Face model folder, a .gguf file, a folder with one .gguf, or smollm2 / gemma3.")
@click.option("--replay", "replay", multiple=True, required=True, type=click.Path(path_type=Path), metavar="DATA",
              help="Replay data (Alpaca JSON/JSONL or chat 'messages'); repeat to mix several files.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), metavar="OUT_DIR",
              help="Folder for the fused PEFT adapter (must be new unless --force).")
@click.option("--method", default="hypernet", show_default=True, metavar="NAME",
              help="Fusion method: hypernet (the paper's), distill (the source experts answer --unlabeled prompts), "
                   "project (activation-aligned projection, training-free) or project-hypernet (the HyperNet trained "
                   "on top of the projection).")
@click.option("--source-model", "source_models", multiple=True, metavar="INDEX=PATH",
              help="distill, project(-hypernet): base model of plan source INDEX (folder, .gguf, smollm2 / gemma3); "
                   "one per source.")
@click.option("--unlabeled", multiple=True, metavar="[INDEX=]FILE",
              help="distill: prompts for the source experts (Alpaca/chat; any output is ignored); INDEX= sends a file "
                   "to one source only.")
@click.option("--student", type=click.Choice(["lora", "hypernet"]), default="lora", show_default=True,
              help="distill: what learns from the answers: the target LoRA itself, or the HyperNet.")
@click.option("--gen-max-new-tokens", type=int, default=128, show_default=True,
              help="distill: cap on an answer's tokens (answers cut at the cap are dropped).")
@click.option("--gen-batch-size", type=int, default=8, show_default=True, help="distill: prompts per generation batch.")
@click.option("--gen-cache", type=click.Path(path_type=Path), default=None,
              help="distill: folder of cached answers (default: OUT_DIR.work); runs may share one.")
@click.option("--align-tokens", type=int, default=4096, show_default=True,
              help="project(-hypernet): aligned token positions (of the replay text) used to fit the maps.")
@click.option("--ridge", type=float, default=1e-2, show_default=True,
              help="project(-hypernet): ridge of the least-squares maps, relative to the activations' mean eigenvalue.")
@click.option("--project-weight", type=float, default=1.0, show_default=True,
              help="project(-hypernet): scale of every projected source update.")
@click.option("--project-map", type=click.Choice(["assignment", "lstsq"]), default="assignment", show_default=True,
              help="project(-hypernet): pair coordinates by neuron matching (assignment) or by ridge least squares (lstsq).")
@click.option("--preset", type=click.Choice(["default", "paper"]), default="default", show_default=True,
              help="paper: the authors' released code where the paper is silent (xavier init, weight decay 0.01, no "
                   "clipping, warm-up rounded down, alpha reset per task); flags given explicitly still win.")
@click.option("--init", type=click.Choice(["torch", "xavier"]), default=None,
              help="HyperNet Linear init: PyTorch's default (default) or xavier-uniform with zero bias (paper preset).")
@click.option("--weight-decay", type=float, default=None, help="AdamW weight decay (default 0; paper preset 0.01).")
@click.option("--max-grad-norm", type=float, default=None, help="Gradient clipping norm, 0 = off (default 1; paper preset 0).")
@click.option("--warmup-rounding", type=click.Choice(["up", "down"]), default=None,
              help="Warm-up steps rounded up (default) or down (paper preset).")
@click.option("--reset-alpha/--carry-alpha", default=None,
              help="Sequential tasks: start each task's α at --alpha-init (paper preset) or carry it over (default).")
@click.option("--epochs", type=float, default=3.0, show_default=True, help="Passes over the replay mix.")
@click.option("--max-steps", type=int, default=None, help="Optimiser steps (overrides --epochs); 0 exports without training.")
@click.option("--batch-size", type=int, default=1, show_default=True, help="Examples per micro-batch.")
@click.option("--grad-accum", type=int, default=8, show_default=True, help="Micro-batches per optimiser step.")
@click.option("--lr", type=float, default=5e-5, show_default=True, help="AdamW learning rate (cosine schedule).")
@click.option("--warmup-ratio", type=float, default=0.05, show_default=True, help="Warm-up share of the optimiser steps.")
@click.option("--alpha-init", type=float, default=0.3, show_default=True, help="Initial α of every group.")
@click.option("--mu-gate", type=float, default=0.10, show_default=True, help="Shift μ_gate of the SVD-guided gate.")
@click.option("--lambda-reg", type=float, default=0.005, show_default=True, help="Weight λ_reg of the RDM regulariser.")
@click.option("--mu-target", type=float, default=0.0, show_default=True, help="Mean of the RDM reference Gaussian.")
@click.option("--sigma", type=float, default=1.0, show_default=True, help="Std of the RDM reference Gaussian.")
@click.option("--n-proj", type=int, default=2048, show_default=True, help="Random projections of the RDM term.")
@click.option("--embed-dim", default="1024", show_default=True, metavar="N|auto",
              help="HyperNet width; 'auto' scales it to the token width (a quarter of block_size·r, at most 1024).")
@click.option("--n-heads", type=int, default=8, show_default=True, help="Cross-attention heads.")
@click.option("--max-positions", type=int, default=4096, show_default=True, help="Learned positions per sequence.")
@click.option("--cutoff-len", type=int, default=1024, show_default=True, help="Token cut-off of a replay example.")
@click.option("--max-examples-per-file", type=int, default=None, help="Cap on examples taken from each replay file.")
@click.option("--drop-history", is_flag=True, help="Drop earlier turns ('history'): zero-shot prompts.")
@click.option("--ablate", type=click.Choice(["denoise", "rdm"]), multiple=True,
              help="denoise: gate forced open and no RDM; rdm: no RDM term.")
@click.option("--no-gradient-checkpointing", is_flag=True, help="Keep activations instead of recomputing them.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of initialisation, data order and RDM draws.")
@click.option("--device", default=None, help="cuda, cuda:1, cpu... (default: CUDA if available).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
              help="Base model dtype (default: bfloat16 on GPU, float32 on CPU).")
@click.option("--checkpoint-every", type=int, default=50, show_default=True, help="Optimiser steps between checkpoints.")
@click.option("--checkpoint-dir", type=click.Path(path_type=Path), default=None,
              help="Where checkpoints go (default: OUT_DIR.ckpt beside the output).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint.")
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
@click.option("--force", is_flag=True, help="Replace an existing output folder / JSON file.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
def main(plans, base_model, replay, output, method, source_models, unlabeled, student, gen_max_new_tokens, gen_batch_size,
         gen_cache, preset, init, weight_decay, max_grad_norm, warmup_rounding, reset_alpha, align_tokens, ridge,
         project_weight, project_map, epochs, max_steps, batch_size, grad_accum, lr, warmup_ratio, alpha_init, mu_gate,
         lambda_reg, mu_target, sigma, n_proj, embed_dim, n_heads, max_positions, cutoff_len, max_examples_per_file,
         drop_history, ablate, no_gradient_checkpointing, seed, device, dtype, checkpoint_every, checkpoint_dir, resume,
         json_path, log_file, shard_base_model, report_to, tracker_dir, force, quiet, debug) -> None:
    """Fuse the sources of PLAN.h5 into its target adapter; several plans run as a sequential pipeline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded at run time
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' own deprecation notices
    from .distributed import process_console, processes

    procs = processes()  # several under accelerate launch / torchrun: only the main one reports and writes
    console = process_console(quiet, debug, report_to_stderr=json_path == "-")
    log_path = Path(log_file or output.with_name(output.name + ".log"))
    with _no_log_on_bad_input(log_path), errors_to_exit_codes(console):
        from .data import ReplayConfig
        from .report import Progress, render
        from .run import FuseJob, NetSettings, run
        from .trackers import StepTracker, check_report_to
        from .train import TrainingDiverged, TrainSettings

        if quiet:
            from .model import quiet_progress_bars

            quiet_progress_bars()
        check_json_target(json_path, force)
        check_report_to(report_to)
        chosen = resolve_preset(preset, init=init, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                                warmup_rounding=warmup_rounding, reset_alpha=reset_alpha)
        config = resolved_config(click.get_current_context())  # recorded beside the output and given to the tracker
        method_settings = _method_settings(method, source_models, unlabeled, student, gen_max_new_tokens, gen_batch_size,
                                           gen_cache, align_tokens, ridge, project_weight, project_map)
        job = FuseJob(
            plans=list(plans), base_model=base_model, replay=list(replay), output=output,
            net=NetSettings(embed_dim=int_or_auto(embed_dim), n_heads=n_heads, max_positions=max_positions,
                            alpha_init=alpha_init, mu_gate=mu_gate, init=chosen["init"]),
            train=TrainSettings(epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
                                warmup_ratio=warmup_ratio, lambda_reg=lambda_reg, mu_target=mu_target, sigma=sigma,
                                n_proj=n_proj, ablate=tuple(ablate), seed=seed,
                                gradient_checkpointing=not no_gradient_checkpointing, checkpoint_every=checkpoint_every,
                                weight_decay=chosen["weight_decay"], max_grad_norm=chosen["max_grad_norm"],
                                warmup_rounding=chosen["warmup_rounding"], reset_alpha=chosen["reset_alpha"]),
            replay_config=ReplayConfig(cutoff_len=cutoff_len, max_examples_per_file=max_examples_per_file, seed=seed,
                                       drop_history=drop_history),
            device=device, dtype=dtype, checkpoint_dir=checkpoint_dir, resume=resume, force=force,
            method=method, method_settings=method_settings, shard_base_model=shard_base_model,
            record={"fusion_config.yaml": dump(config)},
        )
        setup_logging(debug, str(log_path) if procs.is_main else None)
        try:
            runs = Path(tracker_dir or output.with_name(output.name + ".runs"))
            tracking = (report_to if procs.is_main else "none", runs, f"hf-fuse-{output.name}", config)
            with Progress(console) as progress, StepTracker(*tracking) as tracker:
                report = run(job, lambda kind, payload: (progress.event(kind, payload), tracker.event(kind, payload)))
        except TrainingDiverged as exc:
            console.abort(str(exc), EXIT_DIVERGED)
        render(report, console)
        if procs.is_main:
            write_json(json_path, report, force=force)
        console.success(f"fused adapter written to {output}")
        from .distributed import finish

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


def _method_settings(method, source_models, unlabeled, student, gen_max_new_tokens, gen_batch_size, gen_cache,
                     align_tokens, ridge, project_weight, project_map):
    """The chosen method's own settings; a method's flags given to another method are refused."""
    from hf_common.errors import ConfigError

    from .methods import DistillSettings, ProjectSettings, get_method
    from .methods.sources import parse_indexed, source_model_map

    get_method(method)
    owners = {"--source-model": ("distill", "project", "project-hypernet"), "--unlabeled": ("distill",),
              "--gen-cache": ("distill",)}
    for flag, value in (("--source-model", source_models), ("--unlabeled", unlabeled), ("--gen-cache", gen_cache)):
        if value and method not in owners[flag]:
            raise ConfigError(f"{flag} belongs to --method {' / '.join(owners[flag])}, not --method {method}")
    if method == "distill":
        return DistillSettings(source_models=source_model_map(source_models),
                               unlabeled=tuple(parse_indexed(unlabeled, "--unlabeled", index_required=False)),
                               student=student, max_new_tokens=gen_max_new_tokens, batch_size=gen_batch_size,
                               work_dir=str(gen_cache) if gen_cache else None)
    if method in ("project", "project-hypernet"):
        return ProjectSettings(source_models=source_model_map(source_models), max_tokens=align_tokens, ridge=ridge,
                               weight=project_weight, map=project_map)
    return None
