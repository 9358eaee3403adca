"""Analytic cost: parameters and FLOPs per node from the op table, rolled up by stage, block, op
and role. No tracing, no torch, no tensors: a 10-billion-parameter spec costs the same as a small
one. Conventions are documented in docs/cost_model.md."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from sedsl.ir.graph import Graph
from sedsl.ir.node import Node, input_shapes, records
from sedsl.ir.ops import OPS, Shape
from sedsl.ir.se import VARIANTS
from sedsl.record import Record


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


@dataclass(frozen=True)
class NodeCost:
    name: str
    op: str
    stage: str | None
    block: str | None
    role: str
    params: int
    flops: int


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


def node_costs(g: Graph, convention: str) -> list[NodeCost]:
    """Parameters and FLOPs of every node, in declaration order."""
    count = CONVENTIONS[convention]
    out = []
    for name, rec in records(g):
        ins = input_shapes(g, name)
        params = OPS[rec.op].params(rec.attrs, ins, rec.shape)
        out.append(NodeCost(name, rec.op, rec.stage, rec.block, rec.role, params, count(rec, ins)))
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
                len({n.name.rsplit(".", 1)[0] for n in ns if n.role == "se"}))
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
            },
            "by": by,
            "rows": [r.__dict__ for r in self.rows(by)],
        }


def _pct(part: int, whole: int) -> float:
    return round(100 * part / whole, 4) if whole else 0.0


def _estimate(se: Graph) -> Estimate:
    """The closed form over the SE blocks of the graph, read from their tags: each FC of C_in
    inputs and C_out outputs costs C_in * C_out, with the reduced width taken as C_b / r unrounded
    (C_b: the channels the reduction is measured against, the block's input for base = block_in).
    For the paper's block that is (2/r) * C * C_b, summed: (2/r) * sum_s N_s * C_s^2."""
    est, bias, rounding = Fraction(0), 0, Fraction(0)
    units = {rec.se.unit: rec.se.settings for _, rec in records(se) if rec.se is not None}
    for s in units.values():
        c, c_b, rd = int(s["channels"]), int(s["base_channels"]), int(s["rd_channels"])
        ideal = Fraction(rd) if s["width"] is not None else c_b / Fraction(str(s["ratio"]))
        width = {"rd": (ideal, rd), "c": (Fraction(c), c)}
        prev = (Fraction(c), c)
        for step in VARIANTS[str(s["variant"])].steps:
            if step.kind != "fc":
                continue
            out = width[step.width or "c"]
            est += prev[0] * out[0]
            rounding += prev[1] * out[1] - prev[0] * out[0]
            bias += out[1] if s["bias"] else 0
            prev = out
    return Estimate(est, bias, round(rounding), len(units))


def analyse(base: Graph, se: Graph, convention: str = "fvcore") -> Cost:
    """Cost of the base network and the SE network under one convention."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; one of {', '.join(CONVENTIONS)}")
    base_nodes, se_nodes = node_costs(base, convention), node_costs(se, convention)
    return Cost(
        network=str(se.graph["name"]), input=tuple(se.graph["input"]), convention=convention,
        base=Totals(sum(n.params for n in base_nodes), sum(n.flops for n in base_nodes)),
        se=Totals(sum(n.params for n in se_nodes), sum(n.flops for n in se_nodes)),
        nodes=se_nodes, estimate=_estimate(se),
    )
