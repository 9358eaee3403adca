"""A small, honest trainer: SGD or AdamW, a cosine schedule, label smoothing, a seed, a
checkpoint every epoch and resume, top-1 per epoch in a CSV. Under torchrun the same code runs
with DistributedDataParallel (gloo): each global batch is split across the ranks.

Determinism: the data order of epoch e is a permutation drawn from (seed, e) alone and the
learning rate is a function of the step, so a resumed run repeats the uninterrupted run's
losses exactly."""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress
from torch import Tensor, nn

from sedsl.analysis import dist
from sedsl.analysis.data import Source, Split
from sedsl.api import Network
from sedsl.errors import ModelError, SpecError
from sedsl.pytorch import saved

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"
METRICS = "metrics.csv"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch: int = 64  # the global batch, split across torchrun ranks
    optimizer: str = "sgd"  # sgd (momentum 0.9, Nesterov) | adamw
    lr: float | None = None  # None: 0.1 for SGD, 1e-3 for AdamW (for a batch of 64)
    weight_decay: float | None = None  # None: 5e-4 for SGD, 0.05 for AdamW
    label_smoothing: float = 0.1
    seed: int = 0
    limit_batches: int | None = None  # at most this many batches per epoch (quick checks)


@dataclass(frozen=True)
class Epoch:
    """One row of metrics.csv."""

    epoch: int
    lr: float
    train_loss: float
    train_top1: float
    val_loss: float
    val_top1: float
    seconds: float


