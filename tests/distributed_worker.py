"""One rank of the distributed-training check in tests/test_training.py, launched by torchrun:

    torchrun --standalone --nproc_per_node 2 tests/distributed_worker.py OUT_DIR

Every scenario builds the same small SE-ResNet on every rank (same seed), wraps it (DDP, DDP
under torch.compile, or FSDP2 `fully_shard` per block), runs one forward/backward on this rank's
half of a global batch, and saves the full gradients; rank 0 also saves the gradients of the
unwrapped model on the whole batch in one process. Batch norm runs on frozen statistics so that
the half-batch and whole-batch losses are the same function; the loss is a mean, so DDP's and
FSDP's gradient averaging gives the whole-batch gradient."""

from __future__ import annotations

import contextlib
import copy
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sedsl  # noqa: E402
from sedsl.pytorch.export import trace_fused_op  # noqa: E402
from sedsl.pytorch.kernels import SqueezeExcite  # noqa: E402
from tests.small_spec import TINY  # noqa: E402

# name: (wrapper, SE blocks as the fused op, activation checkpointing of SE blocks, bf16 autocast)
SCENARIOS = {
    "ddp-plain": ("ddp", False, False, False),
    "ddp-op": ("ddp", True, False, False),
    "ddp-op-checkpoint-bf16": ("ddp", True, True, True),
    "ddp-compiled-op": ("ddp-compile", True, False, False),
    "fsdp-plain": ("fsdp", False, False, False),
    "fsdp-op": ("fsdp", True, False, False),
}
GLOBAL_BATCH = 8


def build(fused: bool) -> nn.Module:
    torch.manual_seed(0)
    model = sedsl.loads(TINY).to_torch(fused=fused)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.8, 1.2)
            m.eval()  # frozen statistics: a half batch computes what the whole batch does
    return model


def leaf_groups(model: nn.Module) -> list[list[nn.Module]]:
    """Per block (`conv2.block1`, `stem`, `head`), its modules that own parameters; an SE module
    counts as one (its fc1/fc2 inside it)."""
    groups: dict[str, list[nn.Module]] = {}
    inside_se: set[str] = set()
    for name, m in model.named_modules():
        if any(name.startswith(s + ".") for s in inside_se):
            continue
        if isinstance(m, SqueezeExcite):
            inside_se.add(name)
        elif not list(m.parameters(recurse=False)):
            continue
        parts = name.split(".")
        key = ".".join(parts[:2]) if len(parts) > 2 and parts[1].startswith("block") else parts[0]
        groups.setdefault(key, []).append(m)
    return list(groups.values())


def wrap(model: nn.Module, how: str) -> nn.Module:
    if how.startswith("ddp"):
        if how == "ddp-compile":  # dynamo's DDPOptimizer splits the graph at bucket borders
            return torch.compile(DDP(model), backend="aot_eager")
        return DDP(model, bucket_cap_mb=0.01)  # 10 kB: the gradients arrive in several buckets
    from torch.distributed.fsdp import fully_shard

    for group in leaf_groups(model):
        fully_shard(group)
    fully_shard(model)
    return model


def checkpoint_se(model: nn.Module) -> None:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        apply_activation_checkpointing,
    )

    apply_activation_checkpointing(model, check_fn=lambda m: isinstance(m, SqueezeExcite))


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in model.named_parameters():
        g = p.grad
        if hasattr(g, "full_tensor"):  # FSDP2: a sharded DTensor
            g = g.full_tensor()
        key = name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")
        key = key.removeprefix("module.").removeprefix("_orig_mod.").removeprefix("module.")
        out[key] = g.detach().float().clone()
    return out


def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, op: bool, bf16: bool) -> None:
    # the op stays forced through backward, where checkpointing recomputes the forward
    with trace_fused_op() if op else contextlib.nullcontext():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(1)
    x, y = torch.randn(GLOBAL_BATCH, 3, 32, 32), torch.randint(0, 10, (GLOBAL_BATCH,))
    half = GLOBAL_BATCH // world
    mine = slice(rank * half, (rank + 1) * half)
    for name, (how, op, ckpt, bf16) in SCENARIOS.items():
        model = build(fused=op)  # plain: the unfused lowering's modules
        reference = copy.deepcopy(model)
        if ckpt:
            checkpoint_se(model)
        wrapped = wrap(model, how)
        step(wrapped, x[mine], y[mine], op, bf16)
        torch.save(grads(wrapped), out / f"{name}.rank{rank}.pt")
        if rank == 0:
            step(reference, x, y, op, bf16)
            torch.save(grads(reference), out / f"{name}.single.pt")
        dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # skip interpreter teardown of compiled state


if __name__ == "__main__":
    main()
