"""What one ``hf-fuse`` run is asked to do: a leaf module (it imports nothing else of ``hf_fuse``), so the runner and
every method can share the type without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hf_common.cli_support import default_checkpoint_dir
from hf_runtime.data import ReplayConfig
from hf_runtime.trainer import TrainSettings

S = TypeVar("S")


@dataclass(frozen=True)
class FuseJob:
    plans: list[Path]
    base_model: Path
    replay: list[Path]
    output: Path
    train: TrainSettings = field(default_factory=TrainSettings)
    replay_config: ReplayConfig = field(default_factory=ReplayConfig)
    device: str | None = None
    dtype: str | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    force: bool = False
    method: str = "hypernet"
    # the settings objects of the chosen method (its own and those it shares, e.g. the HyperNet's), by section name
    settings: dict[str, Any] = field(default_factory=dict)
    shard_base_model: bool = False  # FSDP across the processes (or an Accelerate FSDP config): hf_runtime.distributed
    record: dict[str, str] = field(default_factory=dict)  # extra text files for the output folder (the resolved config)
    base_model_id: str | None = None  # the base model's Hub id for the adapter's config and card (--base-model-id)

    @property
    def checkpoints(self) -> Path:
        return self.checkpoint_dir or default_checkpoint_dir(self.output)

    def settings_of(self, cls: type[S]) -> S:
        """The job's settings of class ``cls`` (its defaults when the job was made without them)."""
        found = self.settings.get(cls.section)
        return found if found is not None else cls()
