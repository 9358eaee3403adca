"""The IR's directed graph: networkx.DiGraph's storage and the part of its API that sedsl uses,
without importing networkx (its ~400 modules cost a command-line run about 300 ms).

`Graph` is sedsl's own typed container; `to_networkx()` copies it into a real
`networkx.DiGraph` through networkx's public API, and `from_networkx()` copies one back, so
neither shares storage with the other (the node records themselves are immutable). Every method
here behaves as the networkx method of the same name (tests/test_graph.py checks them against
networkx). Nodes are sedsl's dotted names; node data is `{"record": ir.Node}`; edge data is
`{"port": int}` (docs/ir.md).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import networkx as nx

Data = dict[str, Any]


class Graph:
    """A directed graph with node and edge attributes, networkx.DiGraph's subset."""

    def __init__(self, **attr: Any):
        self.graph: Data = dict(attr)
        self._node: dict[str, Data] = {}
        self._succ: dict[str, dict[str, Data]] = {}
        self._pred: dict[str, dict[str, Data]] = {}

    # --- building ---------------------------------------------------------------------------

    def add_node(self, n: str, **attr: Any) -> None:
        if n not in self._node:
            self._succ[n], self._pred[n], self._node[n] = {}, {}, {}
        self._node[n].update(attr)

    def add_edge(self, u: str, v: str, **attr: Any) -> None:
        for n in (u, v):
            if n not in self._node:
                self.add_node(n)
        data = self._succ[u].get(v, {})
        data.update(attr)
        self._succ[u][v] = self._pred[v][u] = data

    def remove_edge(self, u: str, v: str) -> None:
        del self._succ[u][v]
        del self._pred[v][u]

    def remove_edges_from(self, edges: Iterable[tuple[str, str]]) -> None:
        for u, v in edges:
            if v in self._succ.get(u, {}):
                self.remove_edge(u, v)

    def copy(self) -> Graph:
        """Shallow copies of every attribute dict, as networkx's `copy()`."""
        out = Graph(**self.graph)
        for n, data in self._node.items():
            out.add_node(n, **data)
        for u, v, data in self.edges(data=True):
            out.add_edge(u, v, **data)
        return out

    # --- reading ----------------------------------------------------------------------------

    @property
    def nodes(self) -> NodeView:
        return NodeView(self._node)

    @property
    def edges(self) -> EdgeView:
        return EdgeView(self._succ)

    def __contains__(self, n: object) -> bool:
        return n in self._node

    def __iter__(self) -> Iterator[str]:
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)

    def has_node(self, n: str) -> bool:
        return n in self._node

    def number_of_nodes(self) -> int:
        return len(self._node)

    def number_of_edges(self) -> int:
        return sum(len(nbrs) for nbrs in self._succ.values())

    def successors(self, n: str) -> Iterator[str]:
        return iter(self._succ[n])

    def predecessors(self, n: str) -> Iterator[str]:
        return iter(self._pred[n])

    def in_degree(self, n: str) -> int:
        return len(self._pred[n])

    def out_degree(self, n: str) -> int:
        return len(self._succ[n])

    def in_edges(self, nbunch: str | Iterable[str] | None = None,
                 data: bool | str = False, default: Any = None) -> list[tuple[Any, ...]]:
        """(u, n) for each node n of nbunch (one node, or several) and each of its producers."""
        return [(u, n, *_data(d, data, default))
                for n in self._bunch(nbunch) for u, d in self._pred[n].items()]

    def out_edges(self, nbunch: str | Iterable[str] | None = None,
                  data: bool | str = False, default: Any = None) -> list[tuple[Any, ...]]:
        return [(n, v, *_data(d, data, default))
                for n in self._bunch(nbunch) for v, d in self._succ[n].items()]

    def _bunch(self, nbunch: str | Iterable[str] | None) -> Iterable[str]:
        if nbunch is None:
            return self._node
        if isinstance(nbunch, str):  # one node (sedsl's node names are strings)
            return (nbunch,)
        return [n for n in nbunch if n in self._node]

    # --- networkx ---------------------------------------------------------------------------

    def to_networkx(self) -> nx.DiGraph:
        """A copy of this graph as a networkx.DiGraph, through networkx's public API (imports
        networkx); the node records are immutable and shared."""
        import networkx as nx

        g = nx.DiGraph(**self.graph)
        g.add_nodes_from((n, dict(d)) for n, d in self._node.items())
        g.add_edges_from((u, v, dict(d)) for u, nbrs in self._succ.items()
                         for v, d in nbrs.items())
        return g

    @classmethod
    def from_networkx(cls, g: nx.DiGraph) -> Graph:
        """A copy of a networkx.DiGraph (nodes and edges in its order) as a Graph."""
        out = cls(**g.graph)
        for n, d in g.nodes(data=True):
            out.add_node(n, **d)
        for u, v, d in g.edges(data=True):
            out.add_edge(u, v, **d)
        return out


