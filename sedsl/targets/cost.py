"""Analytic cost: parameters and FLOPs per node from the op table, rolled up by stage, block, op
and role. No tracing, no torch, no tensors: a 10-billion-parameter spec costs the same as a small
one. Conventions are documented in docs/cost_model.md."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from sedsl.ir.graph import Graph
from sedsl.ir.node import Node, SeTag, input_shapes, records
from sedsl.ir.ops import OPS, Shape, numel
from sedsl.ir.se import STEP_KINDS, VARIANTS
from sedsl.record import Record, asdict


def _fvcore(rec: Node, ins: list[Shape]) -> int:
    return OPS[rec.op].fvcore(rec.attrs, ins, rec.shape)


def _paper(rec: Node, ins: list[Shape]) -> int:
    """Multiply-adds of conv and FC layers, plus one op per element for the SE squeeze and scale."""
    return OPS[rec.op].count_paper(rec.attrs, ins, rec.shape)


def _flops(rec: Node, ins: list[Shape]) -> int:
    return 2 * OPS[rec.op].macs(rec.attrs, ins, rec.shape)


CONVENTIONS: dict[str, Callable[[Node, list[Shape]], int]] = {
    "fvcore": _fvcore,  # what fvcore.nn.FlopCountAnalysis counts on the plain-torch lowering
    "paper": _paper,  # the SE paper's Table 2 convention
    "flops": _flops,  # 2 x multiply-adds, as torch.utils.flop_counter counts
}


class NodeCost(Record):
    name: str
    op: str
    stage: str | None
    block: str | None
    role: str
    params: int
    flops: int
    unit: str | None  # the attention block the node belongs to (its SE tag's), if any
    traffic: int  # elements it reads and writes when run on its own (eager), for passes over U


class Totals(Record):
    params: int
    flops: int


class Estimate(Record):
    """The paper's closed form (2/r)·Σ C² over SE blocks, and why the exact count differs."""

    params: Fraction
    bias: int  # FC biases, which the closed form leaves out
    rounding: int  # 2·C·(reduced width - C/r): the reduced width is rounded to a whole number
    blocks: int


class Row(Record):
    key: str
    base_params: int
    se_params: int
    base_flops: int
    se_flops: int
    se_blocks: int
    se_passes: float  # passes over the feature map of the group's attention blocks (see passes)


def node_costs(g: Graph, convention: str) -> list[NodeCost]:
    """Parameters and FLOPs of every node, in declaration order."""
    count = CONVENTIONS[convention]
    out = []
    for name, rec in records(g):
        ins, op = input_shapes(g, name), OPS[rec.op]
        out.append(NodeCost(name, rec.op, rec.stage, rec.block, rec.role,
                            op.params(rec.attrs, ins, rec.shape), count(rec, ins),
                            rec.se.unit if rec.se else None, op.traffic(rec.attrs, ins, rec.shape)))
    return out


def state_elements(g: Graph) -> int:
    """Elements a lowered module holds: parameters and buffers (BN's running statistics)."""
    total = 0
    for name, rec in records(g):
        ins, op = input_shapes(g, name), OPS[rec.op]
        total += op.params(rec.attrs, ins, rec.shape) + op.buffers(rec.attrs, ins, rec.shape)
    return total


class Cost(Record):
    network: str
    input: Shape
    convention: str
    base: Totals
    se: Totals
    nodes: list[NodeCost]  # the SE network's nodes
    estimate: Estimate
    passes: dict[str, Fraction]  # per attention block, its passes over U (`block_passes`)
    variants: dict[str, int] = {}  # noqa: RUF012  SE blocks per variant, in network order

    @property
    def overhead(self) -> Totals:
        return Totals(self.se.params - self.base.params, self.se.flops - self.base.flops)

    def rows(self, by: str = "stage") -> list[Row]:
        """Base and SE cost grouped by stage, block or op, in network order."""
        key: Callable[[NodeCost], str] = {
            "stage": lambda n: n.stage or "(input)",
            "block": lambda n: n.block or n.stage or "(input)",
            "op": lambda n: n.op,
        }[by]
        groups: dict[str, list[NodeCost]] = {}
        for n in self.nodes:
            groups.setdefault(key(n), []).append(n)
        return [
            Row(k, sum(n.params for n in ns if n.role == "base"),
                sum(n.params for n in ns if n.role == "se"),
                sum(n.flops for n in ns if n.role == "base"),
                sum(n.flops for n in ns if n.role == "se"),
                len({n.unit for n in ns if n.unit is not None}),
                round(sum(float(self.passes[u]) for u in {n.unit for n in ns if n.unit}), 4))
            for k, ns in groups.items()
            if k != "(input)"
        ]

    def to_json(self, by: str = "stage") -> dict[str, Any]:
        """The document `sedsl cost --json` prints (schema: docs/cost_model.md)."""
        o = self.overhead
        est = self.estimate
        return {
            "network": self.network,
            "input": list(self.input),
            "convention": self.convention,
            "base": {"params": self.base.params, "flops": self.base.flops},
            "se": {"params": self.se.params, "flops": self.se.flops},
            "overhead": {
                "params": o.params, "flops": o.flops,
                "params_pct": _pct(o.params, self.base.params),
                "flops_pct": _pct(o.flops, self.base.flops),
            },
            "estimate": {
                "formula": "(2/r) * sum_s N_s * C_s^2",
                "params": round(float(est.params)),
                "difference": o.params - round(float(est.params)),
                "bias": est.bias, "rounding": est.rounding, "se_blocks": est.blocks,
                # parameters of steps other than 1x1 FCs (a channel conv, BN, layer norm, ...)
                "other": o.params - round(float(est.params)) - est.bias - est.rounding,
            },
            "se_passes": round(float(sum(self.passes.values(), Fraction(0))), 4),
            "se_variants": dict(self.variants),
            "by": by,
            "rows": [asdict(r) for r in self.rows(by)],
        }