def train(net: Network, source: Source, out: Path, cfg: TrainConfig, *, se: bool = True,
          resume: bool = False, report: Callable[[Epoch], None] | None = None,
          device: str = "auto") -> list[Epoch]:
    """Train the SE network (or, with se=False, the base network) on `source`; write the
    checkpoint, the final weights and metrics.csv into `out`. Returns the epochs' metrics."""
    rank, world = dist.setup()
    where = dist.device(device)
    torch.manual_seed(cfg.seed)
    model = net.to_torch(fused=True, se=se, device=str(where))
    optimizer = _optimizer(model, cfg)
    rows: list[Epoch] = []
    if resume and (out / CHECKPOINT).exists():
        rows = _restore(out / CHECKPOINT, model, optimizer, cfg)
    ids = [where.index] if where.type == "cuda" else None
    runner = nn.parallel.DistributedDataParallel(model, device_ids=ids) if world > 1 else model
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    steps = _batches_per_epoch(len(source.train), cfg.batch, world, cfg.limit_batches)
    base_lr = _base_lr(cfg)
    bar = _progress(rank)
    for epoch in range(len(rows), cfg.epochs):
        start = time.perf_counter()
        loss_sum, correct, seen = torch.zeros(1, dtype=torch.float64, device=where), 0, 0
        runner.train()
        task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps)
        for step, idx in enumerate(_epoch_batches(len(source.train), cfg, epoch, rank, world)):
            lr = _cosine(base_lr, epoch * steps + step, cfg.epochs * steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = (t.to(where, non_blocking=True) for t in source.train.batch(idx))
            logits = runner(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().double() * len(idx)
            correct += accuracy(logits, y)
            seen += len(idx)
            bar.advance(task)
        bar.remove_task(task)
        totals = dist.all_sum(torch.tensor([loss_sum.item(), correct, seen], dtype=torch.float64))
        val_loss, val_top1 = evaluate(model, source.val, loss_fn, rank, world, device=where)
        row = Epoch(epoch + 1, lr, float(totals[0] / totals[2]), float(totals[1] / totals[2]),
                    val_loss, val_top1, round(time.perf_counter() - start, 3))
        rows.append(row)
        if rank == 0:
            _save(out, model, optimizer, cfg, rows)
            if report:
                report(row)
        dist.barrier()
    bar.stop()
    return rows


def _progress(rank: int) -> Progress:
    """A progress bar on a terminal (rank 0); silent when stderr is piped."""
    console = Console(stderr=True, markup=False)
    bar = Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=console,
                   transient=True, disable=rank != 0 or not console.is_terminal)
    bar.start()
    return bar


def evaluate(model: nn.Module, data: Split, loss_fn: nn.Module, rank: int = 0,
             world: int = 1, batch: int = 256,
             device: torch.device | None = None) -> tuple[float, float]:
    """(mean loss, top-1) over `data` in eval mode; ranks take every world-th batch."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    with torch.no_grad():
        for k, start in enumerate(range(0, len(data), batch)):
            if k % world != rank:
                continue
            idx = list(range(start, min(start + batch, len(data))))
            x, y = (t.to(device or "cpu") for t in data.batch(idx))
            logits = model(x)
            totals += torch.tensor([float(loss_fn(logits, y)) * len(idx),
                                    accuracy(logits, y), len(idx)],
                                   dtype=torch.float64)
    dist.all_sum(totals)
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])


def _base_lr(cfg: TrainConfig) -> float:
    return cfg.lr if cfg.lr is not None else {"sgd": 0.1, "adamw": 1e-3}.get(cfg.optimizer, 0.0)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        wd = 5e-4 if cfg.weight_decay is None else cfg.weight_decay
        return torch.optim.SGD(model.parameters(), lr=_base_lr(cfg), momentum=0.9,
                               nesterov=True, weight_decay=wd)
    if cfg.optimizer == "adamw":
        wd = 0.05 if cfg.weight_decay is None else cfg.weight_decay
        return torch.optim.AdamW(model.parameters(), lr=_base_lr(cfg), weight_decay=wd)
    raise SpecError(f"unknown optimizer `{cfg.optimizer}`", None, "sgd or adamw")


def _cosine(base: float, step: int, total: int) -> float:
    """Cosine decay from `base` to 0 over `total` steps."""
    return base * 0.5 * (1 + math.cos(math.pi * step / total))


def _batches_per_epoch(n: int, batch: int, world: int, limit: int | None = None) -> int:
    steps = sum(1 for s in range(0, n, batch) if min(batch, n - s) >= world)
    return steps if limit is None else min(steps, limit)


def _epoch_batches(n: int, cfg: TrainConfig, epoch: int, rank: int,
                   world: int) -> Iterator[list[int]]:
    """Epoch `epoch`'s global batches, each split across the ranks: this rank's share."""
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    done = 0
    for s in range(0, n, cfg.batch):
        chunk = order[s : s + cfg.batch]
        if cfg.limit_batches is not None and done == cfg.limit_batches:
            return
        if len(chunk) >= world:  # every rank needs a sample
            done += 1
            yield chunk[rank::world]


def _save(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
          rows: list[Epoch]) -> None:
    """The checkpoint, the weights (a plain state dict) and the metrics, each written whole."""
    out.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "config": asdict(cfg), "rows": [asdict(r) for r in rows]}
    _atomic(out / CHECKPOINT, lambda p: torch.save(state, p))
    _atomic(out / WEIGHTS, lambda p: torch.save(model.state_dict(), p))
    _atomic(out / METRICS, lambda p: _write_csv(p, rows))


def _write_csv(path: Path, rows: list[Epoch]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, [f.name for f in fields(Epoch)])
        w.writeheader()
        w.writerows(asdict(r) for r in rows)


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _restore(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
             cfg: TrainConfig) -> list[Epoch]:
    state = saved.read(path, "the checkpoint")
    if not isinstance(state, dict) or not {"config", "model", "optimizer", "rows"} <= set(state):
        raise ModelError(f"{path} is not a sedsl train checkpoint",
                         "train into a new folder, or without --resume")
    # a checkpoint from before an option existed holds that option's default
    before = {k: v for k, v in {**asdict(TrainConfig()), **state["config"]}.items()
              if k != "epochs"}
    now = {k: v for k, v in asdict(cfg).items() if k != "epochs"}
    if before != now:
        diff = ", ".join(f"{k}={before[k]!r}" for k in before if before[k] != now.get(k))
        raise SpecError(f"{path} was trained with other options ({diff})", None,
                        "resume with the same options, or train into a new folder")
    if state["config"]["epochs"] != cfg.epochs:
        raise SpecError(f"{path} was trained for {state['config']['epochs']} epochs "
                        "(the cosine schedule depends on it)", None,
                        "resume with the same --epochs")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return [Epoch(**r) for r in state["rows"]]


def accuracy(logits: Tensor, labels: Tensor) -> int:
    """The number of top-1 hits."""
    return int((logits.argmax(1) == labels).sum())
