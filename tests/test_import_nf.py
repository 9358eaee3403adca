"""Weight standardisation (`conv(std = true)`) and the NF-Nets that need it (issue 22): a spec's
standardised conv against timm's StdConv2d / ScaledStdConv2d (outputs with the same weights,
parameters, fvcore's FLOPs), and small NF-Nets built by timm's own NormFreeNet in the three
shapes of its zoo (ResNet-style with ECA after the block, RegNet-style with SE inside it, the
DeepMind NFNet with its gamma activations, skipinit gain and TensorFlow `same` padding),
imported, written back and compared with the model."""

from __future__ import annotations

import pytest

import sedsl
from sedsl.targets.spec import write_spec
from tests.references import assert_same_outputs, fvcore_count, n_params, randomise

timm = pytest.importorskip("timm")
from timm.layers import ScaledStdConv2d, StdConv2d  # noqa: E402
from timm.models.nfnet import NfCfg, NormFreeNet  # noqa: E402

SHAPE = (8, 12, 12)
SIZE = 64

# (spec arguments, timm's module): the same layer written in sedsl and built by timm.
CONVS = {
    "scaled": ("conv(16, 3, stride = 2, bias = true, std = true, gain = true, gamma = 1.7, "
               "eps = 1e-5)",
               lambda: ScaledStdConv2d(8, 16, 3, stride=2, gamma=1.7, eps=1e-5)),
    "scaled_grouped": ("conv(16, 3, groups = 4, std = true, gain = true)",
                       lambda: ScaledStdConv2d(8, 16, 3, groups=4, bias=False)),
    "plain": ("conv(16, 1, std = true, eps = 1e-8)",
              lambda: StdConv2d(8, 16, 1, eps=1e-8)),
}


@pytest.mark.parametrize("case", sorted(CONVS))
def test_a_standardised_conv_is_timms(case: str) -> None:
    call, build = CONVS[case]
    theirs = randomise(build())
    net = sedsl.loads(f"network n {{\n  input {'x'.join(map(str, SHAPE))}\n  c = {call}\n}}\n")
    ours = net.to_torch(fused=False)
    ours.load_state_dict({f"c.{k}": v for k, v in theirs.state_dict().items()})
    cost = net.cost()
    assert cost.base.params == n_params(theirs) == n_params(ours)
    assert cost.base.flops == fvcore_count(theirs, SHAPE) == fvcore_count(ours, SHAPE)
    assert_same_outputs(ours, theirs, SHAPE, tol=1e-6)


@pytest.mark.parametrize("call, message", [
    ("conv(16, 3, gain = true)", "weight standardisation's arguments"),
    ("conv(16, 3, std = true, gamma = 2)", "`gamma` scales the standardised weight"),
    ("conv(8, 1, groups = 8, std = true)", "more than one weight per output channel"),
])
def test_bad_standardisation_is_an_error(call: str, message: str) -> None:
    with pytest.raises(sedsl.SpecError, match=message):
        sedsl.loads(f"network n {{\n  input 8x12x12\n  {call}\n}}\n")


_SMALL = dict(depths=(1, 1, 1, 1), channels=(32, 64, 96, 128))
NF_NETS = {
    # nf_ecaresnet: 7x7 stem and max pool, ReLU, DownsampleAvg shortcuts, ECA after conv3
    "resnet_eca": NfCfg(**_SMALL, stem_type="7x7_pool", stem_chs=16, bottle_ratio=0.25,
                        act_layer="relu", attn_layer="eca", attn_kwargs={}),
    # nf_regnet: grouped 3x3, SE between conv2 and conv3 times attn_gain, a final conv
    "regnet_se": NfCfg(**_SMALL, stem_type="3x3", group_size=8, bottle_ratio=2.25,
                       width_factor=0.75, num_features=160, reg=True, attn_layer="se",
                       attn_kwargs={"rd_ratio": 0.5}),
    # dm_nfnet: quad stem, GammaAct, skipinit gain, ScaledStdConv2dSame (dynamic same padding)
    "dm_nfnet": NfCfg(**_SMALL, stem_type="deep_quad", stem_chs=32, group_size=8,
                      bottle_ratio=0.5, extra_conv=True, gamma_in_act=True, same_padding=True,
                      skipinit=True, num_features=192, act_layer="gelu", attn_layer="se",
                      attn_kwargs={"rd_ratio": 0.5}),
}


@pytest.mark.parametrize("case", sorted(NF_NETS))
def test_an_nf_net_imports_as_timm_builds_it(case: str) -> None:
    model = randomise(NormFreeNet(NF_NETS[case], num_classes=10))
    net = sedsl.from_torch(model, input=SIZE, name=case)
    cost = net.cost()
    shape = (3, SIZE, SIZE)
    assert cost.se.params == n_params(model)
    assert cost.se.flops == fvcore_count(model, shape)
    assert_same_outputs(net.to_torch(fused=False), model, shape)
    back = sedsl.loads(write_spec(net.base_ir, se_graph=net.ir).text, path=f"{case}.se")
    assert (back.cost().se.params, back.cost().se.flops) == (cost.se.params, cost.se.flops)
    assert_same_outputs(sedsl.transfer_weights(model, back.to_torch(fused=False), shape),
                        model, shape)
