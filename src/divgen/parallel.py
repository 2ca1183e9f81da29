"""Multi-process (data-parallel) training with torch.distributed, as launched by `torchrun`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything here is
a no-op for a single process. Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only the main process writes files."""
        return self.rank == 0


def launched_main() -> bool:
    """Whether this is the process that writes files (rank 0, or the only one), before setup joins the group."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group when launched by torchrun; pin one GPU per process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(), device
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, device


def teardown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def maximum(world: World, value: torch.Tensor) -> torch.Tensor:
    """The largest `value` over all processes, so that every rank takes the same branch."""
    if world.size > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value


def average_gradients(world: World, params: list[torch.Tensor]) -> None:
    """Replace each parameter's gradient by its mean over processes: one all-reduce of one flat buffer.

    Every rank computes its loss on its own slice of the global batch, so the
    mean of the ranks' gradients is the gradient of the whole batch's loss.
    This is what DistributedDataParallel does, without wrapping the networks,
    so any set of networks (an encoder, no critic) needs no special case and a
    gradient penalty's double backward goes through the plain module.
    """
    if world.size == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    for p, chunk in zip(params, flat.split([g.numel() for g in grads])):
        p.grad = chunk.view_as(p).clone()


def mean(world: World, values: torch.Tensor) -> torch.Tensor:
    """Average a tensor of logged values over processes."""
    if world.size > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= world.size
    return values


def gather(world: World, obj) -> list:
    """Every process's `obj`, in rank order (the same list on every rank)."""
    if world.size == 1:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast(world: World, obj):
    """Rank 0's `obj` on every rank."""
    if world.size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
