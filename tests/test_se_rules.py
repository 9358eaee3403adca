"""Regression tests for what a newcomer writing MobileNet/EfficientNet/RegNet specs hit: nested
blocks invisible to SE rules, divisor rounding, string overrides, the closed form with
`base = block_in`, and layers inside named sub-blocks."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sedsl
from sedsl.cli import app
from sedsl.ir.node import records
from sedsl.ir.se import SeSettings, make_divisible

NESTED = """
block inner(c) { conv(c, 3) bn relu }
block outer(c) {
  a = inner(c)
  b = inner(c)
}
network t(classes = 10) {
  input 8x16x16
  s1 = outer(8)
  s2 = outer(8)
}
se {
  ratio = 4
  RULE
}
"""


def units(rule: str) -> list[str]:
    net = sedsl.loads(NESTED.replace("RULE", rule))
    return sorted({r.se.unit for _, r in records(net.graph) if r.se is not None})


def test_blocks_made_of_named_sub_blocks_are_visible_to_rules() -> None:
    assert units("at block.end of outer") == ["s1.se", "s2.se"]
    assert units("at block.end of inner") == ["s1.a.se", "s1.b.se", "s2.a.se", "s2.b.se"]
    # `in` selects every block inside the stage; where an inner block ends where its outer block
    # ends, the point gets one SE block, the outer's
    assert units("at block.end in s1") == ["s1.a.se", "s1.se"]


def test_after_a_layer_inside_a_named_sub_block() -> None:
    net = sedsl.loads(NESTED.replace("RULE", "after a.relu1 of outer"))
    se_input = [u for u, v in net.graph.in_edges("s1.se.squeeze")]
    assert se_input == ["s1.a.relu1"]


@pytest.mark.parametrize("channels", [16, 24, 40, 72, 96, 120, 184, 200, 480, 672, 1152])
@pytest.mark.parametrize("ratio", [4, 16, 24])
def test_round_limit_matches_torchvision(channels: int, ratio: int) -> None:
    """torchvision's MobileNetV3/EfficientNet: _make_divisible(C / r, 8), never below 90%."""
    divisible = pytest.importorskip("torchvision.models._utils")._make_divisible
    expected = divisible(channels / ratio, 8)
    assert SeSettings(ratio=ratio, round=8, round_limit=0.9).reduced(channels) == expected
    assert make_divisible(Fraction(channels, ratio), 8, Fraction(9, 10)) == expected


def test_the_builtin_make_divisible_is_timms() -> None:
    timm_divisible = pytest.importorskip("timm.layers").make_divisible
    for x in (18, 7.5, 100, 3):
        for limit in (0.9, 0.0):
            net = sedsl.loads(f"network t(w = make_divisible({x}, 8, {limit})) {{\n"
                              "  input 3x8x8\n  conv(w, 1)\n}\n")
            width = next(r.shape[0] for _, r in records(net.graph) if r.op == "conv")
            assert width == timm_divisible(x, 8, round_limit=limit), (x, limit)
    assert SeSettings(ratio=4, round=8).reduced(72) == 16  # timm's SE modules: round_limit 0


STRINGS = """
network t(where = "standard") {
  input 8x8x8
  conv(8, 3)
  if where == "3x3" { relu }
}
"""


@pytest.mark.parametrize("value", ['"3x3"', "3x3", "'3x3'"])
def test_a_string_parameter_takes_any_string(value: str, tmp_path: Path) -> None:
    spec = tmp_path / "s.se"
    spec.write_text(STRINGS)
    result = CliRunner().invoke(app, ["check", str(spec), "--set", f"where={value}"])
    assert result.exit_code == 0 and "3 nodes" in result.output, result.output
    net = sedsl.load(spec, where="3x3")
    assert [r.op for _, r in records(net.graph)] == ["input", "conv", "relu"]


def test_a_layer_parameter_takes_a_layer_by_name(tmp_path: Path) -> None:
    spec = tmp_path / "s.se"
    spec.write_text("network t(act = relu) {\n  input 8x8x8\n  conv(8, 3) act\n}\n")
    net = sedsl.load(spec, act="relu6")
    assert [r.op for _, r in records(net.graph)] == ["input", "conv", "relu6"]
    result = CliRunner().invoke(app, ["check", str(spec), "--set", "act=hardswish"])
    assert result.exit_code == 0, result.output


BLOCK_IN = """
block mbconv(c_out, expand = 6) {
  residual {
    conv(c_in * expand, 1) bn silu
    conv(c_in * expand, 3, groups = c_in * expand) bn silu
    dw_end = conv(c_out, 1) bn
  }
}
network t {
  input 24x16x16
  s = mbconv(24) * 3
}
se {
  ratio = 4
  base = block_in
  excite = silu
  after dw_end
}
"""


def test_the_closed_form_measures_the_reduction_as_the_rule_does() -> None:
    """EfficientNet's SE reduces from the block's input channels, C_in / 4, not C_out / 4."""
    text = BLOCK_IN.replace("dw_end = conv(c_out, 1) bn", "conv(c_out, 1) bn").replace(
        "after dw_end", "after conv2")
    cost = sedsl.loads(text).cost()
    e = cost.estimate
    # per block: FCs 144 -> 6 -> 144 (C_in = 24, r = 4); exact: no rounding at all
    assert e.rounding == 0 and float(e.params) == 3 * 2 * 144 * 6
    assert cost.overhead.params == round(float(e.params)) + e.bias + e.rounding


TRAINING_ATTRS = """
network t {
  input 8x6x6
  b = residual {
    conv(8, 3) bn(1e-3, momentum = 0.01) relu
    conv(8, 3) bn drop_path(0.25)
  }
}
"""


def test_bn_momentum_and_drop_path_reach_the_module_at_no_cost() -> None:
    import torch
    from torchvision.ops import stochastic_depth

    net = sedsl.loads(TRAINING_ATTRS)
    plain = sedsl.loads(TRAINING_ATTRS.replace(", momentum = 0.01", "").replace(
        " drop_path(0.25)", ""))
    assert net.cost().se == plain.cost().se  # training-time attributes cost nothing
    model = net.to_torch(fused=False)
    assert model.b.bn1.momentum == 0.01 and model.b.bn1.eps == 1e-3
    x = torch.randn(16, 8, 6, 6)
    model.eval()
    with torch.no_grad():  # inference: drop_path is the identity
        branch = model.b.bn2(model.b.conv2(model.b.relu1(model.b.bn1(model.b.conv1(x)))))
        torch.testing.assert_close(model(x), branch + x)
    model.train()
    with torch.no_grad():  # training: torchvision's stochastic depth, in the same RNG order
        torch.manual_seed(0)
        out = model(x)
        branch = model.b.bn2(model.b.conv2(model.b.relu1(model.b.bn1(model.b.conv1(x)))))
        torch.manual_seed(0)
        torch.testing.assert_close(out, stochastic_depth(branch, 0.25, "row", True) + x)