def _data(d: Data, data: bool | str, default: Any) -> tuple[Any, ...]:
    """networkx's `data=` argument: nothing, the whole dict, or one attribute."""
    if data is False:
        return ()
    if data is True:
        return (d,)
    return (d.get(data, default),)


class NodeView:
    """`g.nodes`: iterate names, `g.nodes[n]` for the data, `g.nodes(data=...)` for pairs."""

    def __init__(self, node: dict[str, Data]):
        self._node = node

    def __iter__(self) -> Iterator[str]:
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)

    def __contains__(self, n: object) -> bool:
        return n in self._node

    def __getitem__(self, n: str) -> Data:
        return self._node[n]

    def __call__(self, data: bool | str = False, default: Any = None) -> Iterator[Any]:
        if data is False:
            return iter(self._node)
        return ((n, *_data(d, data, default)) for n, d in self._node.items())


class EdgeView:
    """`g.edges`: iterate (u, v), `g.edges[u, v]` for the data, `g.edges(data=...)`."""

    def __init__(self, succ: dict[str, dict[str, Data]]):
        self._succ = succ

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((u, v) for u, nbrs in self._succ.items() for v in nbrs)

    def __len__(self) -> int:
        return sum(len(nbrs) for nbrs in self._succ.values())

    def __getitem__(self, edge: tuple[str, str]) -> Data:
        u, v = edge
        return self._succ[u][v]

    def __call__(self, nbunch: str | None = None, data: bool | str = False,
                 default: Any = None) -> Iterator[tuple[Any, ...]]:
        sources = self._succ if nbunch is None else {nbunch: self._succ[nbunch]}
        return ((u, v, *_data(d, data, default))
                for u, nbrs in sources.items() for v, d in nbrs.items())


# --- algorithms ---------------------------------------------------------------------------------


def topological_order(g: Graph, key: Callable[[str], Any]) -> list[str]:
    """networkx's lexicographical_topological_sort: of the nodes ready to run, the one with the
    smallest key first. Raises ValueError on a cycle."""
    order = {n: i for i, n in enumerate(g)}
    waiting = {n: g.in_degree(n) for n in g if g.in_degree(n)}
    ready = [(key(n), order[n], n) for n in g if not g.in_degree(n)]
    heapq.heapify(ready)
    out = []
    while ready:
        *_, n = heapq.heappop(ready)
        out.append(n)
        for child in g.successors(n):
            waiting[child] -= 1
            if not waiting[child]:
                del waiting[child]
                heapq.heappush(ready, (key(child), order[child], child))
    if waiting:
        raise ValueError(f"the graph has a cycle: {' -> '.join(find_cycle(g))}")
    return out


def find_cycle(g: Graph) -> list[str]:
    """The nodes of one directed cycle in order (empty if there is none); no recursion."""
    colour: dict[str, int] = {}  # absent: unvisited, 1: on the current path, 2: done
    for root in g:
        if root in colour:
            continue
        path, stack = [root], [iter(g.successors(root))]
        colour[root] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                colour[path.pop()] = 2
                stack.pop()
            elif colour.get(child) == 1:
                return path[path.index(child):]
            elif child not in colour:
                colour[child] = 1
                path.append(child)
                stack.append(iter(g.successors(child)))
    return []
