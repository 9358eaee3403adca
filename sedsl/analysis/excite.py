"""The SE paper's excitation analysis: record every SE block's gate s over labelled samples.

The gates are read by forward hooks from the computation that produces the logits: the
`<block>.se.gate` module of the plain lowering, the `probe` of the fused `SqueezeExcite`
module. Statistics are integer sums and counts per (class, channel): s and s^2 in fixed point
(2^-32), and counts of saturated gates, so they add up exactly in any order and across
torchrun ranks, in O(classes x channels) memory per block. Definitions: docs/excitation.md."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sedsl.analysis import dist
from sedsl.analysis.data import Split
from sedsl.compile.passes import se_units
from sedsl.errors import ModelError, SpecError
from sedsl.ir.graph import Graph
from sedsl.ir.node import inputs, record
from sedsl.ir.vocab import ACTIVATIONS
from sedsl.pytorch import saved

FORMAT = "sedsl.excite/1"
ONE = 2**32  # fixed point: a gate value s is summed as round(s * 2^32)
LIMIT = 2.0**8  # |s| above this could overflow int64 sums of s^2 (see _fixed)
EPSILON = 0.05  # a gate within EPSILON of its gate function's bound is saturated
BATCH = 64  # fixed global batches, so a sample meets the same batch in any run


@dataclass(frozen=True)
class Unit:
    """One SE block of the network."""

    name: str  # its scope: conv4.block2.se
    stage: str
    block: str
    depth: int  # its position among the network's SE blocks, from 0
    channels: int
    gate: str  # its gate function
    producer: str  # the layer whose output U it scales
    scale: str  # the node computing U * s


def units(g: Graph) -> list[Unit]:
    """The SE blocks of an (unfused) graph in network order."""
    found: list[Unit] = []
    for unit, steps in se_units(g).items():  # from the nodes' SE tags
        scale = steps["scale"]
        rec = record(g, scale)
        producer = inputs(g, scale)[0]
        gate = record(g, steps["gate"]).op
        found.append(Unit(unit, rec.stage or "", rec.block or "", len(found), rec.shape[0], gate,
                          producer, scale))
    return found


def select(all_units: list[Unit], wanted: Sequence[str] | None) -> list[Unit]:
    """Units named by `wanted` (an SE block, a block instance or a stage); all if None."""
    if not wanted:
        return all_units
    chosen = []
    for w in wanted:
        hits = [u for u in all_units if w in (u.name, u.block, u.stage)
                or u.name.startswith(w + ".")]
        if not hits:
            raise SpecError(f"no SE block matches `{w}`", None,
                            "SE blocks here: " + ", ".join(u.name for u in all_units[:8])
                            + (", ..." if len(all_units) > 8 else ""))
        chosen += [u for u in hits if u not in chosen]
    return sorted(chosen, key=lambda u: u.depth)


def gate_module(model: nn.Module, unit: Unit) -> nn.Module:
    """The module whose output is the unit's gate s: the fused op's probe, or the gate layer."""
    block = model.get_submodule(unit.name)
    probe = getattr(block, "probe", None)
    return probe if isinstance(probe, nn.Module) else model.get_submodule(f"{unit.name}.gate")


class GateStats:
    """Per unit, per (class, channel): n, sum s, sum s^2, #s near the low and the high bound."""

    def __init__(self, chosen: list[Unit], classes: int, epsilon: float = EPSILON) -> None:
        self.units = chosen
        self.count = torch.zeros(classes, dtype=torch.int64)
        self.sums = [torch.zeros(4, classes, u.channels, dtype=torch.int64) for u in chosen]
        self.correct = torch.zeros(1, dtype=torch.int64)
        self.epsilon = epsilon

    def add(self, k: int, s: Tensor, labels: Tensor) -> None:
        """Accumulate unit k's gates s (N, C) for samples of the given labels."""
        unit = self.units[k]
        s = s.detach().reshape(len(labels), unit.channels).double()
        if s.abs().max() > LIMIT:
            raise SpecError(f"{unit.name}: gate values beyond {LIMIT:g}; the statistics would "
                            "overflow", None, "this analysis is for bounded gates")
        low, high = ACTIVATIONS[unit.gate].bounds if unit.gate in ACTIVATIONS else (None, None)
        near_low = (s <= low + self.epsilon) if low is not None else torch.zeros_like(s).bool()
        near_high = (s >= high - self.epsilon) if high is not None else torch.zeros_like(s).bool()
        rows = torch.stack([_fixed(s), _fixed(s * s), near_low.long(), near_high.long()])
        self.sums[k].index_add_(1, labels, rows)  # (4, N, C) into (4, classes, C)

    def reduce(self) -> None:
        """Sum over torchrun ranks (exact: integers)."""
        for t in (self.count, self.correct, *self.sums):
            dist.all_sum(t)

    def block_json(self, k: int, class_names: list[str]) -> dict[str, Any]:
        """One block's entry in excite.json."""
        unit, (s1, s2, lo, hi) = self.units[k], self.sums[k]
        n = self.count.double()[:, None]  # (K, 1)
        present = self.count > 0
        mean_k = s1.double() / ONE / n.clamp(min=1)
        var_k = (s2.double() / ONE / n.clamp(min=1) - mean_k**2).clamp(min=0)
        total = float(n.sum())
        mean = s1.double().sum(0) / ONE / total
        return {
            "name": unit.name, "stage": unit.stage, "block": unit.block, "depth": unit.depth,
            "channels": unit.channels, "gate": unit.gate,
            "mean": _floats(mean),
            "classes": {class_names[c]: {"n": int(self.count[c]), "mean": _floats(mean_k[c]),
                                         "std": _floats(var_k[c].sqrt())}
                        for c in range(len(class_names)) if present[c]},
            "class_specificity": _round(specificity(self.count, s1, s2)),
            "saturation": {"low": _round(float(lo.sum()) / (total * unit.channels)),
                           "high": _round(float(hi.sum()) / (total * unit.channels))},
        }


