"""The graph IR written out and read back: JSON (node-link, lossless), GraphML and DOT."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sedsl.errors import Span
from sedsl.ir.graph import Graph
from sedsl.ir.node import FORMAT, Node, SeTag, records
from sedsl.ir.ops import Attr
from sedsl.record import asdict

if TYPE_CHECKING:
    import networkx as nx



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