def _pct(part: int, whole: int) -> float:
    return round(100 * part / whole, 4) if whole else 0.0


def _estimate(se: Graph) -> Estimate:
    """The closed form over the attention blocks of the graph, read from their tags: each FC of
    C_in inputs and C_out outputs costs C_in * C_out, with the reduced width taken as C_b / r
    unrounded (C_b: the channels the reduction is measured against, the block's input for base =
    block_in). For the paper's block that is (2/r) * C * C_b, summed: (2/r) * sum_s N_s * C_s^2.
    Parameters of other steps (a channel conv, BN, ...) are left out, as the paper leaves them."""
    est, bias, rounding = Fraction(0), 0, Fraction(0)
    for tag in _units(se).values():
        s, c = tag.settings, tag.channels
        ideal = Fraction(tag.rd_channels) if s.width is not None \
            else tag.base_channels / Fraction(str(s.ratio))
        width = {"rd": (ideal, tag.rd_channels), "c": (Fraction(c), c)}
        prev = (Fraction(c), c)
        for step in VARIANTS[s.variant].steps_for(s):
            if not STEP_KINDS[step.kind].fc_weights or step.width not in width:
                continue
            out = width[str(step.width)]
            est += prev[0] * out[0]
            rounding += prev[1] * out[1] - prev[0] * out[0]
            bias += out[1] if step.arg("bias", s.bias) else 0
            prev = out
    return Estimate(est, bias, round(rounding), len(_units(se)))


def _units(g: Graph) -> dict[str, SeTag]:
    """Each attention block's tag, by block."""
    return {rec.se.unit: rec.se for _, rec in records(g) if rec.se is not None}


def block_passes(g: Graph, nodes: list[NodeCost]) -> dict[str, Fraction]:
    """Per attention block, the elements its nodes read and write when each runs on its own
    (eager PyTorch), in units of the feature map U it recalibrates (its largest input): reads
    and writes of U-sized tensors, what sets these blocks' wall-clock time
    (docs/cost_model.md)."""
    size: dict[str, int] = {}
    for name, rec in records(g):
        if rec.se is not None:
            biggest = max((numel(s) for s in input_shapes(g, name)), default=1)
            size[rec.se.unit] = max(size.get(rec.se.unit, 1), biggest)
    traffic: dict[str, int] = {}
    for n in nodes:
        if n.unit is not None:
            traffic[n.unit] = traffic.get(n.unit, 0) + n.traffic
    return {u: Fraction(t, size[u]) for u, t in traffic.items()}


def analyse(base: Graph, se: Graph, convention: str = "fvcore") -> Cost:
    """Cost of the base network and the SE network under one convention."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; one of {', '.join(CONVENTIONS)}")
    base_nodes, se_nodes = node_costs(base, convention), node_costs(se, convention)
    return Cost(
        network=str(se.graph["name"]), input=tuple(se.graph["input"]), convention=convention,
        base=Totals(sum(n.params for n in base_nodes), sum(n.flops for n in base_nodes)),
        se=Totals(sum(n.params for n in se_nodes), sum(n.flops for n in se_nodes)),
        nodes=se_nodes, estimate=_estimate(se), passes=block_passes(se, se_nodes),
        variants=dict(Counter(tag.settings.variant for tag in _units(se).values())),
    )
