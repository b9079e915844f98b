"""The interface every fusion method implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from hf_common.plan import Plan

    from ..data import ReplaySet
    from ..model import BaseModelRef
    from ..run import FuseJob
    from ..train import Checkpointer


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
    shard_info: dict | None = None  # what sharding did (``hf_fuse.distributed.shard_base_model``), for the report

    def attach_for_training(self, model: Any, config: dict, tensors: dict, *, trainable: bool = False):
        """The target adapter on ``model`` (``hf_fuse.model.attach_target``), sharded when the run shards."""
        from ..model import attach_target

        peft_model = attach_target(model, config, tensors, trainable=trainable)
        if self.shard:
            from ..distributed import shard_base_model

            self.shard_info = shard_base_model(peft_model, self.device)
        return peft_model


@dataclass
class MethodResult:
    tensors: dict[str, torch.Tensor]  # the fused adapter's tensors (keys and dtypes of the target adapter)
    config: dict  # its adapter_config.json
    tasks: list[dict]  # per plan: what the report says of it
    extra: dict = field(default_factory=dict)  # method-specific report section


def lora_task(plan: Plan, history: list[dict]) -> dict:
    """The report's task entry of a method that changes the LoRA factors itself (no HyperNet, no groups)."""
    return {"plan": str(plan.path), "plan_checksum": plan.checksum, "groups": {}, "hypernet_parameters": 0,
            "carried_over": [], "steps": len(history), "history": history}


class FusionMethod:
    """One fusion method.  ``preflight`` runs before any model loads (seconds); ``fuse`` does the work."""

    name: ClassVar[str]
    shardable: ClassVar[bool] = True  # whether --shard-base-model (FSDP) can run it

    def __init__(self, settings: Any = None):
        self.settings = settings

    def preflight(self, job: FuseJob, plans: list[Plan]) -> None:
        """Refuse what this method cannot use (raise ``HFError``), before anything heavy happens."""

    def fuse(self, ctx: FuseContext) -> MethodResult:
        raise NotImplementedError
