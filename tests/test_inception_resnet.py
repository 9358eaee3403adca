"""SE-Inception-ResNet-v2 (specs/se_inception_resnet_v2.se) against timm's inception_resnet_v2:
the base network's parameters to the unit and its outputs after a weight transfer; the SE
network against timm's model with timm's SEModule inserted where the spec puts SE blocks; and
the SE paper's Table 2 figures."""

from __future__ import annotations

import pytest
from torch import nn

timm = pytest.importorskip("timm")

from timm.layers import SEModule  # noqa: E402

from tests.conftest import compiled  # noqa: E402
from tests.references import (  # noqa: E402
    assert_same_outputs,
    n_params,
    randomise_bn,
    transferred,
)

SPEC = "se_inception_resnet_v2.se"
SMALL = (3, 96, 96)  # the smallest convenient size the unpadded stem and reductions accept


def se(c: int) -> SEModule:
    return SEModule(c, rd_channels=c // 16)


def with_se(model: nn.Module) -> nn.Module:
    """timm's model with an SE block after each Inception module's concat and after each residual
    module's last 1x1 conv (before the scaling)."""
    for name, c in (("mixed_5b", 320), ("mixed_6a", 1088), ("mixed_7a", 2080)):
        setattr(model, name, nn.Sequential(getattr(model, name), se(c)))
    for block in [*model.repeat, *model.repeat_1, *model.repeat_2, model.block8]:
        block.conv2d = nn.Sequential(block.conv2d, se(block.conv2d.out_channels))
    return model.eval()


@pytest.fixture(scope="module")
def reference() -> nn.Module:
    return randomise_bn(timm.create_model("inception_resnet_v2"))


def test_params_equal_timm(reference: nn.Module) -> None:
    net = compiled(SPEC)
    assert net.cost().base.params == n_params(reference)
    assert n_params(net.to_torch(se=False)) == n_params(reference)


def test_paper_table2_gflops() -> None:
    """Table 2: 13.17 -> 13.21 GFLOPs at 299x299. The paper convention gives 13.16 -> 13.19; as
    for the deeper ResNets (docs/cost_model.md) the paper sits 0.01-0.02 G above."""
    cost = compiled(SPEC).cost("paper")
    assert tuple(cost.input) == (3, 299, 299)
    assert abs(cost.base.flops / 1e9 - 13.17) < 0.02
    assert abs(cost.se.flops / 1e9 - 13.21) < 0.025


def test_base_outputs_equal_timm(reference: nn.Module) -> None:
    net = compiled(SPEC)
    ours = transferred(reference, net, fused=False, se=False, input=SMALL)
    assert_same_outputs(ours, reference, SMALL)


def test_se_outputs_equal_timm_with_se(reference: nn.Module) -> None:
    import copy

    theirs = with_se(copy.deepcopy(reference))
    net = compiled(SPEC)
    assert net.cost().se.params == n_params(theirs)
    ours = transferred(theirs, net, fused=True, input=SMALL)
    assert_same_outputs(ours, theirs, SMALL)
