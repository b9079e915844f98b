"""The interface every fusion method implements, and the registry (as PEFT registers its tuners)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from hf_common.errors import ConfigError
from hf_common.plan import Plan
from hf_runtime.data import ReplaySet
from hf_runtime.model import BaseModelRef
from hf_runtime.trainer import Checkpointer

from ..job import FuseJob

METHODS: dict[str, type[FusionMethod]] = {}


def register(cls: type[FusionMethod]) -> type[FusionMethod]:
    """Class decorator: make a method known to hf-fuse (``--method``, its options and config-file keys, reports)."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"two fusion methods are named {cls.name!r}: {METHODS[cls.name].__module__}, {cls.__module__}")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[FusionMethod]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {name!r}") from None


@dataclass
class FuseContext:
    """What ``hf_fuse.run`` has prepared when a method starts: checked plans, the loaded target model."""

    job: FuseJob
    plans: list[Plan]
    ref: BaseModelRef
    model: Any  # the bare target base model (transformers)
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    replay: ReplaySet
    checkpointer: Checkpointer
    on_event: Callable[[str, object], None] = lambda kind, payload: None
    shard: bool = False  # FSDP: the base model is on the CPU until a method shards it onto ``device``
    shard_info: dict | None = None  # what sharding did (``hf_runtime.distributed.shard_base_model``), for the report

    def attach_for_training(self, model: Any, config: dict, tensors: dict, *, trainable: bool = False):
        """The target adapter on ``model`` (``hf_runtime.model.attach_target``), sharded when the run shards."""
        from hf_runtime.model import attach_target

        peft_model = attach_target(model, config, tensors, trainable=trainable)
        if self.shard:
            from hf_runtime.distributed import shard_base_model

            self.shard_info = shard_base_model(peft_model, self.device)
        return peft_model


@dataclass
class MethodResult:
    tensors: dict[str, torch.Tensor]  # the fused adapter's tensors (keys and dtypes of the target adapter)
    config: dict  # its adapter_config.json
    tasks: list[dict]  # per plan: what the report says of it
    extra: dict = field(default_factory=dict)  # method-specific report section, under the method's report key


def lora_task(plan: Plan, history: list[dict]) -> dict:
    """The report's task entry of a method that changes the LoRA factors itself (no HyperNet, no groups)."""
    return {"plan": str(plan.path), "plan_checksum": plan.checksum, "steps": len(history), "history": history}


class FusionMethod:
    """One fusion method.  ``preflight`` runs before any model loads (seconds); ``fuse`` does the work.

    A method declares, as class attributes, its ``name``, a one-line ``help`` (``hf-fuse --help``), and the settings
    classes it reads (``settings_classes``; each a dataclass of :func:`hf_common.settings.setting` fields with a
    ``section`` name): hf-fuse builds their options and config-file keys, refuses them for other methods, records
    them in the report and the model card.  The report hooks below say what the method adds to the outputs.
    """

    name: ClassVar[str]
    help: ClassVar[str] = ""
    settings_classes: ClassVar[tuple[type, ...]] = ()
    shardable: ClassVar[bool] = True  # whether --shard-base-model (FSDP) can run it
    trains: ClassVar[bool] = True  # whether it runs the training loop (and so can --resume)
    # training settings (``TrainSettings`` fields: lr, epochs) this method runs with where the user gives none; a
    # method that declares none gets TrainSettings' own (the paper's HyperNet settings)
    train_defaults: ClassVar[dict[str, float]] = {}
    # how a source reaches the fused weights (its adapter, its base model), for the card's "Terms of the inputs" and
    # the licence warnings; clauses that follow "is under the X licence and ..."
    source_relation: ClassVar[tuple[str, str]] = ("its factors were read by the HyperNet that wrote the update",
                                                  "its adapter was trained on it (the model itself was not loaded)")

    def __init__(self, settings: dict[str, Any] | None = None):
        self.settings = settings or {}

    @classmethod
    def sections_used(cls, settings: dict[str, Any]) -> set[str]:
        """The settings sections this run of the method reads (a method may read a shared section only in some
        configurations); options of the other sections are refused."""
        return {c.section for c in cls.settings_classes}

    @classmethod
    def training_defaults(cls, settings: dict[str, Any]) -> dict[str, float]:
        """``train_defaults`` for this run of the method (a method may declare them for some configurations only)."""
        return dict(cls.train_defaults)

    # whether the method trains a HyperNet, whose step can update in the backward pass (--step-in-backward): None
    # never, "" always, else the option that makes it ("--student hypernet")
    trains_hypernet_with: ClassVar[str | None] = None

    def trains_hypernet(self) -> bool:
        """Whether this run of the method trains a HyperNet."""
        return self.trains_hypernet_with == ""

    def source_models(self) -> dict[int, str]:
        """The source base models this run loads (``--source-model``), by source index: their own files say their
        licence; a method that loads none leaves it to what hf-analyze found."""
        return {i: m for section in self.settings.values() for i, m in getattr(section, "source_models", {}).items()}

    def preflight(self, job: FuseJob, plans: list[Plan], warnings: list[str] | None = None) -> None:
        """Refuse what this method cannot use (raise ``HFError``), before anything heavy happens; append to ``warnings``
        what is suspicious but not wrong (they reach the log and ``fusion_report.json``)."""

    def fuse(self, ctx: FuseContext) -> MethodResult:
        raise NotImplementedError

    # --- what the method adds to the outputs (its part of ``fusion_report.json`` is ``MethodResult.extra``)
    # labels of the loss terms its objective adds to the LM loss (the step records' extra keys), for the report page
    loss_terms: ClassVar[dict[str, str]] = {}

    def summary_lines(self, report: dict) -> list[str]:
        """Lines hf-fuse prints after the run."""
        return []

    def render_summary(self, report: dict, console) -> None:
        """What hf-fuse shows of the method's part of the report after the run (by default its ``summary_lines``)."""
        for line in self.summary_lines(report):
            console.info(line)

    def html_task(self, page, index: int, task: dict) -> None:
        """Its part of ``report.html`` for task ``index`` (after the task's loss curves)."""

    def html_section(self, page, report: dict) -> None:
        """Its part of ``report.html`` (an ``hf_common.html_report.HtmlReport``)."""

    def card_details(self, report: dict) -> dict[str, Any]:
        """Lines of the fused adapter's model card."""
        return {}
