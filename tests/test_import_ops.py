"""The ops issue 22 added for timm's star, crop and normalisations (`parallel mul`, `pad` with
negative amounts, ...): each written in a spec and compared with the module it stands for
(timm's, or plain torch): parameters, fvcore's FLOPs of the lowered module against sedsl's cost
and of the reference, outputs after copying the reference's weights; then the smallest timm
model that needs it, imported and checked against the model (parameters, fvcore, outputs) and
its written spec reloaded with the model's weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sedsl
from sedsl.ir.node import records
from sedsl.targets.spec import write_spec
from tests.references import assert_same_outputs, fvcore_count, n_params, randomise

timm = pytest.importorskip("timm")


def against(spec: str, reference: nn.Module, shape: tuple[int, ...]) -> sedsl.Network:
    """The spec's network against `reference` (randomised): parameters, fvcore's FLOPs (sedsl's
    cost, the lowered module's and the reference's), outputs with the reference's weights."""
    reference = randomise(reference)
    net = sedsl.loads(spec)
    module = net.to_torch(fused=False)
    cost = net.cost()
    assert cost.se.params == n_params(module) == n_params(reference)
    assert cost.se.flops == fvcore_count(module, shape) == fvcore_count(reference, shape)
    assert_same_outputs(sedsl.transfer_weights(reference, module), reference, shape, tol=1e-5)
    return net


def imports_exactly(model: nn.Module, size: int, in_order: bool = False) -> sedsl.Network:
    """`model` (randomised) imported: parameters, fvcore, outputs; its written spec reloaded
    with the model's weights gives the same outputs (`in_order`: copied from its state dict in
    order, ConvNeXt's layer scale `gamma`, registered before the block's children, last)."""
    model = randomise(model)
    shape = (3, size, size)
    net = sedsl.from_torch(model, input=size, name="m")
    assert net.cost().se.params == n_params(model)
    assert net.cost().se.flops == fvcore_count(model, shape)
    assert_same_outputs(net.to_torch(fused=False), model, shape, tol=1e-5)
    back = sedsl.loads(write_spec(net.base_ir, se_graph=net.ir).text)
    assert (back.cost().se.params, back.cost().se.flops) == \
        (net.cost().se.params, net.cost().se.flops)
    source = _gamma_last(model.state_dict()) if in_order else model
    assert_same_outputs(sedsl.transfer_weights(source, back.to_torch(fused=False)), model, shape,
                        tol=1e-5)
    return net


def ops(net: sedsl.Network) -> set[str]:
    return {r.op for _, r in records(net.ir)}


def _gamma_last(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with each block's `gamma` after the block's other tensors."""
    out: dict[str, torch.Tensor] = {}
    held: list[str] = []
    for key, value in state.items():
        while held and not key.startswith(held[-1].removesuffix("gamma")):
            done = held.pop()
            out[done] = state[done]
        if key.endswith(".gamma"):
            held.append(key)
        else:
            out[key] = value
    for key in reversed(held):
        out[key] = state[key]
    return out


# --- parallel mul: StarNet's star -------------------------------------------------------------

STAR = """
network star {
  input 16x8x8
  residual {
    conv(16, 7, groups = 16, bias = true) bn
    parallel mul {
      conv(48, 1, bias = true) relu6
      conv(48, 1, bias = true)
    }
    conv(16, 1, bias = true) bn
    conv(16, 7, groups = 16, bias = true)
  }
}
"""


def test_parallel_mul_is_starnets_star() -> None:
    """timm's StarNet Block: act(f1(x)) * f2(x) between its depthwise convs."""
    starnet = pytest.importorskip("timm.models.starnet")
    against(STAR, starnet.Block(16, mlp_ratio=3), (16, 8, 8))


def test_parallel_mul_needs_one_shape() -> None:
    with pytest.raises(sedsl.SpecError, match="cannot multiply tensors of different shapes"):
        sedsl.loads("network n {\n  input 8x8x8\n  parallel mul { conv(8, 1); conv(4, 1) }\n}\n")


@pytest.mark.parametrize("name", ["starnet_s1", "ghostnetv2_100"])
def test_models_with_products_import_exactly(name: str) -> None:
    """StarNet's star; GhostNetV2's DFC attention, x times a full-size gate (interpolated)."""
    net = imports_exactly(timm.create_model(name), 64)
    assert "product" in ops(net)


# --- pad with negative amounts: NASNet's crop ---------------------------------------------------

CROP = """
network crop {
  input 3x9x9
  conv(8, 1, bias = true)
  pad(-1, 1, -1, 1)
  avgpool(1, 2, count_pad = false)
  conv(4, 1, bias = true)
}
"""


def test_negative_pad_crops_as_zero_pad_2d() -> None:
    """timm's NASNet path_2: ZeroPad2d((-1, 1, -1, 1)) (a one-pixel shift), then a pooling."""
    net = against(CROP, nn.Sequential(nn.Conv2d(3, 8, 1), nn.ZeroPad2d((-1, 1, -1, 1)),
                                      nn.AvgPool2d(1, 2, count_include_pad=False),
                                      nn.Conv2d(8, 4, 1)), (3, 9, 9))
    assert net.cost().se.flops == 5 * 5 * 8 * 4 + 9 * 9 * 3 * 8  # the two convs


@pytest.mark.parametrize("call", ["pad(-4, 0, 0, 0)", "pad(-2, -2, 0, 0)", "pad(0, 0, -5, 1)"])
def test_a_crop_must_leave_a_row_and_a_column(call: str) -> None:
    with pytest.raises(sedsl.SpecError, match="crops a 8x4x4 feature map to nothing"):
        sedsl.loads(f"network n {{\n  input 8x4x4\n  {call}\n}}\n")


class ShiftedPaths(nn.Module):
    """timm's NASNet CellStem1 from its input to final_path_bn: path_1 pools, path_2 shifts by
    a pixel (ZeroPad2d((-1, 1, -1, 1))) before it pools, and the two are concatenated."""

    def __init__(self) -> None:
        super().__init__()
        nasnet = pytest.importorskip("timm.models.nasnet")
        cell = nasnet.CellStem1(stem_size=8, num_channels=12)
        self.conv = nn.Conv2d(3, 8, 3, bias=False)
        self.act, self.path_1, self.path_2 = cell.act, cell.path_1, cell.path_2
        self.final_path_bn = cell.final_path_bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_relu = self.act(self.conv(x))
        return self.final_path_bn(torch.cat([self.path_1(x_relu), self.path_2(x_relu)], 1))


def test_nasnets_shifted_path_imports_exactly() -> None:
    net = imports_exactly(ShiftedPaths(), 15)
    assert "pad" in ops(net)


# --- the normalisations: EvoNorm-S0, GRN, SimpleNorm2d ---------------------------------------

def _normed(norm: str) -> str:
    return f"network n {{\n  input 3x8x8\n  conv(64, 3, bias = true)\n  {norm}\n  conv(8, 1)\n}}\n"


def _reference(norm: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), norm, nn.Conv2d(64, 8, 1, bias=False))


