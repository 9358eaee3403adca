"""sedsl.ir.graph.Graph behaves as networkx.DiGraph: the same answers from every method sedsl uses,
the same topological order, and `to_networkx()` / `from_networkx()` copy through the public API."""

from __future__ import annotations

import itertools
import random

import networkx as nx
import pytest

import sedsl
from sedsl.ir.graph import Graph, find_cycle, topological_order
from tests.conftest import SPECS


def _random_dag(seed: int, n: int = 40) -> tuple[Graph, nx.DiGraph]:
    """The same random DAG built twice: as a Graph and as a networkx.DiGraph."""
    rnd = random.Random(seed)
    names = [f"n{rnd.randrange(10**6)}_{i}" for i in range(n)]  # insertion order != sorted
    ours, theirs = Graph(name="g"), nx.DiGraph(name="g")
    for i, name in enumerate(names):
        for g in (ours, theirs):
            g.add_node(name, record=i)
        for j in rnd.sample(range(i), min(i, rnd.randrange(3))):
            port = rnd.randrange(3)
            for g in (ours, theirs):
                g.add_edge(names[j], name, port=port)
    return ours, theirs


@pytest.mark.parametrize("seed", range(5))
def test_every_method_answers_as_networkx(seed: int) -> None:
    ours, theirs = _random_dag(seed)
    assert list(ours.nodes) == list(theirs.nodes) and len(ours) == len(theirs)
    assert list(ours.nodes(data="record")) == list(theirs.nodes(data="record"))
    assert list(ours.nodes(data=True)) == list(theirs.nodes(data=True))
    assert list(ours.edges) == list(theirs.edges)
    assert list(ours.edges(data="port")) == list(theirs.edges(data="port"))
    assert ours.number_of_edges() == theirs.number_of_edges()
    some = list(theirs.nodes)[::3]
    assert ours.in_edges(set(some), data="port") == list(theirs.in_edges(set(some), data="port"))
    for n in theirs.nodes:
        assert ours.nodes[n] == theirs.nodes[n]
        assert list(ours.successors(n)) == list(theirs.successors(n))
        assert list(ours.predecessors(n)) == list(theirs.predecessors(n))
        assert ours.in_degree(n) == theirs.in_degree(n)
        assert ours.out_degree(n) == theirs.out_degree(n)
        assert ours.in_edges(n, data="port") == list(theirs.in_edges(n, data="port"))
        assert ours.out_edges(n, data=True) == list(theirs.out_edges(n, data=True))
        assert list(ours.edges(n, data="port")) == list(theirs.edges(n, data="port"))
    drop = list(theirs.edges)[::4]
    ours.remove_edges_from(drop)
    theirs.remove_edges_from(drop)
    assert list(ours.edges(data=True)) == list(theirs.edges(data=True))


@pytest.mark.parametrize("seed", range(5))
def test_topological_order_is_networkx_lexicographical_sort(seed: int) -> None:
    ours, theirs = _random_dag(seed)
    rank = {n: random.Random(seed).random() for n in theirs}
    assert topological_order(ours, rank.__getitem__) == \
        list(nx.lexicographical_topological_sort(theirs, key=rank.__getitem__))


def test_execution_order_of_a_real_network_is_networkx_s() -> None:
    net = sedsl.load(SPECS / "se_resnext101.se")
    index = {n: i for i, n in enumerate(net.graph.nodes)}
    from sedsl.ir.node import execution_order

    assert execution_order(net.ir) == \
        list(nx.lexicographical_topological_sort(net.graph, key=index.__getitem__))


def test_a_cycle_is_found_where_networkx_finds_one() -> None:
    ours, theirs = _random_dag(7)
    assert find_cycle(ours) == [] and nx.is_directed_acyclic_graph(theirs)
    a, b = next(iter(theirs.edges))  # close a cycle: b -> ... -> a -> b
    path = [b, "x1", "x2", a]
    for u, v in itertools.pairwise(path):
        ours.add_edge(u, v)
        theirs.add_edge(u, v)
    cycle = find_cycle(ours)
    assert set(cycle) == {u for u, _ in nx.find_cycle(theirs)}
    with pytest.raises(ValueError, match="cycle"):
        topological_order(ours, str)


def test_networkx_conversions_are_copies() -> None:
    net = sedsl.load(SPECS / "se_resnet50.se")
    g = net.graph
    assert isinstance(g, nx.DiGraph) and g is net.graph
    assert nx.is_directed_acyclic_graph(g) and g.number_of_nodes() == net.ir.number_of_nodes()
    assert list(g.nodes) == list(net.ir.nodes) and list(g.edges(data="port")) == list(
        net.ir.edges(data="port")) and g.graph == net.ir.graph
    g.add_node("extra", record=None)  # networkx's graph is the user's own: the IR is untouched
    assert "extra" not in net.ir
    back = Graph.from_networkx(g)
    back.add_edge("extra", "input", port=9)
    assert not g.has_edge("extra", "input") and list(back.nodes) == list(g.nodes)
    copy = net.ir.copy()
    copy.graph["name"] = "other"
    assert net.ir.graph["name"] != "other" and list(copy.edges) == list(net.ir.edges)
