"""`sedsl cost --by layer` and `--plot`: per-layer tables whose totals are `sedsl cost`'s, whose
activations are fvcore's ActivationCountAnalysis on the lowered module, whose memory estimate is
what autograd saves, and sweep plots written as SVG."""

from __future__ import annotations

import json
import logging
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sedsl
from sedsl.cli import app
from sedsl.targets import report
from tests.conftest import SPECS

R50 = str(SPECS / "se_resnet50.se")


def _cli(*args: str) -> str:
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, done.output
    return done.output


@pytest.mark.parametrize("convention", ["fvcore", "paper", "flops"])
def test_layer_totals_equal_cost_totals(convention: str) -> None:
    total = json.loads(_cli("cost", R50, "--json", "--convention", convention))["se"]
    doc = json.loads(_cli("cost", R50, "--by", "layer", "--depth", "3", "--json",
                          "--convention", convention))
    for depth in (1, 2, 3):
        rows = [r for r in doc["layers"] if r["depth"] == depth]
        leaves = [r for r in doc["layers"] if r["depth"] < depth and
                  not any(o["name"].startswith(r["name"] + ".") for o in doc["layers"])]
        for key in ("params", "flops"):  # every level adds up to the network (leaves included)
            assert sum(r[key] for r in rows + leaves) == total[key]
    assert doc["total"]["params"] == total["params"] and doc["total"]["flops"] == total["flops"]


def test_depth_collapses_to_stages_and_blocks() -> None:
    net = sedsl.load(R50)
    names = [row.name for row in report.layers(net.graph, depth=1)]
    assert names == ["stem", "conv2", "conv3", "conv4", "conv5", "head"]
    blocks = [row for row in report.layers(net.graph, depth=2) if row.depth == 2]
    assert sum(row.op == "bottleneck" for row in blocks) == 3 + 4 + 6 + 3  # ResNet-50's blocks
    se_rows = [row for row in report.layers(net.graph, depth=3) if row.se]
    assert len(se_rows) == 16 and all(row.name.endswith(".se") for row in se_rows)


def test_activations_equal_fvcore_per_module() -> None:
    import torch

    net = sedsl.load(R50, input="32")  # fvcore's trace time grows with the ops, not the size
    model = net.to_torch(fused=False).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        from fvcore.nn import ActivationCountAnalysis

        analysis = ActivationCountAnalysis(model, torch.zeros(1, 3, 32, 32))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        by_module = analysis.by_module()
    assert analysis.total() == report.total_activations(net.graph)
    for row in report.layers(net.graph, depth=2):  # lowered modules are named as the nodes
        assert by_module[row.name] == row.activations, row.name


def test_training_memory_matches_saved_tensors() -> None:
    """The activation part of the estimate against the bytes autograd keeps for backward."""
    import torch

    for spec in ("se_resnext50.se",):  # grouped convs, in-place ReLUs and adds, SE blocks
        net = sedsl.load(SPECS / spec, input="32")
        model = net.to_torch(fused=False).train()
        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor, saved: dict[int, int] = saved,
                 weights: set[int] = weights) -> torch.Tensor:
            if t.untyped_storage().data_ptr() not in weights:
                saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.randn(2, 3, 32, 32))
        params = sum(p.numel() for p in model.parameters())
        estimate = (report.training_memory(net.graph, params, batch=2)
                    - report.training_memory(net.graph, params, batch=0))
        measured = sum(saved.values())
        assert abs(estimate - measured) / measured < 0.05, (spec, estimate, measured)


def test_layer_table_formats() -> None:
    table = _cli("cost", R50, "--by", "layer", "--depth", "1", "--batch", "1,64")
    assert "conv4" in table and "batch 64:" in table and "#activations" in table
    markdown = _cli("cost", R50, "--by", "layer", "--markdown")
    assert markdown.startswith("| module | op | output |")
    assert " conv2.block1 | bottleneck |" in markdown
    csv_text = _cli("cost", R50, "--by", "layer", "--csv", "--depth", "1")
    assert len(csv_text.strip().splitlines()) == 1 + 6
    assert CliRunner().invoke(app, ["cost", R50, "--by", "layer", "--batch", "x"]).exit_code == 2


def test_sweep_plot_svg(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "sweep.svg"
    _cli("cost", R50, "--ratio", "4,8,16", "--plot", str(target))
    svg = ET.parse(target).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    text = target.read_text()
    for stage in ("conv2", "conv3", "conv4", "conv5"):  # the legend names every SE stage
        assert stage in text
    bars = [el for el in svg.iter("{http://www.w3.org/2000/svg}g")
            if el.get("id", "").startswith("patch")]
    assert len(bars) >= 2 * 3 * 4  # two panels x three ratios x four stages
