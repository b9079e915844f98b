"""Data-parallel runs on Hugging Face Accelerate (torch.distributed underneath).

``accelerate launch --num_processes N -m hf_fuse PLAN ...`` (or ``torchrun --nproc_per_node N -m hf_fuse``)
starts N copies of the same command.  Each optimiser step has one stream of micro-batches, the same for
every process count: ``N x --grad-accum`` micro-batches, of which each process runs its own contiguous
share.  The LM gradient each process accumulates (on the patched B's, or on the LoRA weights of a LoRA
student) is summed across processes before the optimiser step, and every loss is divided by the step's
*total* micro-batch count, so N processes with ``--grad-accum k`` take the optimiser steps of one process
with ``--grad-accum N*k`` on the same examples.  Everything downstream of that gradient (the HyperNets,
the RDM term, AdamW) then runs identically in every process, so their weights stay equal without any
further communication.  Only the main process writes outputs, logs and checkpoints.

A single process (the usual case) never initialises torch.distributed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched_world() -> int:
    """How many processes the launcher started (``WORLD_SIZE``, set by accelerate launch and torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


@lru_cache(maxsize=1)
def processes() -> Processes:
    """This process's place in the run; starts Accelerate's process group when launched with several."""
    if launched_world() <= 1:
        return Processes()
    from accelerate import PartialState

    cpu = not torch.cuda.is_available()
    state = PartialState(cpu=cpu)  # gloo on CPU, NCCL on GPUs
    atexit.register(_shut_down)  # a clean shutdown, not the backend's destructors at interpreter exit
    return Processes(state.process_index, state.num_processes, state.local_process_index)


def process_console(quiet: bool, debug: bool, report_to_stderr: bool = False):
    """The console of a command that runs a model: under accelerate launch / torchrun only the main process talks,
    and a secondary one's errors name it."""
    from hf_common.console import Console

    procs = processes()
    return Console(quiet=quiet or not procs.is_main, debug=debug, report_to_stderr=report_to_stderr,
                   process=None if procs.is_main else procs.rank)


def finish() -> None:
    """End of a successful command: wait for every process (the main one may still be writing), then close
    the process group, so no process leaves while another still talks to it."""
    if processes().distributed:
        barrier()
        _shut_down()


def _shut_down() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def device_for(requested: str | None) -> str | None:
    """Each process of a GPU run takes its own GPU (``cuda:LOCAL_RANK``) unless a device was named."""
    procs = processes()
    if procs.distributed and requested in (None, "cuda") and torch.cuda.is_available():
        return f"cuda:{procs.local_rank}"
    return requested


def per_step(settings):
    """Training settings whose ``grad_accum`` counts the micro-batches of the whole step (every process's)."""
    from dataclasses import replace

    world = processes().world
    return settings if world == 1 else replace(settings, grad_accum=settings.grad_accum * world)


def my_share(batches: Sequence, procs: Processes | None = None) -> list:
    """This process's contiguous share of a step's micro-batches (the stream of ``world x grad_accum``)."""
    procs = procs or processes()
    per = len(batches) // procs.world
    return list(batches[procs.rank * per:(procs.rank + 1) * per])


def sum_gradients(tensors: Sequence[torch.Tensor]) -> None:
    """Sum the ``.grad`` of ``tensors`` across processes, in place, in one flat all-reduce."""
    procs = processes()
    if not procs.distributed:
        return
    grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in tensors]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    offset = 0
    for tensor, grad in zip(tensors, grads):
        n = grad.numel()
        summed = flat[offset:offset + n].view_as(grad).to(grad.dtype)
        if tensor.grad is None:
            tensor.grad = summed
        else:
            tensor.grad.copy_(summed)
        offset += n


def sum_value(value: float) -> float:
    """A number summed across processes (the step's loss)."""
    procs = processes()
    if not procs.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    if torch.distributed.get_backend() == "nccl":
        tensor = tensor.cuda()
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return float(tensor.item())


def broadcast(tensors: Sequence[torch.Tensor]) -> None:
    """Every process starts from the main process's weights (they are seeded alike; this makes it certain)."""
    if processes().distributed:
        for tensor in tensors:
            torch.distributed.broadcast(tensor.data, src=0)


def barrier() -> None:
    if processes().distributed:
        torch.distributed.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """The main process runs the block first (generation into a shared cache); the others run it after."""
    procs = processes()
    if procs.distributed and not procs.is_main:
        barrier()
    yield
    if procs.distributed and procs.is_main:
        barrier()


def gather(objects: list) -> list:
    """Every process's list, concatenated in rank order, on every process (Accelerate's ``gather_object``)."""
    if not processes().distributed:
        return list(objects)
    from accelerate.utils import gather_object

    return gather_object(objects)


def shard_base_model(peft_model: torch.nn.Module, device: torch.device) -> dict:
    """Shard the frozen base model of ``peft_model`` across the processes with FSDP2 (``fully_shard``, what
    Accelerate applies for ``fsdp_version: 2``): one unit per decoder layer (the model's ``_no_split_modules``, as
    Accelerate's transformer-based wrap policy picks them) and one for the rest.  The LoRA weights stay whole in
    every process (``ignored_params``): hf-fuse swaps predicted B's into them each step and sums their gradients
    itself.  Each shard lands on ``device``.  Returns how many base parameters this process now holds."""
    from peft.tuners.lora import LoraLayer
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    procs = processes()
    lora = {p for m in peft_model.modules() if isinstance(m, LoraLayer)
            for d in (m.lora_A, m.lora_B) for p in d.parameters()}
    full = sum(p.numel() for p in peft_model.parameters() if p not in lora)
    mesh = init_device_mesh(device.type, (procs.world,))
    units = set(getattr(peft_model.get_base_model(), "_no_split_modules", None) or [])
    for module in list(peft_model.modules()):
        if type(module).__name__ in units:
            fully_shard(module, mesh=mesh, ignored_params={p for p in module.parameters() if p in lora})
    fully_shard(peft_model, mesh=mesh, ignored_params=lora)
    for param in lora:  # not FSDP's to move
        param.data = param.data.to(device)
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel()
                for p in peft_model.parameters() if p not in lora)
    return {"processes": procs.world, "base_parameters": full, "base_parameters_here": local, "units": sorted(units)}


def sharding_requested(flag: bool) -> bool:
    """``--shard-base-model``, or an Accelerate FSDP config (``accelerate launch --config_file fsdp.yaml``
    exports ``ACCELERATE_USE_FSDP``)."""
    return flag or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
