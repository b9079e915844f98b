"""``hf-eval train-expert`` and ``hf-eval replay-tune``: one LoRA training command, two starting points (a new LoRA
on all seven projections, or an existing adapter tuned further), through the one training loop
(``hf_runtime.trainer``) with its checkpoints, ``--resume`` and divergence check."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from hf_common.atomic import check_output_path
from hf_common.cli_support import default_checkpoint_dir, errors_to_exit_codes
from hf_common.console import EXIT_DIVERGED, setup_logging
from hf_common.terms import public_name

from .support import card, check_adapters_fit, finish, is_main, load, process_console, quiet_libraries


@dataclass
class AdapterTraining:
    command: str  # train-expert | replay-tune
    title: str  # of the model card
    how: str
    tags: list[str]
    data: list[Path]
    options: dict  # the shared options (COMMON + TRAINING of hf_eval.cli)
    adapter: Path | None = None  # replay-tune: the adapter to tune further
    rank: int = 8  # train-expert: the new LoRA's rank and alpha
    alpha: float = 16

    def main(self) -> None:
        o = self.options
        console = process_console(o["quiet"], o["debug"])
        with errors_to_exit_codes(console):
            quiet_libraries(o["quiet"])
            setup_logging(o["debug"])
            output = Path(o["output"])
            check_output_path(output, o["force"], "output folder")
            tracking = self._tracking(output)
            from hf_runtime.data import check_replay_files

            if self.adapter is not None:
                from .baselines import check_adapter

                check_adapter(self.adapter)  # before any model loads
                check_adapters_fit(o["base_model"], {"target": self.adapter})
            check_replay_files(self.data)
            from hf_runtime.trainer import TrainingDiverged

            try:
                history = self._train(console, output, tracking)
            except TrainingDiverged as exc:
                console.abort(str(exc), EXIT_DIVERGED)
            console.success(f"{self.title.lower()} written to {output} (loss {history[0]['loss']:.4f} -> "
                            f"{history[-1]['loss']:.4f})" if history else f"{self.title.lower()} written to {output}")
            finish()

    def settings(self):
        """Data parallel: --grad-accum counts each process's micro-batches; the settings count the whole step's."""
        from hf_common.settings import build
        from hf_runtime.distributed import per_step
        from hf_runtime.settings import TrainSettings

        return per_step(build(TrainSettings, self.options))

    def _train(self, console, output: Path, tracking: tuple) -> list[dict]:
        import torch

        from hf_common.settings import build
        from hf_runtime.data import ReplayConfig, load_replay
        from hf_runtime.lora import LoraObjective
        from hf_runtime.trainer import Checkpointer, train

        from .baselines import new_lora, save_adapter, trainable_from

        o = self.options
        settings = self.settings()
        replay = build(ReplayConfig, o, {"seed": o["seed"]})
        ref, model, tokenizer, device = load(o["base_model"], o["device"], o["dtype"], o["base_model_id"])
        examples = load_replay(self.data, tokenizer, replay).examples
        if self.adapter is None:
            torch.manual_seed(o["seed"])
            peft_model = new_lora(model, self.rank, self.alpha)
        else:
            peft_model = trainable_from(model, self.adapter)
        fingerprint = {"command": self.command, "base_model": ref.label, "data": [str(d) for d in self.data],
                       "adapter": str(self.adapter) if self.adapter else None, "rank": self.rank, "alpha": self.alpha,
                       "train": asdict(settings), "replay": asdict(replay)}
        checkpoints = Path(o["checkpoint_dir"] or default_checkpoint_dir(output))
        objective = LoraObjective(peft_model, seed=settings.seed, gradient_checkpointing=settings.gradient_checkpointing,
                                  pad_id=tokenizer.pad_token_id, device=device, loss_average=settings.loss_average)
        history = self._with_progress(console, tracking, lambda on_step: train(
            objective, examples, settings, device, Checkpointer(checkpoints, fingerprint), resume=o["resume"],
            on_step=on_step).history)
        if is_main():
            length = f"{settings.max_steps} optimiser steps" if settings.max_steps is not None else f"{settings.epochs:g} epochs"
            details = {"data" if self.adapter is None else "replay": [public_name(str(d)) for d in self.data],
                       **({"rank / alpha": f"{self.rank} / {self.alpha}"} if self.adapter is None else
                          {"target adapter": public_name(str(self.adapter))}),
                       "settings": f"lr {settings.lr}, {length}, batch {settings.batch_size} x {settings.grad_accum}, "
                                   f"seed {settings.seed}",
                       "loss": f"{history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}" if history else "no steps"}
            inputs = [self.adapter] if self.adapter is not None else []
            save_adapter(peft_model, output, force=o["force"], base_model_name=ref.adapter_base_name,
                         card_text=card(self.title, ref, self.how, details, self.tags, *inputs))
        return history

    def _tracking(self, output: Path) -> tuple:
        """What the tracker needs, checked before any model loads."""
        from hf_runtime.trackers import check_report_to

        o = self.options
        check_report_to(o["report_to"])
        skip = ("force", "quiet", "debug", "report_to", "tracker_dir", "resume", "checkpoint_dir")
        config = {k: str(v) if isinstance(v, Path) else v for k, v in o.items() if k not in skip}
        config.update({"data": [str(d) for d in self.data]}, **({"adapter": str(self.adapter)} if self.adapter else
                                                                {"rank": self.rank, "alpha": self.alpha}))
        runs = Path(o["tracker_dir"] or output.with_name(output.name + ".runs"))
        return o["report_to"], runs, f"{self.command}-{output.name}", config

    @staticmethod
    def _with_progress(console, tracking: tuple, run):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from hf_runtime.trackers import StepTracker

        with StepTracker(*tracking) as tracker, Progress(
                TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                TimeElapsedColumn(), console=console.err, disable=console.quiet) as progress:
            task = progress.add_task("", total=None, loss="")

            def on_step(record, total):
                progress.update(task, total=total, completed=record["step"], loss=f"loss {record['loss']:.4f}")
                tracker.step(record)

            return run(on_step)
