"""The SE paper's SE-ResNet-50 ablations (Tables 10-15; specs/ablations/se_resnet50.se) against a
plain-torch reference: timm's legacy_seresnet50 (the authors' layout) with its SE modules and
bottleneck forward rewritten for each variant below. Parameter counts to the unit, outputs after
a weight transfer (fused and plain), and the cost sweep that gives the tables' cost columns."""

from __future__ import annotations

import copy
import json
import types
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

timm = pytest.importorskip("timm")

import sedsl  # noqa: E402
from sedsl.cli import app  # noqa: E402
from tests.conftest import SPECS, compiled  # noqa: E402
from tests.references import assert_same_outputs, n_params, randomise_bn  # noqa: E402

SPEC = "ablations/se_resnet50.se"
STAGES = {"layer1": "conv2", "layer2": "conv3", "layer3": "conv4", "layer4": "conv5"}


class VariantSE(nn.Module):
    """timm's legacy SEModule with a choice of squeeze and gate."""

    def __init__(self, channels: int, ratio: int, squeeze: str, gate: str) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // ratio, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(channels // ratio, channels, 1)
        self.gate = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}[gate]()
        self.max = squeeze == "max"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.amax((2, 3), keepdim=True) if self.max else x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.relu(self.fc1(z))))


def bottleneck_forward(where: str) -> Any:
    """timm's legacy Bottleneck.forward with the SE module moved to `where` (None: no SE)."""

    def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
        se = self.se_module
        out = se(x) if se is not None and where == "pre" else x
        out = self.relu(self.bn1(self.conv1(out)))
        out = self.relu(self.bn2(self.conv2(out)))
        if se is not None and where == "3x3":
            out = se(out)
        out = self.bn3(self.conv3(out))
        if se is not None and where == "standard":
            out = se(out)
        shortcut = self.downsample(x) if self.downsample is not None else x
        if se is not None and where == "identity":
            shortcut = se(shortcut)
        out = self.relu(out + shortcut)
        return se(out) if se is not None and where == "post" else out

    return forward


def ablated(base: nn.Module, where: str = "standard", ratio: int = 16, squeeze: str = "avg",
            gate: str = "sigmoid", stage: str = "all") -> nn.Module:
    model = copy.deepcopy(base)
    for layer, name in STAGES.items():
        for block in getattr(model, layer):
            channels = {"pre": block.conv1.in_channels, "3x3": block.conv2.out_channels}.get(
                where, block.conv3.out_channels)
            keep = stage in ("all", name)
            block.se_module = VariantSE(channels, ratio, squeeze, gate) if keep else None
            block.forward = types.MethodType(bottleneck_forward(where), block)
    return model.eval()


@pytest.fixture(scope="module")
def legacy() -> nn.Module:
    return randomise_bn(timm.create_model("legacy_seresnet50"))


VARIANTS = [  # (overrides of the spec, the same variant of the reference)
    pytest.param({}, {}, id="standard"),
    pytest.param({"ratio": 4}, {"ratio": 4}, id="table10-ratio4"),
    pytest.param({"squeeze": "max"}, {"squeeze": "max"}, id="table11-max"),
    pytest.param({"gate": "tanh"}, {"gate": "tanh"}, id="table12-tanh"),
    pytest.param({"gate": "relu"}, {"gate": "relu"}, id="table12-relu"),
    pytest.param({"stage": "conv3"}, {"stage": "conv3"}, id="table13-conv3"),
    pytest.param({"where": "pre"}, {"where": "pre"}, id="table14-pre"),
    pytest.param({"where": "post"}, {"where": "post"}, id="table14-post"),
    pytest.param({"where": "identity"}, {"where": "identity"}, id="table14-identity"),
    pytest.param({"where": "3x3"}, {"where": "3x3"}, id="table15-3x3"),
]


def test_default_is_the_released_se_resnet50() -> None:
    assert compiled(SPEC).cost().se == compiled("se_resnet50.se").cost().se


@pytest.mark.parametrize(("overrides", "reference"), VARIANTS)
def test_params_equal_the_reference(legacy: nn.Module, overrides: dict[str, Any],
                                    reference: dict[str, Any]) -> None:
    assert compiled(SPEC, **overrides).cost().se.params == n_params(ablated(legacy, **reference))


@pytest.mark.parametrize("ratio", [2, 8, 32])
def test_table10_ratios(legacy: nn.Module, ratio: int) -> None:
    assert compiled(SPEC, ratio=ratio).cost().se.params == n_params(ablated(legacy, ratio=ratio))


OUTPUT_VARIANTS = [  # the settings change together (test_lower covers the standard SE-ResNet-50)
    pytest.param({"squeeze": "max", "gate": "tanh", "stage": "conv3"},
                 {"squeeze": "max", "gate": "tanh", "stage": "conv3"}, id="max-tanh-conv3"),
    pytest.param({"gate": "relu", "ratio": 4}, {"gate": "relu", "ratio": 4}, id="relu-ratio4"),
    *(v for v in VARIANTS if v.id.startswith(("table14", "table15"))),
]


@pytest.mark.parametrize(("overrides", "reference"), OUTPUT_VARIANTS)
def test_outputs_equal_the_reference(legacy: nn.Module, overrides: dict[str, Any],
                                     reference: dict[str, Any]) -> None:
    theirs = ablated(legacy, **reference)
    net = compiled(SPEC, **overrides)
    for fused in (False, True):
        ours = sedsl.transfer_weights(theirs, net.to_torch(fused=fused))
        assert_same_outputs(ours, theirs, (3, 64, 64))


def test_sweep_gives_table14_in_one_command() -> None:
    """`sedsl cost --sweep where=...`: one document per position, each the cost of that spec."""
    spec = str(SPECS / SPEC)
    result = CliRunner().invoke(app, ["cost", spec, "--sweep", "where=standard,pre,post,identity",
                                      "--sweep", "squeeze=avg,max", "--json"])
    assert result.exit_code == 0, result.output
    docs = json.loads(result.output)
    assert [(d["sweep"]["where"], d["sweep"]["squeeze"]) for d in docs] == [
        (w, s) for w in ("standard", "pre", "post", "identity") for s in ("avg", "max")]
    for d in docs:
        cost = compiled(SPEC, **d["sweep"]).cost()
        assert d["se"] == {"params": cost.se.params, "flops": cost.se.flops}
