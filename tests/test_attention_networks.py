"""Whole networks built on the attention family, against timm 1.0.x: ECA-ResNet-50-D and the
released ECA-Net50 (k = 3, 5, 5, 7), GC-ResNet-50-T, CBAM-ResNet-50 (and light CBAM), ReXNet-1.0x
with its partial-channel residual. For each: parameters to the unit, fvcore's count of timm's
model to the unit, eval outputs after transferring timm's randomised parameters and BN
statistics. Then the `pad_channels` op on its own."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import pytest
import torch
from torch import nn

import sedsl

timm = pytest.importorskip("timm")
pytest.importorskip("fvcore")

from sedsl.ir.node import record, records  # noqa: E402
from sedsl.ir.ops import OPS  # noqa: E402
from sedsl.targets.spec import write_spec  # noqa: E402
from tests.conftest import SPECS, compiled  # noqa: E402
from tests.references import (  # noqa: E402
    assert_same_outputs,
    fvcore_count,
    n_params,
    randomise,
)

SIZE = 64  # the smallest input that keeps conv5 at 2x2 (ceil-mode pools see even maps)
ECA_NET50_K = (3, 5, 5, 7)  # BangguWu/ECANet: eca_resnet50, --ksize 3557
RESNET50_STAGES = (3, 4, 6, 3)


def released_eca_net50() -> nn.Module:
    """The ECA authors' eca_resnet50 with k_size 3557 is torchvision's ResNet-50 with
    `eca_layer(k)` after each bottleneck's bn3 and before the add: timm's resnet50 with timm's
    EcaModule of a fixed kernel (timm's `kernel_size`, no `channels`) at the same place."""
    from timm.layers import EcaModule

    model = timm.create_model("resnet50", block_args={"attn_layer": "eca"})
    for layer, k in zip((model.layer1, model.layer2, model.layer3, model.layer4), ECA_NET50_K,
                        strict=True):
        for block in layer:
            block.se = EcaModule(kernel_size=k)
    return model


# case: (spec, overrides, timm's model)
CASES: dict[str, tuple[str, dict[str, str], Callable[[], nn.Module]]] = {
    "ecaresnet50d": ("ecaresnet50d.se", {}, lambda: timm.create_model("ecaresnet50d")),
    "eca_net50_k3557": ("ecaresnet50d.se", {"layout": "b", "kernels": "k3557"},
                        released_eca_net50),
    "gcresnet50t": ("gcresnet50t.se", {}, lambda: timm.create_model("gcresnet50t")),
    "cbam_resnet50": ("cbam_resnet50.se", {}, lambda: timm.create_model(
        "resnet50", block_args={"attn_layer": "cbam"})),
    "lcbam_resnet50": ("cbam_resnet50.se", {"variant": "lcbam"}, lambda: timm.create_model(
        "resnet50", block_args={"attn_layer": "lcbam"})),
    "rexnet_100": ("rexnet_100.se", {}, lambda: timm.create_model("rexnet_100")),
}


@cache
def theirs(case: str) -> nn.Module:
    """timm's model with every parameter and BN statistic randomised, eval mode (built once: the
    tests only read it)."""
    return randomise(CASES[case][2]())


def ours(case: str) -> sedsl.Network:
    spec, overrides, _ = CASES[case]
    return compiled(spec, input=SIZE, **overrides)


@pytest.mark.parametrize("case", CASES)
def test_params_equal_timm(case: str) -> None:
    expected = n_params(theirs(case))
    assert ours(case).cost().se.params == expected
    assert n_params(ours(case).to_torch(fused=False)) == expected


@pytest.mark.parametrize("case", CASES)
def test_fvcore_flops_equal_timm(case: str) -> None:
    assert ours(case).cost().se.flops == fvcore_count(theirs(case), (3, SIZE, SIZE))


@pytest.mark.parametrize("case", CASES)
def test_outputs_equal_timm(case: str) -> None:
    model = sedsl.transfer_weights(theirs(case), ours(case).to_torch(fused=False))
    assert_same_outputs(model, theirs(case), (3, SIZE, SIZE))


@pytest.mark.parametrize(("spec", "base"), [
    ("ecaresnet50d.se", lambda: timm.create_model("resnet50d")),
    ("cbam_resnet50.se", lambda: timm.create_model("resnet50")),
    ("rexnet_100.se", lambda: timm.create_model("rexnet_100", se_ratio=0)),
], ids=["resnet50d", "resnet50", "rexnet_100_no_se"])
def test_without_attention_is_timms_base_network(spec: str,
                                                 base: Callable[[], nn.Module]) -> None:
    assert compiled(spec).cost().base.params == n_params(base())


# --- what each network's attention is, block by block ---------------------------------------------


def nodes(net: sedsl.Network, op: str) -> list[str]:
    return [n for n, rec in records(net.graph) if rec.op == op]


def test_ecaresnet50d_takes_timms_k_per_layer() -> None:
    """timm's rule from C (256, 512, 1024, 2048 channels): k = 5, 5, 5, 7."""
    timm_k = [m.conv.kernel_size[0] for m in theirs("ecaresnet50d").modules()
              if type(m).__name__ == "EcaModule"]
    net = ours("ecaresnet50d")
    assert [record(net.graph, n).attrs["kernel"] for n in nodes(net, "channel_conv")] == timm_k
    assert timm_k == [5] * 13 + [7] * 3


def test_released_eca_net50_params_by_the_formula() -> None:
    """ResNet-50's parameters plus k per ECA block, nothing else (no bias, no reduction)."""
    extra = sum(k * n for k, n in zip(ECA_NET50_K, RESNET50_STAGES, strict=True))
    resnet50 = n_params(timm.create_model("resnet50"))
    net = sedsl.load(SPECS / "ecaresnet50d.se", layout="b", kernels="k3557")
    assert (resnet50, extra) == (25_557_032, 80)
    assert net.cost().se.params == resnet50 + extra
    assert net.cost().base.params == resnet50


def test_gcresnet50t_puts_gc_after_every_3x3() -> None:
    """timm's ByobNet BottleneckBlock applies `attn` to the 3x3 conv's output (mid channels)."""
    timm_c = [m.conv_attn.in_channels for m in theirs("gcresnet50t").modules()
              if type(m).__name__ == "GlobalContext"]
    net = ours("gcresnet50t")
    ours_c = [record(net.graph, n).shape[0] for n in nodes(net, "attn_pool")]
    assert ours_c == timm_c == [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3
    assert not nodes(net, "mul")  # add fusion: x + t, no gate


def test_rexnet_se_widths_and_partial_residuals_equal_timm() -> None:
    blocks = [b for b in theirs("rexnet_100").features if hasattr(b, "use_shortcut")]
    net = ours("rexnet_100")
    widths = [record(net.graph, n).shape[0] for n in nodes(net, "conv") if n.endswith(".se.fc1")]
    assert widths == [b.se.fc1.out_channels for b in blocks if b.se is not None]
    pads = nodes(net, "pad_channels")
    assert [p.split(".")[0] for p in pads] == [
        f"b{i + 1}" for i, b in enumerate(blocks) if b.use_shortcut]
    for p in pads:  # each widens the block's input to its output: 27 -> 38, ..., 174 -> 185
        (source,) = net.graph.predecessors(p)
        assert record(net.graph, source).shape[0] < record(net.graph, p).shape[0]


# --- the pad_channels op ------------------------------------------------------------------------

PARTIAL = """
network partial {
  input 4x8x8
  b = residual { conv(6, 3) bn relu } shortcut { pad_channels(6) }
}
"""


def test_pad_channels_adds_to_the_first_channels_only() -> None:
    """The residual equals ReXNet's `cat([f(x)[:, :c] + x, f(x)[:, c:]])` on the module's own
    weights; the pad has no parameters and no FLOPs, in the op table and for fvcore."""
    net = sedsl.loads(PARTIAL)
    pad = record(net.graph, "b.shortcut.pad_channels1")
    assert (pad.op, pad.shape) == ("pad_channels", (6, 8, 8))
    assert net.cost().se.params == 6 * 4 * 9 + 2 * 6  # the conv and the BN only
    assert net.cost().se.flops == fvcore_count(net.to_torch(fused=False), (4, 8, 8))
    model = randomise(net.to_torch(fused=False))
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        f = model.b.relu1(model.b.bn1(model.b.conv1(x)))
        expected = torch.cat([f[:, :4] + x, f[:, 4:]], dim=1)
        assert torch.equal(model(x), expected)


def test_fvcore_counts_no_pad() -> None:
    class Pad(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.pad(x, (0, 0, 0, 0, 0, 3))

    op = OPS["pad_channels"]
    assert fvcore_count(Pad(), (5, 4, 4)) == 0 == op.fvcore({"c_out": 8}, [(5, 4, 4)], (8, 4, 4))
    assert op.params({"c_out": 8}, [(5, 4, 4)], (8, 4, 4)) == 0


def test_pad_channels_to_the_same_width_is_the_identity() -> None:
    net = sedsl.loads(PARTIAL.replace("6", "4"))
    assert "nn.functional.pad" not in net.source()
    assert "nn.functional.pad" in sedsl.loads(PARTIAL).source()


def test_pad_channels_needs_a_feature_map() -> None:
    with pytest.raises(sedsl.SpecError, match="`pad_channels` needs a CxHxW feature map"):
        sedsl.loads("network n {\n  input 4x8x8\n  flatten pad_channels(300)\n}\n")


def test_written_spec_keeps_the_partial_residual() -> None:
    """The spec printer writes `pad_channels` back, and the spec it writes reloads to ReXNet."""
    net = ours("rexnet_100")
    written = write_spec(net.base)
    assert "} shortcut {\n    pad_channels(" in written.text  # exact, or write_spec refuses
    back = sedsl.loads(written.text, path="rexnet_100.se")
    assert back.cost().base.params == net.cost().base.params
    assert back.cost().base.flops == net.cost().base.flops
