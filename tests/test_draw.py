"""`sedsl graph --format svg|png`: the SVG parses, has one group per stage and one per block
(ResNet-50's 3-4-6-3 from the ResNet paper's Table 1), SE nodes carry their class, every node
and edge is drawn, --depth collapses to one box per block."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sedsl
from sedsl.cli import app
from sedsl.targets.draw import to_svg
from tests.conftest import SPECS

SVG = "{http://www.w3.org/2000/svg}"
R50 = SPECS / "se_resnet50.se"


def _groups(root: ET.Element, cls: str) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if cls in g.get("class", "").split()]


def test_svg_structure_full_depth() -> None:
    net = sedsl.load(R50)
    root = ET.fromstring(to_svg(net.graph))
    stages = _groups(root, "stage")
    assert [s.get("data-name") for s in stages] == ["stem", "conv2", "conv3", "conv4", "conv5",
                                                   "head"]
    blocks = {s.get("data-name"): len([b for b in _groups(s, "block")
                                       if b.get("data-name", "").count(".") == 1])
              for s in stages}
    assert [blocks[f"conv{i}"] for i in (2, 3, 4, 5)] == [3, 4, 6, 3]
    nodes = _groups(root, "node")
    assert len(nodes) == net.graph.number_of_nodes()
    assert len(_groups(root, "edge")) == net.graph.number_of_edges()
    se = {n.get("data-name") for n in nodes if "se" in n.get("class", "").split()}
    assert se == {name for name, rec in sedsl.ir.node.records(net.graph) if rec.role == "se"}
    assert len(se) == 16 * 6  # 16 SE blocks: squeeze, fc1, act, fc2, gate, scale
    for n in nodes:  # every node sits inside the frame of its stage
        name = n.get("data-name", "")
        if name != "input":
            stage = next(s for s in stages if n in list(s.iter(f"{SVG}g")))
            assert name.startswith(stage.get("data-name", "") + ".")


def test_depth_collapses_to_blocks() -> None:
    net = sedsl.load(R50)
    root = ET.fromstring(to_svg(net.graph, depth=2))
    names = [n.get("data-name") for n in _groups(root, "node")]
    assert sum(n.startswith("conv4.block") for n in names) == 6
    marked = [n for n in _groups(root, "node") if "has-se" in n.get("class", "").split()]
    assert len(marked) == 16  # every SE-ResNet block holds an SE unit
    stages = ET.fromstring(to_svg(net.graph, depth=1))
    assert len(_groups(stages, "node")) == 1 + 6  # the input and one box per stage


def test_senet154_draws_every_node(tmp_path: Path) -> None:
    target = tmp_path / "senet154.svg"
    done = CliRunner().invoke(app, ["graph", str(SPECS / "senet154.se"), "--format", "svg",
                                    "-o", str(target)])
    assert done.exit_code == 0, done.output
    root = ET.parse(target).getroot()
    net = sedsl.load(SPECS / "senet154.se")
    assert len(_groups(root, "node")) == net.graph.number_of_nodes()
    assert len(_groups(root, "stage")) == len({r.stage for _, r in sedsl.ir.node.records(net.graph)
                                               if r.stage})


def test_png(tmp_path: Path) -> None:
    pytest.importorskip("resvg_py")
    target = tmp_path / "r50.png"
    done = CliRunner().invoke(app, ["graph", str(R50), "--format", "png", "--depth", "2",
                                    "-o", str(target)])
    assert done.exit_code == 0, done.output
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 200 and height > 1000  # a tall picture of the whole network


def test_png_needs_output_and_depth_positive() -> None:  # usage errors: exit status 2
    assert CliRunner().invoke(app, ["graph", str(R50), "--format", "png"]).exit_code == 2
    assert CliRunner().invoke(app, ["graph", str(R50), "--format", "svg",
                                    "--depth", "0"]).exit_code == 2
