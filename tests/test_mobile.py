"""MobileNetV3 and EfficientNet specs against torchvision: parameter counts to the unit (every
EfficientNet size, built without initialising its weights), BN eps, and outputs after a weight
transfer (MobileNetV3-Small and -Large, EfficientNet-B0), fused and plain."""

from __future__ import annotations

import pytest
from torch import nn

tvm = pytest.importorskip("torchvision.models")

from tests.conftest import compiled  # noqa: E402
from tests.references import (  # noqa: E402
    assert_same_outputs,
    n_params,
    randomise_bn,
    transferred,
    uninitialised_params,
)


def bn_eps(model: nn.Module) -> set[float]:
    return {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)}


def spec_eps(spec: str, **overrides: object) -> set[float]:
    g = compiled(spec, **overrides).graph
    return {float(d["record"].attrs["eps"]) for _, d in g.nodes(data=True)
            if d["record"].op == "bn"}


@pytest.mark.parametrize("size", ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"])
def test_efficientnet_params_equal_torchvision(size: str) -> None:
    """Analytic counts for all sizes (B7's 66M parameters cost no memory here)."""
    build = getattr(tvm, f"efficientnet_{size}")
    assert compiled("efficientnet.se", size=size).cost().se.params == uninitialised_params(build)


@pytest.mark.parametrize("size", ["b0", "b5"])
def test_efficientnet_bn_eps_equal_torchvision(size: str) -> None:
    """torchvision's B0-B4 keep BatchNorm2d's eps (1e-5), B5-B7 use 1e-3."""
    theirs = getattr(tvm, f"efficientnet_{size}")()
    assert spec_eps("efficientnet.se", size=size) == bn_eps(theirs)


def test_efficientnet_b0_module_params() -> None:
    net = compiled("efficientnet.se")
    assert n_params(net.to_torch(fused=False)) == n_params(tvm.efficientnet_b0())
    assert sum(1 for n in net.graph if n.endswith(".se.fc1")) == 16  # one per MBConv block


@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
def test_efficientnet_b0_outputs_equal_torchvision(fused: bool) -> None:
    theirs = randomise_bn(tvm.efficientnet_b0())
    assert_same_outputs(transferred(theirs, compiled("efficientnet.se"), fused), theirs,
                        (3, 64, 64))


@pytest.mark.parametrize("spec", [
    "mobilenet_v3_large.se", "mobilenet_v3_small.se"])
def test_mobilenet_v3_params_equal_torchvision(spec: str) -> None:
    theirs = getattr(tvm, spec.removesuffix(".se"))()
    net = compiled(spec)
    assert bn_eps(theirs) == spec_eps(spec) == {1e-3}
    assert net.cost().se.params == n_params(theirs)
    assert n_params(net.to_torch(fused=False)) == n_params(theirs)


@pytest.mark.parametrize("spec", [
    "mobilenet_v3_large.se", "mobilenet_v3_small.se"])
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
def test_mobilenet_v3_outputs_equal_torchvision(spec: str, fused: bool) -> None:
    theirs = randomise_bn(getattr(tvm, spec.removesuffix(".se"))())
    assert_same_outputs(transferred(theirs, compiled(spec), fused), theirs, (3, 64, 64))
