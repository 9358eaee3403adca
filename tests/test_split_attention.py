"""`split_attention`, attention across branches (issue 22), against timm's own modules: ResNeSt's
`SplitAttn` and SKNet's `SelectiveKernel`. A spec that states them computes what they compute
(their weights copied in state-dict order), with their parameter count, and its cost equals
fvcore's count on both the lowered module and timm's; importing them (and resnest14d,
skresnet18 whole) gives the same parameters, fvcore FLOPs and outputs."""

from __future__ import annotations

from typing import Any

import pytest
from torch import nn

import sedsl
from sedsl.ir.node import records
from sedsl.targets.spec import write_spec
from tests.references import assert_same_outputs, fvcore_count, n_params, randomise

timm = pytest.importorskip("timm")
split_attn = pytest.importorskip("timm.layers.split_attn")
selective_kernel = pytest.importorskip("timm.layers.selective_kernel")

SHAPE = (16, 8, 8)


def in_order(theirs: nn.Module, ours: nn.Module) -> nn.Module:
    """`ours` with `theirs`'s tensors, paired in state-dict order (shapes checked)."""
    mine, their = ours.state_dict(), theirs.state_dict()
    assert [t.shape for t in mine.values()] == [t.shape for t in their.values()]
    ours.load_state_dict(dict(zip(mine, their.values(), strict=True)))
    return ours


def against(theirs: nn.Module, text: str) -> None:
    """The spec `text` against the module `theirs` (randomised): parameters, outputs, and its
    cost against fvcore on the lowered module and on theirs."""
    theirs = randomise(theirs).eval()
    net = sedsl.loads(text)
    ours = in_order(theirs, net.to_torch(fused=False))
    assert net.cost().base.params == n_params(theirs)
    assert_same_outputs(ours, theirs, SHAPE, tol=1e-5)
    assert net.cost().base.flops == fvcore_count(ours, SHAPE) == fvcore_count(theirs, SHAPE)


@pytest.mark.parametrize(("radix", "groups"), [(2, 1), (2, 2), (4, 2), (1, 1)])
def test_split_attention_is_resnests_split_attn(radix: int, groups: int) -> None:
    """SplitAttn: one grouped conv for all radix branches, bn, ReLU, then the attention (fc1 and
    fc2 with biases and `groups`, RadixSoftmax's channel order; a sigmoid for radix 1)."""
    theirs = split_attn.SplitAttn(16, 32, groups=groups, radix=radix, norm_layer=nn.BatchNorm2d)
    rd = theirs.fc1.out_channels
    against(theirs, f"""
network splat {{
  input 16x8x8
  conv({32 * radix}, 3, groups = {groups * radix}) bn relu
  split_attention({radix}, {rd}, groups = {groups})
}}
""")


@pytest.mark.parametrize("split_input", [True, False])
def test_split_attention_is_sknets_selective_kernel(split_input: bool) -> None:
    """SelectiveKernel: a 3x3 and a dilated 3x3 path (each on half the input with
    `split_input`), concatenated; the attention without biases."""
    theirs = selective_kernel.SelectiveKernel(16, 32, split_input=split_input)
    slices = ("channel_slice(0, 8)", "channel_slice(8, 16)") if split_input else ("", "")
    against(theirs, f"""
block sk {{
  parallel concat {{
    p1 = {slices[0]} conv(32, 3) bn relu
    p2 = {slices[1]} conv(32, 3, dilation = 2) bn relu
  }}
  split_attention(2, 8, bias = false)
}}

network sk_unit {{
  input 16x8x8
  unit = sk
}}
""")


def test_split_attention_refuses_what_does_not_divide() -> None:
    with pytest.raises(sedsl.SpecError, match="radix 3 needs channels divisible by 3"):
        sedsl.loads("network n {\n  input 16x8x8\n  split_attention(3, 8)\n}\n")
    with pytest.raises(sedsl.SpecError, match="groups = 4 must divide"):
        sedsl.loads("network n {\n  input 12x8x8\n  split_attention(2, 8, groups = 4)\n}\n")


def imported(model: nn.Module, size: int) -> sedsl.Network:
    """`model` (randomised) imported: its parameters, fvcore's FLOPs and its outputs; the
    written spec reloads to the same cost, and computes what the model does with its weights
    (`sedsl.transfer_weights`)."""
    model = randomise(model).eval()
    shape = (3, size, size)
    net = sedsl.from_torch(model, input=size, name="m")
    assert net.cost().se.params == n_params(model)
    assert net.cost().se.flops == fvcore_count(model, shape)
    assert_same_outputs(net.to_torch(fused=False), model, shape, tol=1e-5)
    back = sedsl.loads(write_spec(net.base_ir, se_graph=net.ir).text)
    assert (back.cost().se.params, back.cost().se.flops) == (net.cost().se.params,
                                                             net.cost().se.flops)
    assert_same_outputs(sedsl.transfer_weights(model, back.to_torch(fused=False)), model, shape,
                        tol=1e-5)
    return net


@pytest.mark.parametrize("make", [
    lambda: split_attn.SplitAttn(8, 16, groups=2, radix=2, norm_layer=nn.BatchNorm2d),
    lambda: selective_kernel.SelectiveKernel(8, 16),
    lambda: selective_kernel.SelectiveKernel(8, 16, kernel_size=[3, 5, 7], split_input=False),
], ids=["split_attn", "selective_kernel", "three_paths"])
def test_import_reads_the_modules_as_split_attention(make: Any) -> None:
    net = imported(nn.Sequential(nn.Conv2d(3, 8, 1), make()), 16)
    assert [r.op for _, r in records(net.ir)].count("split_attention") == 1


@pytest.mark.parametrize("name", ["resnest14d", "skresnet18"])
def test_resnest_and_sknet_import_exactly(name: str) -> None:
    imported(timm.create_model(name), 64)


def test_other_attention_options_are_refused_by_name() -> None:
    """A SplitAttn without a norm layer in its attention: no `split_attention`."""
    theirs = split_attn.SplitAttn(8, 16, radix=2)
    with pytest.raises(sedsl.SpecError, match=r"`1` \(SplitAttn\).*attention's norm layer"):
        sedsl.from_torch(nn.Sequential(nn.Conv2d(3, 8, 1), theirs), input=16)