@pytest.mark.parametrize(("call", "kwargs"), [("evonorm_s0(16)", {"groups": 16}),
                                              ("evonorm_s0", {}),
                                              ("evonorm_s0(8, act = false)",
                                               {"groups": 8, "apply_act": False})])
def test_evonorm_s0_is_timms(call: str, kwargs: dict[str, object]) -> None:
    """timm's EvoNorm2dS0: x * sigmoid(v x) / group_std(x) * weight + bias (weight, bias, v)."""
    evo = pytest.importorskip("timm.layers.evo_norm")
    against(_normed(call), _reference(evo.EvoNorm2dS0(64, **kwargs)), (3, 8, 8))


@pytest.mark.parametrize(("call", "kwargs"), [("evonorm_s0(16, eps = 1e-3)", {"groups": 16}),
                                              ("evonorm_s0(8, 1e-3, act = false, norm = true)",
                                               {"groups": 8, "apply_act": False})])
def test_evonorm_s0a_is_timms(call: str, kwargs: dict[str, object]) -> None:
    """timm's EvoNorm2dS0a: S0's math with its activation; without, x / group_std(x) * weight
    + bias, where S0 has x * weight + bias."""
    evo = pytest.importorskip("timm.layers.evo_norm")
    against(_normed(call), _reference(evo.EvoNorm2dS0a(64, **kwargs)), (3, 8, 8))
    model = randomise(nn.Sequential(nn.Conv2d(3, 16, 3), evo.EvoNorm2dS0a(16, **kwargs)))
    net = sedsl.from_torch(model, input=8, name="m")
    assert net.cost().se.params == n_params(model)
    assert_same_outputs(net.to_torch(fused=False), model, (3, 8, 8), tol=1e-5)


def test_evonorm_s0_groups_must_divide_the_channels() -> None:
    with pytest.raises(sedsl.SpecError, match="groups = 24 does not divide 64 channels"):
        sedsl.loads(_normed("evonorm_s0(24)"))


def test_grn_is_timms_global_response_norm() -> None:
    grn = pytest.importorskip("timm.layers.grn")
    against(_normed("grn"), _reference(grn.GlobalResponseNorm(64, channels_last=False)),
            (3, 8, 8))


def test_simple_norm_is_timms_simple_norm_2d() -> None:
    """x / sqrt(var_c(x) + eps) * weight: the unbiased variance, x not centred, no bias."""
    norm = pytest.importorskip("timm.layers.norm")
    against(_normed("simple_norm(1e-5)"), _reference(norm.SimpleNorm2d(64, eps=1e-5)),
            (3, 8, 8))


@pytest.mark.parametrize(("name", "op"), [("ese_vovnet39b_evos", "evonorm_s0"),
                                          ("convnextv2_nano", "grn"),
                                          ("convnext_zepto_rms_ols", "simple_norm")])
def test_zoo_models_with_the_norms_import_exactly(name: str, op: str) -> None:
    net = imports_exactly(timm.create_model(name), 64)
    assert op in ops(net)


def test_grn_on_a_channels_last_mlp() -> None:
    """ConvNeXt-V2's block with a Linear MLP: GRN on the channels-last tensor between fc1 and
    fc2 (timm's GlobalResponseNorm with channels_last)."""
    convnext = pytest.importorskip("timm.models.convnext")
    block = convnext.ConvNeXtBlock(16, conv_mlp=False, use_grn=True, ls_init_value=None)
    net = imports_exactly(nn.Sequential(nn.Conv2d(3, 16, 1), block), 8)
    assert "grn" in ops(net) and "channel_linear" in ops(net)
