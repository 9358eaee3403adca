"""torchrun support: the process group (gloo for CPU tensors, NCCL for CUDA ones), each rank's
device, and sums across ranks. One process: no-ops."""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist

from sedsl.errors import DeviceError


def setup() -> tuple[int, int]:
    """(rank, world size); joins the process group when started by torchrun with K > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
        # left to interpreter teardown, the backend's threads can abort the process at exit
        # ("terminate called without an active exception"): close the group first
        atexit.register(dist.destroy_process_group)
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def device(name: str = "auto") -> torch.device:
    """Where this rank trains: `auto` is the GPU when there is one; `cuda` is this rank's GPU
    under torchrun (LOCAL_RANK), `cuda:N` that one."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        where = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device `{name}`", "auto, cpu, cuda or cuda:N") from None
    if where.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"no CUDA device here for `--device {name}`",
                            "train on the CPU: --device cpu")
        if where.index is None:
            where = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(where)
    elif where.type != "cpu":
        raise DeviceError(f"training runs on cpu or cuda, not `{name}`",
                        "auto, cpu, cuda or cuda:N")
    return where


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """`t` summed over all ranks, in place (integer sums are exact in any order)."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if active():
        dist.barrier()