def specificity(count: Tensor, s1: Tensor, s2: Tensor) -> float:
    """The between-class share of the gates' variance, pooled over channels (eta^2)."""
    n = count.double()[:, None]
    keep = count > 0
    n, s1d, s2d = n[keep], s1.double()[keep] / ONE, s2.double()[keep] / ONE
    total_n = float(n.sum())
    mean = s1d.sum(0) / total_n  # (C,)
    total_ss = (s2d.sum(0) - total_n * mean**2).clamp(min=0).sum()
    between_ss = (n * (s1d / n - mean) ** 2).sum()
    return float(between_ss / total_ss) if total_ss > 0 else 0.0


def _fixed(x: Tensor) -> Tensor:
    """x in fixed point, 2^-32 resolution: |x| <= 2^8 keeps a sum of 2^15 squares in int64."""
    return torch.round(x * ONE).long()


def _floats(t: Tensor) -> list[float]:
    return [_round(float(v)) for v in t]


def _round(x: float) -> float:
    return round(x, 8)


def pick(data: Split, classes: Sequence[str] | None, per_class: int | None) -> list[int]:
    """The samples analysed: the first `per_class` of each chosen class, in stored order."""
    names = list(classes) if classes else list(data.classes)
    for c in names:
        if c not in data.classes:
            raise SpecError(f"no class `{c}` in the data", None,
                            "classes: " + ", ".join(data.classes[:20]))
    chosen: list[int] = []
    for c in names:
        k = data.classes.index(c)
        members = [i for i, y in enumerate(data.labels) if y == k]
        if per_class is not None and per_class > len(members):
            raise SpecError(f"--per-class {per_class} but class `{c}` has {len(members)} "
                            "samples here", None, f"use --per-class {len(members)} or fewer, or "
                            "another --split")
        chosen += members[:per_class] if per_class is not None else members
    return sorted(chosen)


