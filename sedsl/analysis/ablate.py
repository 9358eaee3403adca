"""`excite --ablate stage`: per stage, the SE blocks replaced (a) by identity and (b) by their
mean gate over the samples, a constant per-channel scale folded into the layer before it; the
savings are the cost model's, of a variant spec written without that stage's SE blocks."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sedsl.analysis.data import Split
from sedsl.analysis.excite import GateStats, Unit, hooks, top1
from sedsl.api import Network, load
from sedsl.errors import SpecError
from sedsl.ir.node import record
from sedsl.language import ast
from sedsl.language.ast import GENERATED
from sedsl.language.parse import parse
from sedsl.language.paths import LIBRARY_ROOT
from sedsl.language.printer import unparse
from sedsl.record import replace as replaced


@dataclass(frozen=True)
class Variant:
    """The spec with one stage's SE blocks switched off."""

    stage: str
    text: str
    path: Path


def variant_text(net: Network, spec: Path, stage: str, stage_units: list[Unit]) -> str:
    """The spec with rules added to its se section that disable SE in `stage`:
    `at POINT in STAGE { enabled = false }` for each rule that placed a block there (a later
    rule for the same block and point replaces an earlier one). The rules are syntax-tree
    nodes added to the parsed spec, which is printed back (sedsl.language.printer: the spec's
    comments kept, a comment at the top saying what changed)."""
    from sedsl.compile.passes import plan_se

    config = net.se
    names = {u.block for u in stage_units}
    spans = {ins.span for ins in plan_se(net.base_ir, config) if ins.block in names}
    points = dict.fromkeys((r.where, r.target) for r in config.rules if r.span in spans)
    module = parse(net.sources[next(iter(net.sources))], str(spec))
    if not module.se:
        raise SpecError(f"{spec} has no se section")
    off = (ast.Setting("enabled", ast.Bool(False, GENERATED), GENERATED),)
    added = tuple(ast.Rule(where, target, (ast.PathRange(stage, None, GENERATED),), (), off,
                           GENERATED) for where, target in points)
    section = replaced(module.se[0], rules=(*module.se[0].rules, *added))
    note = ast.Comment(f"# sedsl excite --ablate stage: no SE blocks in {stage} (the last "
                       "rules of the se section)", GENERATED)
    return unparse(replaced(module, se=(section, *module.se[1:]),
                           comments=(note, *module.comments)))


def write_variant(net: Network, spec: Path, stage: str, stage_units: list[Unit],
                  folder: Path) -> Path:
    """Write the variant spec into `folder`, with copies of the local files it `use`s."""
    folder.mkdir(parents=True, exist_ok=True)
    home = spec.resolve().parent
    for name in list(net.sources)[1:]:
        source = Path(name).resolve()
        if source.is_relative_to(home) and not source.is_relative_to(LIBRARY_ROOT.resolve()):
            # local files are copied beside the variant; the block library is found anyway
            target = folder / source.relative_to(home)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    path = folder / spec.name
    path.write_text(variant_text(net, spec, stage, stage_units))
    return path


def mean_gates(stats: GateStats) -> dict[str, Tensor]:
    """Each recorded unit's mean gate over all samples, (C,) float64."""
    return {u.name: stats.sums[k][0].sum(0).double() / 2**32 / float(stats.count.sum())
            for k, u in enumerate(stats.units)}


def replaced_top1(model: nn.Module, data: Split, indices: list[int], chosen: list[Unit],
                  gates: dict[str, Tensor] | None, rank: int, world: int) -> float:
    """Top-1 with the chosen units' gates replaced by 1 (gates None) or by their mean gate.
    `model` is the plain lowering, whose gate layer's output feeds the scale."""

    def replace(k: int, s: Tensor) -> Tensor:
        if gates is None:
            return torch.ones_like(s)
        return gates[chosen[k].name].to(s.dtype).view(1, -1, 1, 1).expand_as(s)

    with hooks(model, chosen, replace):
        return top1(model, data, indices, rank, world)


def fold(net: Network, state: dict[str, Tensor], stage_units: list[Unit],
         gates: dict[str, Tensor]) -> tuple[dict[str, Tensor] | None, str]:
    """The variant's weights: the SE blocks' tensors dropped, each mean gate folded into the
    BN or conv that produces the U it scales. (None, why) when a block cannot be folded."""
    g = net.ir
    out = {k: v for k, v in state.items()
           if not any(k.startswith(u.name + ".") for u in stage_units)}
    for u in stage_units:
        rec = record(g, u.producer)
        users = set(g.successors(u.producer))
        if rec.role != "base" or rec.op not in ("bn", "conv"):
            return None, f"{u.name} scales the output of a {rec.op} ({u.producer})"
        if users != {f"{u.name}.squeeze", u.scale}:
            return None, f"{u.producer} also feeds {', '.join(sorted(users - {u.scale}))}"
        m = gates[u.name]
        for suffix in ("weight", "bias"):
            key = f"{u.producer}.{suffix}"
            if key in out:
                t = out[key].double()
                shape = (-1,) + (1,) * (t.dim() - 1)
                out[key] = (t * m.view(shape)).to(out[key].dtype)
    return out, ""


def ablate(net: Network, spec: Path, model: nn.Module, data: Split, indices: list[int],
           stats: GateStats, folder: Path, overrides: dict[str, Any], rank: int,
           world: int) -> list[dict[str, Any]]:
    """One row per stage with SE blocks; writes <folder>/<stage>/<spec> and folded.pt."""
    cost = net.cost()
    gates = mean_gates(stats)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    full = top1(model, data, indices, rank, world)
    rows = []
    stages = list(dict.fromkeys(u.stage for u in stats.units))
    for stage in stages:
        chosen = [u for u in stats.units if u.stage == stage]
        where = folder / stage
        path = write_variant(net, spec, stage, chosen, where) if rank == 0 else where / spec.name
        _sync()
        variant = load(path, **overrides)
        vcost = variant.cost()
        folded, why = fold(net, state, chosen, gates)
        folded_top1 = None
        if folded is not None:
            small = variant.to_torch(fused=False)
            small.load_state_dict(folded)
            folded_top1 = top1(small, data, indices, rank, world)
            if rank == 0:
                torch.save(folded, where / "folded.pt")
        rows.append({
            "stage": stage, "se_blocks": len(chosen), "top1": full,
            "identity_top1": replaced_top1(model, data, indices, chosen, None, rank, world),
            "mean_gate_top1": replaced_top1(model, data, indices, chosen, gates, rank, world),
            "folded_top1": folded_top1,
            "params_saved": cost.se.params - vcost.se.params,
            "flops_saved": cost.se.flops - vcost.se.flops,
            "se_params_share": (cost.se.params - vcost.se.params) / cost.overhead.params
            if cost.overhead.params else 0.0,
            "variant": str(path), "folded": str(where / "folded.pt") if folded else None,
            "not_folded": why or None,
        })
    return rows


def _sync() -> None:
    from sedsl.analysis import dist

    dist.barrier()
