"""``--report-to tensorboard|wandb``: every logged optimiser step to an experiment tracker.

Accelerate's trackers do the writing (``accelerate.tracking``: TensorBoard through torch's or
tensorboardX's ``SummaryWriter``, W&B through ``wandb``), as the Trainer and Accelerate scripts do; we
only feed them the step records that the progress bar shows.  W&B runs offline unless ``WANDB_MODE`` says
otherwise: nothing leaves the machine.  Off by default.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from hf_common.errors import ConfigError

REPORT_TO = ("none", "tensorboard", "wandb")


def check_report_to(report_to: str) -> None:
    """Refuse, before any model loads, a tracker whose package is missing."""
    if report_to == "tensorboard" and not (importlib.util.find_spec("tensorboardX")
                                           or importlib.util.find_spec("tensorboard")):
        raise ConfigError("--report-to tensorboard needs tensorboardX or tensorboard (pip install tensorboardX)")
    if report_to == "wandb" and not importlib.util.find_spec("wandb"):
        raise ConfigError("--report-to wandb needs the wandb package (pip install wandb); it runs offline")
    if report_to not in REPORT_TO:
        raise ConfigError(f"--report-to must be one of {', '.join(REPORT_TO)}, got {report_to!r}")


class StepTracker:
    """Logs step records (``loss``, ``lm``, ``rdm``, ``lr``, ``grad_norm``, ``alpha`` per group) under
    ``train/...``, with one global step across the tasks of a sequential run."""

    def __init__(self, report_to: str, folder: Path, run_name: str, config: dict):
        self.tracker = None
        self._offset, self._task, self._last = 0, 0, 0
        if report_to == "none":
            return
        from accelerate.tracking import TensorBoardTracker, WandBTracker

        folder.mkdir(parents=True, exist_ok=True)
        if report_to == "tensorboard":
            self.tracker = TensorBoardTracker(run_name, folder)
        else:
            os.environ.setdefault("WANDB_MODE", "offline")
            self.tracker = WandBTracker(run_name, dir=str(folder))
        self.tracker.start()
        self.tracker.store_init_configuration(_flat(config))

    def event(self, kind: str, payload: object) -> None:
        """hf-fuse's run events; only step records are logged."""
        if kind == "step":
            task, record, _ = payload
            self.step(record, task)

    def step(self, record: dict, task: int = 0) -> None:
        if self.tracker is None:
            return
        if task != self._task:
            self._offset, self._task = self._last, task
        self._last = self._offset + record["step"]
        # every number of the record (an objective's own loss terms too), α per group where the method has one
        values = {f"train/{k}": float(v) for k, v in record.items() if k not in ("step", "time_s")
                  and isinstance(v, (int, float)) and not isinstance(v, bool)}
        values.update({f"train/alpha/{group}": float(a) for group, a in record.get("alpha", {}).items()})
        self.tracker.log(values, step=self._last)

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.finish()
            self.tracker = None

    def __enter__(self) -> "StepTracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _flat(config: dict, prefix: str = "") -> dict:
    """Nested settings as ``a.b: value`` with the plain types hparams take (others as text)."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[name] = value
        else:
            out[name] = str(value)
    return out
