"""torchrun / DistributedDataParallel: process-group setup and the few collective helpers the
engine needs. Launch with ``torchrun --nproc_per_node N -m nnlab train RECIPE ...`` (or
``nnlab train --nproc N``); a plain ``nnlab train`` is a world of one and touches none of this.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    """Processes in the run (1 without torchrun)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def launched_rank() -> int:
    """This process's rank as torchrun set it in the environment (0 without torchrun): readable
    before the process group starts, so a run can decide who creates its directory."""
    return int(os.environ.get("RANK", "0"))


def launched_world_size() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``; 1 without torchrun): readable before
    the process group starts, so a run can refuse a kind that cannot be split before joining."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """True in the one process that prints and writes files."""
    return rank() == 0


def init_from_env(device: torch.device) -> bool:
    """Join the process group torchrun describes in the environment (``WORLD_SIZE`` > 1): gloo on
    the CPU, NCCL on CUDA (one GPU per local rank). Returns whether the run is distributed."""
    if launched_world_size() <= 1 or dist.is_initialized():
        return dist.is_initialized()
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def local_device(device: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA runs, else ``device``."""
    if device.type == "cuda" and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (a no-op in a world of one); returns it."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank, the same answer on every rank (a collective: all ranks
    call it together; ``flag`` itself in a world of one)."""
    if world_size() == 1:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    return bool(all_reduce_sum(torch.tensor([int(flag)], device=device)).item())


def broadcast_from_main(values: list[float]) -> list[float]:
    """Rank 0's ``values`` on every rank (a collective: all ranks call it together with lists of one
    length; ``values`` itself in a world of one)."""
    if world_size() == 1:
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


def barrier() -> None:
    """Wait for every rank (a no-op in a world of one)."""
    if world_size() > 1:
        dist.barrier()


def shutdown(wait: bool = False) -> None:
    """Leave the process group, if this process joined one; with ``wait``, once every rank is leaving
    (a barrier: a rank that tore the group down while another still used it was seen to abort)."""
    if dist.is_available() and dist.is_initialized():
        if wait and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()
