"""The attention family against timm: for every variant timm's `create_attn` knows, the network
of specs/se_resnet50.se (timm's layout), its se section replaced by just `variant = NAME` at the
standard position, equals timm's `resnet50(block_args=dict(attn_layer=NAME))` — parameters to the
unit, fvcore's FLOPs to the unit (on timm's model and on sedsl's lowering), and eval outputs
after its state dict is copied across (issue 19)."""

from __future__ import annotations

import logging
import warnings
from functools import cache

import pytest
import torch
from torch import nn

import sedsl
from tests.conftest import SPECS

timm = pytest.importorskip("timm")

TIMM_VARIANTS = ["se", "ese", "eca", "ceca", "ecam", "gc", "gca", "cbam", "lcbam", "coord"]
SIZE = 64


def spec(variant: str) -> str:
    """specs/se_resnet50.se with its se section replaced by `variant = NAME` alone."""
    text = (SPECS / "se_resnet50.se").read_text()
    return text[: text.index("se {")] + (
        f"se {{\n  variant = {variant}\n  at residual.end in conv2..conv5\n}}\n")


@cache
def network(variant: str) -> sedsl.Network:
    return sedsl.loads(spec(variant), path=str(SPECS / "variant.se"), layout="timm", input=SIZE)


def reference(variant: str) -> nn.Module:
    """timm's ResNet-50 with the variant after every bottleneck's bn3, every parameter and BN
    statistic randomised (a zero-initialised layer would hide a mismatch) at scales that keep
    the signal alive through 50 layers, so that outputs depend on the input."""
    torch.manual_seed(0)
    model = timm.create_model("resnet50", block_args=dict(attn_layer=variant))
    with torch.no_grad():
        for m in model.modules():
            for name, p in m.named_parameters(recurse=False):
                if isinstance(m, nn.BatchNorm2d | nn.LayerNorm) and name == "weight":
                    p.uniform_(0.5, 1.5)
                elif p.dim() > 1:  # conv and linear weights: unit gain
                    p.normal_(0, p[0].numel() ** -0.5)
                else:
                    p.normal_(0, 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def fvcore_flops(model: nn.Module) -> int:
    from fvcore.nn import FlopCountAnalysis

    logging.disable(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        count = FlopCountAnalysis(model.eval(), torch.randn(1, 3, SIZE, SIZE))
        total = count.unsupported_ops_warnings(False).uncalled_modules_warnings(False).total()
    logging.disable(logging.NOTSET)
    return int(total)


@pytest.mark.parametrize("variant", TIMM_VARIANTS)
def test_variant_equals_timm(variant: str) -> None:
    net, ref = network(variant), reference(variant)
    assert net.cost().se.params == sum(p.numel() for p in ref.parameters())
    assert net.cost().se.flops == fvcore_flops(ref)
    model = sedsl.transfer_weights(ref, net.to_torch(fused=False)).eval()
    assert net.cost().se.flops == fvcore_flops(model)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        want, got = ref(x), model(x)
    assert (want[0] - want[1]).abs().max() > 0.02 * want.abs().max()  # depends on the input
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_the_comparison_can_fail() -> None:
    """ECA with zero padding against timm's circular-padded CECA, same weights: the edge
    channels differ, and the output comparison sees it."""
    ref = reference("ceca")
    model = sedsl.transfer_weights(ref, network("eca").to_torch(fused=False)).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert not torch.allclose(model(x), ref(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("channels", "k"), [(64, 3), (128, 5), (256, 5), (512, 5), (1024, 5),
                                             (2048, 7), (24, 3), (96, 3), (4096, 7), (1, 3)])
def test_eca_kernel_rule_is_timms(channels: int, k: int) -> None:
    from timm.layers import EcaModule

    from sedsl.ir.se import SeSettings

    assert EcaModule(channels).conv.kernel_size == (k,)
    assert SeSettings().eca_kernel(channels) == k


def test_a_variant_default_yields_to_a_given_setting() -> None:
    """`variant = gc` takes GCNet's ratio 8 and round-to-nearest; `ratio = 4` given wins."""
    text = spec("gc").replace("variant = gc", "variant = gc\n  ratio = 4")
    net = sedsl.loads(text, path=str(SPECS / "variant.se"), layout="timm", input=SIZE)
    tags = {r.se.unit: r.se for _, r in net.ir.nodes(data="record") if r.se is not None}
    assert {t.rd_channels for t in tags.values()} == {256 // 4, 512 // 4, 1024 // 4, 2048 // 4}
    assert {t.rd_channels for _, r in network("gc").ir.nodes(data="record")
            if (t := r.se) is not None} == {256 // 8, 512 // 8, 1024 // 8, 2048 // 8}


@pytest.mark.parametrize("bad", ["kernel = 4", "kernel = 0", "spatial_kernel = 2",
                                 "variant = nope", "gather = max"])
def test_bad_variant_settings_are_spec_errors(bad: str) -> None:
    text = spec("eca").replace("variant = eca", f"variant = eca\n  {bad}")
    with pytest.raises(sedsl.SpecError) as caught:
        sedsl.loads(text, path="t.se", layout="timm", input=SIZE)
    assert str(caught.value).startswith("t.se:")


def test_every_setting_is_documented() -> None:
    from sedsl.ir.se import SETTING_DOCS, SETTINGS

    assert set(SETTING_DOCS) == set(SETTINGS)
