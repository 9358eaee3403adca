"""What `sedsl train` and `sedsl excite` do, behind the CLI's option parsing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sedsl.analysis import dist
from sedsl.analysis.data import Prep, open_source
from sedsl.analysis.train import Epoch, TrainConfig, train
from sedsl.api import Network

# Wide when piped, so that tables of block names are not cut to 80 columns.
out = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 140)


def run_train(net: Network, data: str, folder: Path, cfg: TrainConfig, prep: Prep, *,
              se: bool, resume: bool, compare_base: bool,
              device: str = "auto") -> dict[str, float]:
    """Train (and with compare_base, train the base network too); print the comparison.
    Returns the final val top-1 per network trained."""
    rank, _ = dist.setup()
    source = open_source(data, tuple(net.ir.graph["input"]), prep)
    show = _printer(rank)
    runs = [("SE", True, folder / "se"), ("base", False, folder / "base")] if compare_base \
        else [("SE" if se else "base", se, folder)]
    final: dict[str, float] = {}
    for label, with_se, where in runs:
        show(f"training {net.name} ({label}) on {source.name}: {len(source.train)} train, "
             f"{len(source.val)} val samples -> {where}")
        rows = train(net, source, where, cfg, se=with_se, resume=resume, report=_epoch_line(show),
                     device=device)
        final[label] = rows[-1].val_top1 if rows else float("nan")
    if compare_base and rank == 0:
        _print_comparison(net, final)
    return final


def _printer(rank: int) -> Any:
    def show(line: str) -> None:
        if rank == 0:
            out.print(line, soft_wrap=True)

    return show


def _epoch_line(show: Any) -> Any:
    def line(e: Epoch) -> None:
        show(f"epoch {e.epoch:3d}  lr {e.lr:.4f}  train loss {e.train_loss:.4f} "
             f"top-1 {100 * e.train_top1:.2f}%  val loss {e.val_loss:.4f} "
             f"top-1 {100 * e.val_top1:.2f}%  {e.seconds:.1f}s")

    return line


def _print_comparison(net: Network, final: dict[str, float]) -> None:
    cost = net.cost()
    t = Table(title=f"{net.name}: does SE help? (val top-1, cost convention fvcore)")
    for col in ("network", "params", "FLOPs", "val top-1"):
        t.add_column(col, justify="left" if col == "network" else "right")
    t.add_row("base", f"{cost.base.params:,}", f"{cost.base.flops:,}",
              f"{100 * final['base']:.2f}%")
    t.add_row("SE", f"{cost.se.params:,}", f"{cost.se.flops:,}", f"{100 * final['SE']:.2f}%")
    o = cost.overhead
    t.add_row("SE - base", f"+{o.params:,}", f"+{o.flops:,}",
              f"{100 * (final['SE'] - final['base']):+.2f} points")
    out.print(t)


def run_excite(net: Network, spec: Path, weights: Path, data: str, folder: Path, prep: Prep,
               *, split: str, per_class: int | None, classes: list[str] | None,
               blocks: list[str] | None, fused: bool, ablate: bool, epsilon: float,
               overrides: dict[str, Any]) -> dict[str, Any]:
    """Record the gates, write excite.json and the figures (and the ablation); return the doc."""
    from sedsl.analysis import excite, figures

    rank, world = dist.setup()
    source = open_source(data, tuple(net.ir.graph["input"]), prep)
    samples = source.split(split)
    indices = excite.pick(samples, classes, per_class)
    every = excite.units(net.ir)
    chosen = excite.select(every, blocks)
    model = net.to_torch(fused=fused)
    excite.load_weights(model, weights, net.name)
    stats = excite.record_gates(model, samples, indices, every if ablate else chosen, rank, world,
                                epsilon=epsilon)
    meta = {"network": net.name, "spec": str(spec), "weights": str(weights), "data": data,
            "split": split, "per_class": per_class, "lowering": "fused" if fused else "plain"}
    doc = excite.report(stats, samples, indices, meta)
    names = {u.name for u in chosen}
    doc["blocks"] = [b for b in doc["blocks"] if b["name"] in names]
    if ablate:
        from sedsl.analysis.ablate import ablate as run_ablation

        plain = model if not fused else net.to_torch(fused=False)
        if fused:
            plain.load_state_dict(model.state_dict())
        doc["ablation"] = run_ablation(net, spec, plain, samples, indices, stats,
                                       folder / "ablate", overrides, rank, world)
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".excite.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, folder / "excite.json")
        _print_excite(doc)
        if figures.available():
            drawn = [u.name for u in excite.figure_units(chosen)]
            paths = figures.draw(doc, drawn, folder)
            out.print(f"wrote {folder / 'excite.json'} and {len(paths)} figures")
        else:
            out.print(f"wrote {folder / 'excite.json'}; figures need matplotlib "
                      "(pip install 'sedsl[analysis]')", markup=False)
    return doc


def _print_excite(doc: dict[str, Any]) -> None:
    t = Table(title=f"{doc['network']}: excitation on {doc['samples']} samples "
                    f"({doc['data']}, {doc['split']}), top-1 {100 * doc['top1']:.2f}%")
    for col in ("SE block", "depth", "C", "mean s", "class specificity", "saturated low",
                "saturated high"):
        t.add_column(col, justify="left" if col == "SE block" else "right")
    for b in doc["blocks"]:
        mean = sum(b["mean"]) / len(b["mean"])
        t.add_row(b["name"], str(b["depth"]), str(b["channels"]), f"{mean:.3f}",
                  f"{b['class_specificity']:.3f}", f"{100 * b['saturation']['low']:.1f}%",
                  f"{100 * b['saturation']['high']:.1f}%")
    out.print(t)
    if "ablation" not in doc:
        return
    a = Table(title="without a stage's SE blocks: top-1 on the same samples, exact savings")
    for col in ("stage", "SE blocks", "top-1", "identity", "mean gate", "folded",
                "params saved", "share of SE params", "FLOPs saved"):
        a.add_column(col, justify="left" if col == "stage" else "right")
    for r in doc["ablation"]:
        folded = "-" if r["folded_top1"] is None else f"{100 * r['folded_top1']:.2f}%"
        a.add_row(r["stage"], str(r["se_blocks"]), f"{100 * r['top1']:.2f}%",
                  f"{100 * r['identity_top1']:.2f}%", f"{100 * r['mean_gate_top1']:.2f}%",
                  folded, f"{r['params_saved']:,}", f"{100 * r['se_params_share']:.1f}%",
                  f"{r['flops_saved']:,}")
    out.print(a)


__all__ = ["run_excite", "run_train"]