def batches(indices: list[int], rank: int, world: int) -> Iterator[list[int]]:
    """Fixed global batches of the samples; this rank's share (every world-th batch)."""
    for b, start in enumerate(range(0, len(indices), BATCH)):
        if b % world == rank:
            yield indices[start : start + BATCH]


@contextmanager
def hooks(model: nn.Module, chosen: list[Unit],
          fn: Callable[[int, Tensor], Tensor | None]) -> Iterator[None]:
    """Forward hooks on the chosen units' gates: fn(k, s) sees s; a tensor it returns
    replaces s downstream (plain lowering)."""
    handles = [gate_module(model, u).register_forward_hook(
        lambda _m, _i, out, k=k: fn(k, out)) for k, u in enumerate(chosen)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def record_gates(model: nn.Module, data: Split, indices: list[int], chosen: list[Unit],
                 rank: int = 0, world: int = 1, epsilon: float = EPSILON) -> GateStats:
    """Run the samples through `model` (eval mode) and accumulate the chosen units' gates."""
    model.eval()
    stats = GateStats(chosen, len(data.classes), epsilon)
    labels = torch.zeros(0, dtype=torch.int64)

    def seen(k: int, s: Tensor) -> None:
        stats.add(k, s, labels)

    with torch.no_grad(), hooks(model, chosen, seen):
        for idx in batches(indices, rank, world):
            x, labels = data.batch(idx)
            logits = model(x)
            stats.count += torch.bincount(labels, minlength=len(data.classes))
            stats.correct += int((logits.argmax(1) == labels).sum())
    stats.reduce()
    return stats


def top1(model: nn.Module, data: Split, indices: list[int], rank: int = 0,
         world: int = 1) -> float:
    """Top-1 accuracy of `model` on the samples."""
    model.eval()
    hits = torch.zeros(2, dtype=torch.int64)
    with torch.no_grad():
        for idx in batches(indices, rank, world):
            x, y = data.batch(idx)
            hits += torch.tensor([int((model(x).argmax(1) == y).sum()), len(idx)])
    dist.all_sum(hits)
    return float(hits[0]) / float(hits[1])


def load_weights(model: nn.Module, path: Path, network: str) -> None:
    """Load a state dict (.pt/.pth, a sedsl checkpoint, or .safetensors) into `model`;
    a file for another spec is an error naming the missing, unexpected and mis-shaped keys."""
    state = saved.state_dict(path)
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    misshaped = [f"{k} {tuple(state[k].shape)} (model: {tuple(ours[k].shape)})" for k in ours
                 if k in state and tuple(state[k].shape) != tuple(ours[k].shape)]
    if missing or unexpected or misshaped:
        parts = [f"{len(v)} {what}: {_few(v)}" for what, v in (
            ("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if v]
        raise ModelError(f"{path} does not fit {network}: " + "; ".join(parts),
                         "were these weights trained from another spec or other --set values?")
    model.load_state_dict(state)


def _few(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def report(stats: GateStats, data: Split, indices: list[int], meta: dict[str, Any]) -> dict[
        str, Any]:
    """The excite.json document."""
    total = int(stats.count.sum())
    return {
        "format": FORMAT, **meta,
        "samples": total,
        "classes": [c for c, n in zip(data.classes, stats.count.tolist(), strict=True) if n],
        "top1": _round(int(stats.correct) / total) if total else None,
        "epsilon": stats.epsilon,
        "blocks": [stats.block_json(k, data.classes) for k in range(len(stats.units))],
    }


def figure_units(chosen: list[Unit]) -> list[Unit]:
    """The blocks drawn by default: the last of each stage, and the network's last three."""
    last_of_stage = {u.stage: u for u in chosen}
    picked = {u.name for u in last_of_stage.values()} | {u.name for u in chosen[-3:]}
    return [u for u in chosen if u.name in picked]
