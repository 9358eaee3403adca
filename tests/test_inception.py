"""SE-BN-Inception (specs/se_bn_inception.se) against outside oracles: the SE paper's Table 2,
the SE authors' prototxt (hujie-frank/SENet, models/SE-BN-Inception.prototxt), Cadene's
pretrainedmodels port of BN-Inception, and fvcore on the lowered module.

Where pretrainedmodels (0.7.4, pretrainedmodels/models/bninception.py) and the prototxt disagree,
the prototxt is the spec's authority:

* every convolution of the prototxt has `bias_term: false`; the port builds each `nn.Conv2d` with
  its default `bias=True` (69 convs, 10,016 biases). The spec's `conv_bias = true` builds the
  port's layout, compared tensor for tensor; the spec as written is compared with the port once
  its conv biases are zeroed and dropped.
* everything else agrees: kernels, strides, padding, widths, branch order, ceil-mode pooling
  (the port's pools all have `ceil_mode=True`, as Caffe pools), the max pool of 5b, the 7x7
  stride-1 average pool before the classifier. (The port's preprocessing mean is 104, 117, 128;
  the prototxt's comment says 104, 117, 123. That is outside the network.)
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sedsl
from sedsl.pytorch.flops import fvcore_flops
from tests.conftest import SPECS, compiled

SPEC = "se_bn_inception.se"

# Copied from the prototxt: the channels of every Inception module's concat and the num_output of
# its `*_1x1_down` convolution (the SE block's reduced width; its convolutions keep the default
# bias_term: true). Modules in network order: 3a 3b 3c 4a 4b 4c 4d 4e 5a 5b.
PROTOTXT_SE = [(256, 16), (320, 20), (576, 36), (576, 36), (576, 36), (608, 38), (608, 38),
               (1056, 66), (1024, 64), (1024, 64)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_table2_gflops() -> None:
    """Table 2 of the SE paper: BN-Inception 2.03 GFLOPs, SE-BN-Inception 2.04 (224x224)."""
    cost = compiled(SPEC).cost("paper")
    assert tuple(cost.input) == (3, 224, 224)
    assert round(cost.base.flops / 1e9, 2) == 2.03
    assert round(cost.se.flops / 1e9, 2) == 2.04


def test_se_blocks_as_in_the_prototxt() -> None:
    g = compiled(SPEC).graph
    fc1 = [(name, d["record"]) for name, d in g.nodes(data=True)
           if d["record"].role == "se" and name.endswith(".se.fc1")]
    got = [(g.nodes[next(iter(g.predecessors(name)))]["record"].shape[0], rec.shape[0])
           for name, rec in fc1]
    assert got == PROTOTXT_SE
    assert [name.split(".")[0] for name, _ in fc1] == [
        f"inception_{m}" for m in ("3a", "3b", "3c", "4a", "4b", "4c", "4d", "4e", "5a", "5b")]
    assert all(rec.attrs["bias"] for _, rec in fc1)


def test_se_switched_off_is_the_base_network() -> None:
    off = sedsl.load(SPECS / SPEC, enabled=False)
    assert not any(d["record"].role == "se" for _, d in off.graph.nodes(data=True))
    net = compiled(SPEC)
    assert off.cost().se == net.cost().base
    assert n_params(off.to_torch()) == n_params(net.to_torch(se=False)) == net.cost().base.params


@pytest.mark.parametrize("se", [True, False], ids=["se", "base"])
def test_fvcore_equals_the_analytic_count(se: bool) -> None:
    net = compiled(SPEC)
    cost = net.cost("fvcore")
    expected = cost.se.flops if se else cost.base.flops
    assert fvcore_flops(net.to_torch(fused=False, se=se), net.graph.graph["input"]) == expected


# --- pretrainedmodels -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bninception() -> nn.Module:
    """pretrainedmodels' BNInception, randomly initialised, with random BN statistics (so that the
    comparison sees every BN) and in eval mode."""
    pm = pytest.importorskip("pretrainedmodels.models.bninception")
    torch.manual_seed(0)
    model = pm.BNInception(num_classes=1000)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def conv_bias_names(model: nn.Module) -> list[str]:
    return [f"{name}.bias" for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.bias is not None]


def assert_same_outputs(ours: nn.Module, theirs: nn.Module) -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 3, 224, 224)  # the 7x7 average pool before the classifier needs 224
    with torch.no_grad():
        expected, got = theirs.eval()(x), ours.eval()(x)
    assert got.shape == expected.shape == (2, 1000)
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()


def test_params_equal_pretrainedmodels(bninception: nn.Module) -> None:
    theirs = n_params(bninception)
    biases = sum(bninception.get_parameter(k).numel() for k in conv_bias_names(bninception))
    assert len(conv_bias_names(bninception)) == 69 and biases == 10_016
    # The prototxt's bias-free convs: the port less its conv biases.
    assert compiled(SPEC).cost().base.params == theirs - biases
    # The port's layout.
    ported = compiled(SPEC, conv_bias=True)
    assert ported.cost().base.params == theirs
    assert n_params(ported.to_torch(se=False)) == theirs


def test_outputs_equal_pretrainedmodels(bninception: nn.Module) -> None:
    """`conv_bias = true`: the port's layout, every tensor transferred, biases included."""
    ours = compiled(SPEC, conv_bias=True).to_torch(se=False, fused=False)
    assert_same_outputs(sedsl.transfer_weights(bninception, ours), bninception)


def test_outputs_equal_pretrainedmodels_without_conv_bias(bninception: nn.Module) -> None:
    """The spec as written (the prototxt's bias-free convs) against the port with zero conv
    biases, which are then left out of the transfer."""
    theirs = type(bninception)(num_classes=1000)
    theirs.load_state_dict(bninception.state_dict())
    drop = set(conv_bias_names(theirs))
    with torch.no_grad():
        for k in drop:
            theirs.get_parameter(k).zero_()
    state = {k: v for k, v in theirs.state_dict().items() if k not in drop}
    ours = sedsl.transfer_weights(state, compiled(SPEC).to_torch(se=False, fused=False))
    assert_same_outputs(ours, theirs)
