"""The graph IR: a `sedsl.ir.graph.Graph` (networkx.DiGraph's layout, without networkx) whose node
ids are hierarchical names and whose nodes each carry one frozen `Node` record; edges carry the
input `port`. Schema: docs/ir.md."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sedsl.errors import Span
from sedsl.ir.graph import Graph, topological_order
from sedsl.ir.ops import Attr, Shape
from sedsl.ir.se import SeSettings
from sedsl.record import Record

FORMAT = "sedsl.ir.graph/2"
ROLES = ("base", "se")


class SeTag(Record):
    """Which attention block a node belongs to, and what that block is."""

    unit: str  # the block: "conv2.block1.se"
    step: str  # its step ("squeeze", "fc1", ..., sedsl.ir.se.VARIANTS); "block" for a fused node
    settings: SeSettings  # the block's settings, resolved (its variant's defaults in place)
    channels: int  # C of the tensor it recalibrates
    base_channels: int  # the C its reduction is measured against (the block's input for block_in)
    rd_channels: int  # the reduced width

    def to_json(self) -> dict[str, Any]:
        sizes = {"channels": self.channels, "base_channels": self.base_channels,
                 "rd_channels": self.rd_channels}
        return {"unit": self.unit, "step": self.step,
                "settings": {**self.settings.to_json(), **sizes}}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SeTag:
        s = doc["settings"]
        return cls(doc["unit"], doc["step"], SeSettings.from_json(s), int(s["channels"]),
                   int(s["base_channels"]), int(s["rd_channels"]))


class Node(Record):
    """What one node of the graph is. Treat `attrs` as read-only; passes build new records."""

    op: str  # a key of sedsl.ir.ops.OPS
    attrs: Mapping[str, Attr]  # the op's arguments, normalised (pairs are 2-tuples)
    shape: Shape  # output shape without the batch: (C, H, W) or (F,)
    stage: str | None  # top-level statement of the network the node belongs to ("conv4")
    block: str | None  # innermost block instance ("conv4.block3")
    kind: str | None  # that instance's block definition ("bottleneck")
    branch: str | None  # branch inside that instance ("residual", "shortcut", "b1")
    role: str  # "base" or "se"
    span: Span  # the spec text the node came from
    se: SeTag | None = None  # for SE nodes: their SE block


def record(g: Graph, name: str) -> Node:
    """The record of node `name`."""
    rec: Node = g.nodes[name]["record"]
    return rec


def records(g: Graph) -> Iterator[tuple[str, Node]]:
    """(name, record) in declaration order."""
    for name, data in g.nodes(data=True):
        yield name, data["record"]


def inputs(g: Graph, name: str) -> list[str]:
    """The producers of `name`'s inputs, in port order."""
    return [u for u, _, _ in sorted(g.in_edges(name, data="port"), key=lambda e: e[2])]


def input_shapes(g: Graph, name: str) -> list[Shape]:
    return [record(g, u).shape for u in inputs(g, name)]


def execution_order(g: Graph) -> list[str]:
    """A topological order that keeps declaration order wherever the data flow allows."""
    index = {name: i for i, name in enumerate(g.nodes)}
    return topological_order(g, key=index.__getitem__)


def add_node(g: Graph, name: str, rec: Node, sources: list[str]) -> None:
    """Add `name` with its inputs wired to ports 0, 1, ... in order."""
    g.add_node(name, record=rec)
    for port, src in enumerate(sources):
        g.add_edge(src, name, port=port)
