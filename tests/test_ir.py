"""The graph IR: lossless JSON round trip, GraphML and DOT exports, the documented schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import networkx as nx
import pytest

from sedsl.compile import passes
from sedsl.ir import serialize
from sedsl.ir.node import Node, execution_order, records
from tests.conftest import SPECS, compiled

SPEC_FILES = sorted(p.name for p in SPECS.glob("*.se"))


@pytest.mark.parametrize("spec", SPEC_FILES)
def test_json_round_trip_is_lossless(spec: str) -> None:
    g = compiled(spec).graph
    back = serialize.loads(serialize.dumps(g))
    assert list(back.nodes) == list(g.nodes)
    assert [r for _, r in records(back)] == [r for _, r in records(g)]
    assert sorted(back.edges(data="port")) == sorted(g.edges(data="port"))
    assert back.graph == g.graph
    assert serialize.dumps(back) == serialize.dumps(g)
    passes.verify(back)


def test_round_tripped_graph_lowers_and_costs_the_same() -> None:
    net = compiled("se_resnext50.se")
    back = serialize.loads(serialize.dumps(net.graph))
    from sedsl.targets.cost import analyse
    assert analyse(net.base, back).se == net.cost().se
    assert passes.fuse_se(back).number_of_nodes() == passes.fuse_se(net.graph).number_of_nodes()


def test_json_is_node_link() -> None:
    doc = json.loads(serialize.dumps(compiled("se_resnet50.se").graph))
    g = nx.node_link_graph(doc, edges="edges")  # networkx reads it as is
    assert g.number_of_nodes() == len(doc["nodes"])
    node = next(n for n in doc["nodes"] if n["id"] == "conv2.block1.se.fc1")
    tag = node.pop("se")
    assert tag["unit"] == "conv2.block1.se" and tag["step"] == "fc1"
    assert tag["settings"]["ratio"] == 16 and tag["settings"]["rd_channels"] == 16
    assert node == {
        "id": "conv2.block1.se.fc1", "op": "conv",
        "attrs": {"c_out": 16, "kernel": [1, 1], "stride": [1, 1], "padding": [0, 0],
                  "dilation": [1, 1], "groups": 1, "bias": True},
        "shape": [16, 1, 1], "stage": "conv2", "block": "conv2.block1", "kind": "bottleneck",
        "branch": "residual", "role": "se", "span": node["span"],
    }
    assert node["span"][0].endswith("se_resnet50.se")


def test_schema_is_documented() -> None:
    """Every field of a node record appears in docs/ir.md."""
    doc = (Path(__file__).parents[1] / "docs" / "ir.md").read_text()
    for field in Node._fields:
        assert re.search(rf"`{field}`", doc), field


def test_graphml_and_dot() -> None:
    g = compiled("se_resnet50.se").graph
    text = "\n".join(nx.generate_graphml(serialize.flat(g)))
    back = nx.parse_graphml(text)
    assert back.number_of_nodes() == g.number_of_nodes()
    assert back.nodes["conv2.block1.se.fc1"]["role"] == "se"
    dot = serialize.to_dot(g)
    assert dot.count("->") == g.number_of_edges()
    assert '"conv2.block1.se.scale"' in dot


def test_execution_order_is_topological_and_keeps_declaration_order() -> None:
    g = compiled("se_resnet50.se").graph
    order = execution_order(g)
    position = {n: i for i, n in enumerate(order)}
    assert all(position[u] < position[v] for u, v in g.edges)
    assert order == list(g.nodes)  # the unfused graph is declared in execution order
