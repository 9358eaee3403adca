"""RegNetY (specs/regnet_y.se) against torchvision's regnet_y_* models: parameter counts of every
size, and outputs after a weight transfer. torchvision registers each block's projection shortcut
before its residual branch and runs it first, so the transfer is a regression test of matching
tensors by structure rather than by registration order."""

from __future__ import annotations

import pytest
import torch  # noqa: F401

import sedsl

tvm = pytest.importorskip("torchvision.models")

from tests.conftest import compiled  # noqa: E402
from tests.references import (  # noqa: E402
    assert_same_outputs,
    randomise_bn,
    transferred,
    uninitialised_params,
)

SIZES = ["400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf", "128gf"]


@pytest.mark.parametrize("size", SIZES)
def test_params_equal_torchvision(size: str) -> None:
    net = compiled("regnet_y.se", size=size)
    expected = uninitialised_params(getattr(tvm, f"regnet_y_{size}"))
    assert net.cost().se.params == expected
    assert uninitialised_params(lambda: net.to_torch(fused=False)) == expected


def test_se_widths_are_a_quarter_of_the_block_input() -> None:
    """torchvision: squeeze_channels = round(0.25 * width_in), width_in the block's input."""
    g = compiled("regnet_y.se").graph
    fc1 = g.nodes["s2.block1.se.fc1"]["record"]
    assert fc1.shape[0] == 48 // 4  # s2's first block takes s1's 48 channels
    assert g.nodes["s2.block2.se.fc1"]["record"].shape[0] == 104 // 4


@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
def test_outputs_equal_torchvision(fused: bool) -> None:
    theirs = randomise_bn(tvm.regnet_y_400mf())
    net = compiled("regnet_y.se")
    assert_same_outputs(transferred(theirs, net, fused), theirs, (3, 64, 64))


def test_transfer_names_the_tensor_without_a_partner() -> None:
    theirs = tvm.regnet_y_400mf()
    ours = compiled("regnet_y.se", size="800mf").to_torch()
    with pytest.raises(sedsl.ModelError, match=(
            r"layer 2 of the source, trunk_output\.block1\.block1-0\.proj\.0 \(weight 48x32x1x1\), "
            r"fed by stem\.1, fits no layer of the target; the target's next unmatched layer is "
            r"s1\.block1\.conv1 \(weight 64x32x1x1\)")):
        sedsl.transfer_weights(theirs, ours, input=(3, 64, 64))
