"""The graph IR: a `sedsl.ir.graph.Graph` (networkx.DiGraph's layout, without networkx) whose node
ids are hierarchical names and whose nodes each carry one frozen `Node` record; edges carry the
input `port`. Schema: docs/ir.md."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sedsl.errors import Span
from sedsl.ir.graph import Graph, topological_order
from sedsl.ir.ops import Attr, Shape
from sedsl.record import Record

if TYPE_CHECKING:
    import networkx as nx

FORMAT = "sedsl.ir.graph/2"
ROLES = ("base", "se")


class SeTag(Record):
    """Which SE block a node belongs to, and what that block is."""

    unit: str  # the SE block: "conv2.block1.se"
    step: str  # its step ("squeeze", "fc1", ..., sedsl.ir.se.VARIANTS); "block" for a fused node
    settings: Mapping[str, Any]  # sedsl.ir.se.SeSettings as data, plus channels and rd_channels

    def to_json(self) -> dict[str, Any]:
        return {"unit": self.unit, "step": self.step, "settings": dict(self.settings)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SeTag:
        return cls(doc["unit"], doc["step"], dict(doc["settings"]))


@dataclass(frozen=True)
class Node:
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


# --- JSON (node-link), GraphML, DOT -------------------------------------------------------------


def _attr_from_json(value: Any) -> Attr:
    return tuple(value) if isinstance(value, list) else value


def to_json(g: Graph) -> dict[str, Any]:
    """The graph as a JSON-ready node-link document."""
    nodes = []
    for name, rec in records(g):
        data = asdict(rec)
        data["attrs"] = dict(rec.attrs)
        data["shape"] = list(rec.shape)
        data["span"] = rec.span.to_json()
        data["se"] = rec.se.to_json() if rec.se else None
        nodes.append({"id": name, **data})
    edges = [{"source": u, "target": v, "port": p} for u, v, p in g.edges(data="port")]
    return {"format": FORMAT, "directed": True, "multigraph": False,
            "graph": dict(g.graph), "nodes": nodes, "edges": edges}


def from_json(doc: Mapping[str, Any]) -> Graph:
    """Rebuild the graph `to_json` wrote."""
    if doc.get("format") != FORMAT:
        raise ValueError(f"not a sedsl graph (format {doc.get('format')!r}, expected {FORMAT!r})")
    g = Graph(**doc["graph"])
    g.graph["input"] = tuple(g.graph["input"])
    g.graph["blocks"] = dict(g.graph.get("blocks", {}))
    for n in doc["nodes"]:
        rec = Node(
            op=n["op"], attrs={k: _attr_from_json(v) for k, v in n["attrs"].items()},
            shape=tuple(n["shape"]), stage=n["stage"], block=n["block"], kind=n["kind"],
            branch=n["branch"], role=n["role"], span=Span.from_json(n["span"]),
            se=SeTag.from_json(n["se"]) if n.get("se") else None,
        )
        g.add_node(n["id"], record=rec)
    for e in doc["edges"]:
        g.add_edge(e["source"], e["target"], port=e["port"])
    return g


def dumps(g: Graph) -> str:
    return json.dumps(to_json(g), indent=1)


def loads(text: str) -> Graph:
    return from_json(json.loads(text))


def flat(g: Graph) -> nx.DiGraph:
    """A networkx copy with scalar node attributes only, for GraphML and other tools."""
    import networkx as nx

    out = nx.DiGraph(name=g.graph.get("name", ""))
    for name, rec in records(g):
        out.add_node(name, op=rec.op, shape="x".join(map(str, rec.shape)),
                     attrs=json.dumps(dict(rec.attrs)), stage=rec.stage or "",
                     block=rec.block or "", kind=rec.kind or "", branch=rec.branch or "",
                     role=rec.role, span=str(rec.span), se_unit=rec.se.unit if rec.se else "")
    for u, v, p in g.edges(data="port"):
        out.add_edge(u, v, port=p)
    return out


def to_dot(g: Graph) -> str:
    """Graphviz source: one box per node, SE nodes filled, clustered by stage."""
    lines = [f'digraph "{g.graph.get("name", "sedsl")}" {{', "  node [shape=box fontsize=10];"]
    for name, rec in records(g):
        label = f"{name}\\n{rec.op} {'x'.join(map(str, rec.shape))}"
        style = ' style=filled fillcolor="#ffd9a8"' if rec.role == "se" else ""
        lines.append(f'  "{name}" [label="{label}"{style}];')
    for u, v, p in g.edges(data="port"):
        lines.append(f'  "{u}" -> "{v}"' + (f' [label="{p}"]' if p else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"
