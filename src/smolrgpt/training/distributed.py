"""One process or many: torchrun's environment, DistributedDataParallel or FSDP, and the few collectives
the trainer needs.

Launch with torchrun (single machine: `torchrun --nproc_per_node N -m smolrgpt.cli train ...`; several
machines: the same command on each with `--nnodes`, `--node_rank`, `--master_addr`, `--master_port`, or
`--rdzv_backend c10d --rdzv_endpoint HOST:PORT`). Each process uses the device of its LOCAL_RANK; NCCL on
GPUs, gloo on CPUs. Without torchrun's variables everything runs in this one process.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                 int(os.environ.get("WORLD_SIZE", 1)))


def init_distributed(device: torch.device) -> World:
    """Join the process group when launched by torchrun (a no-op for a single process)."""
    world = world_from_env()
    if world.size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=process_group_timeout(), **kwargs)
    return world


def process_group_timeout() -> datetime.timedelta:
    """How long a collective waits for the other processes before failing (SMOLRGPT_DIST_TIMEOUT_S,
    default 60 minutes: long evaluations on one rank must not time out the others)."""
    return datetime.timedelta(seconds=float(os.environ.get("SMOLRGPT_DIST_TIMEOUT_S", 3600)))


def shutdown(together: bool = True) -> None:
    """Leave the process group. `together` (a run that ended normally): a barrier first, so no process
    tears down the group while a peer is still in a collective (Gloo could then hang at exit). After an
    error the peers may be inside another collective: leave at once."""
    if not dist.is_initialized():
        return
    try:
        if not together:
            pass
        elif dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=process_group_timeout())
        else:
            dist.barrier()
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum floats over processes in float64 (token counts and loss sums stay exact)."""
    if not dist.is_initialized():
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_max(value: int, device: torch.device) -> int:
    if not dist.is_initialized():
        return int(value)
    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def gather_objects(items: list) -> list:
    """Every process's list, concatenated in rank order (small results only: pickled over the wire)."""
    if not dist.is_initialized():
        return list(items)
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, items)
    return [x for part in out for x in part]


def broadcast_object(obj):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# --------------------------------------------------------------------------- wrapping
def wrap_model(model: nn.Module, world: World, device: torch.device, strategy: str,
               find_unused_parameters: bool = False) -> nn.Module:
    """DDP (every process holds the whole model) or FSDP2 (parameters sharded per decoder layer)."""
    if not world.distributed:
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        for layer in model.language_model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        register_fsdp_forward_method(model, "generate")  # generate() gathers the root's shards too
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel) \
        else model


def no_sync(model: nn.Module, skip: bool):
    """Skip DDP's gradient all-reduce on accumulation micro-steps (FSDP2 and 1 process: nothing to skip)."""
    import contextlib

    if skip and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    if skip and hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(False)
        return _restore_sync(model)
    return contextlib.nullcontext()


class _restore_sync:
    def __init__(self, model):
        self.model = model

    def __enter__(self):
        return self.model

    def __exit__(self, *exc):
        self.model.set_requires_gradient_sync(True)
        return False


def is_fsdp(model: nn.Module) -> bool:
    return type(model).__name__.startswith("FSDP")  # fully_shard swaps in an FSDP<Class> subclass


def full_model_state(model: nn.Module) -> dict | None:
    """The unsharded model weights on CPU (on the main process; None elsewhere under FSDP)."""
    if not is_fsdp(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def optimizer_state(model: nn.Module, optimizer) -> dict:
    """Optimizer state keyed by parameter NAME (not position), unsharded, on CPU: plain tensors and
    numbers that torch.load(weights_only=True) reads back."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(unwrap(model) if not is_fsdp(model) else model, optimizer, options=options)


def load_optimizer_state(model: nn.Module, optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    fsdp = is_fsdp(model)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=fsdp)
    set_optimizer_state_dict(model if fsdp else unwrap(model), optimizer, state, options=options)
