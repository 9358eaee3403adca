"""What imports now (issue 22 item 4), each construct checked against the model that has it:
parameters, fvcore's FLOPs on the model, outputs (every parameter and BN statistic randomised,
the imported weights), and the written spec reloaded with the model's weights
(`sedsl.transfer_weights`). Small modules keep it fast; the zoo models that needed each
construct are checked for parameters and outputs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import sedsl
from sedsl.ir.node import records
from sedsl.targets.spec import write_spec
from tests.references import assert_same_outputs, fvcore_count, n_params, randomise

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")
timm_layers = pytest.importorskip("timm.layers")
convnext = pytest.importorskip("timm.models.convnext")


def exact(model: nn.Module, size: int = 16, flops: bool = True,
          in_order: bool = False) -> sedsl.Network:
    """Import `model` (randomised) and check it against itself, its fvcore count and its
    written spec, the model's weights copied by structure (`in_order`: its state dict in
    registration order); returns the imported network."""
    model = randomise(model)
    shape = (3, size, size)
    net = sedsl.from_torch(model, input=size, name="m")
    assert net.cost().se.params == n_params(model)
    assert_same_outputs(net.to_torch(fused=False), model, shape, tol=1e-5)
    if flops:
        assert net.cost().se.flops == fvcore_count(model, shape)
    back = sedsl.loads(write_spec(net.base_ir, se_graph=net.ir).text)
    assert back.cost().se.params == n_params(model)
    state = model.state_dict()  # a module's own tensors (a layer scale) come before its
    # children's; sedsl's layer scale runs after the MLP: it goes last
    last = [k for k in state if k.endswith(("gamma", "layer_scale"))]
    source = {**{k: v for k, v in state.items() if k not in last},
              **{k: state[k].reshape(-1) for k in last}} if in_order else model
    assert_same_outputs(sedsl.transfer_weights(source, back.to_torch(fused=False)), model,
                        shape, tol=1e-5)
    return net


def ops(net: sedsl.Network) -> list[str]:
    return [r.op for _, r in records(net.ir)]


class Lambda(nn.Module):
    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.fn(x)
        return result


def test_mean_over_h_and_w() -> None:
    """MNASNet's head: `x.mean([2, 3])`, which fvcore does not count (global_avgpool it does)."""
    net = exact(nn.Sequential(nn.Conv2d(3, 8, 3), Lambda(lambda x: x.mean([2, 3])),
                              nn.Linear(8, 4)))
    assert "mean" in ops(net) and "global_avgpool" not in ops(net)


class SplitConcat(nn.Module):
    """Split into pieces, a layer per piece, concat (MixNet); chunk and x[:, a:b] (ShuffleNet,
    GhostNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 1)
        self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(8, 8, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        a, b = torch.split(x, [4, 8], dim=1)
        y = torch.cat([self.a(a), self.b(b)], dim=1)
        left, right = y.chunk(2, dim=1)
        return torch.cat([right, left[:, :6, :, :]], 1)


def test_split_chunk_slice_and_concat() -> None:
    net = exact(SplitConcat())
    assert ops(net).count("channel_slice") == 4


def test_channel_shuffle_as_views() -> None:
    """torchvision's ShuffleNetV2 shuffles by view / transpose / view."""
    def shuffle(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.size()
        x = torch.transpose(x.view(n, 2, c // 2, h, w), 1, 2).contiguous()
        return x.view(n, -1, h, w)

    net = exact(nn.Sequential(nn.Conv2d(3, 8, 1), Lambda(shuffle), nn.Conv2d(8, 8, 1)))
    assert "channel_shuffle" in ops(net)


def test_tensorflow_same_padding_and_functional_pools() -> None:
    """timm's Conv2dSame pads unequally (shapes are known while tracing); F.max_pool2d and
    F.avg_pool2d are the pooling ops."""
    model = nn.Sequential(timm_layers.Conv2dSame(3, 8, 3, stride=2), nn.ReLU(),
                          Lambda(lambda x: F.max_pool2d(x, 3, 2, padding=1)),
                          Lambda(lambda x: F.avg_pool2d(x, 3, stride=1, padding=1,
                                                        count_include_pad=False)))
    net = exact(model, size=18)
    assert ops(net)[1:5] == ["pad", "conv", "relu", "maxpool"]


@pytest.mark.parametrize("size", [16, 17])
def test_max_pooling_after_padding_with_minus_infinity(size: int) -> None:
    """timm's MaxPool2dSame (NASNet, PNASNet) pads with -inf, TensorFlow's `same`: unequal at
    an even size and stride 2, as `maxpool(same = true)`. PNASNet's own stem-cell branch
    (timm's code, `same` padding: max pooling, a 1x1 conv, BN) and the full stem cell are
    checked: parameters, fvcore's FLOPs, outputs, and for the branch the written spec with the
    weights transferred (the cell's wiring has no spec form); an unequal -inf pad before
    anything else is refused."""
    pnasnet = pytest.importorskip("timm.models.pnasnet")
    cell = randomise(pnasnet.CellStem0(8, 8, 8, 8, pad_type="same"))
    net = exact(nn.Sequential(nn.Conv2d(3, 8, 1), cell.comb_iter_0_right,
                              timm_layers.create_pool2d("max", 3, stride=1, padding="same")),
                size=size)
    pools = [r.attrs.get("same", False) for _, r in records(net.ir) if r.op == "maxpool"]
    assert pools == [True, False]  # at stride 1 timm pads statically: nn.MaxPool2d(padding=1)
    assert "maxpool(3, 2, same = true)" in write_spec(net.base_ir, se_graph=net.ir).text
    whole = sedsl.from_torch(cell, input=(8, size, size), name="cell")
    assert whole.cost().se.params == n_params(cell)
    assert whole.cost().se.flops == fvcore_count(cell, (8, size, size))
    assert_same_outputs(whole.to_torch(fused=False), cell, (8, size, size), tol=1e-5)
    with pytest.raises(sedsl.SpecError, match="padded with -inf"):
        sedsl.from_torch(nn.Sequential(Lambda(lambda x: F.pad(x, (0, 1, 0, 1),
                                                              value=-float("inf"))),
                                       nn.Conv2d(3, 4, 3)), input=8)
    with pytest.raises(sedsl.SpecError, match="neither TensorFlow's `same`"):
        sedsl.from_torch(Lambda(lambda x: F.max_pool2d(F.pad(x, (1, 0, 1, 0),
                                                             value=-float("inf")), 3, 2)),
                         input=8)


def test_learnable_affine_block_as_affine() -> None:
    """HGNetV2's LearnableAffineBlock, `scale * x + bias` with parameters of shape (1,): its
    stem (timm's code, `use_lab`) with its affine blocks as `affine`, the tensors under the
    lowering's `scale` and `bias`; a scalar scale without the bias is refused."""
    hgnet = pytest.importorskip("timm.models.hgnet")
    net = exact(hgnet.StemV2(3, 16, 32, use_lab=True), size=32)
    assert ops(net).count("affine") == 5
    keys = [k for k in net.to_torch(fused=False).state_dict() if ".affine." in k]
    assert keys[:2] == ["stem1.lab.affine.scale", "stem1.lab.affine.bias"]
    assert "affine" in write_spec(net.base_ir, se_graph=net.ir).text
    with pytest.raises(sedsl.SpecError, match="sedsl scales by a scalar only with a scalar bias"):
        sedsl.from_torch(nn.Sequential(nn.Conv2d(3, 4, 1), ScalarScale(), nn.Conv2d(4, 4, 1)),
                         input=8)


def test_group_norm_module_and_timm_group_norm_act() -> None:
    """nn.GroupNorm and timm's GroupNormAct (F.group_norm with the module's weight and bias,
    then its activation) as `group_norm`: params, fvcore (5 per element, as aten::group_norm
    with an affine transform), outputs, the written spec; uneven groups are a spec error."""
    layers = pytest.importorskip("timm.layers")
    model = nn.Sequential(nn.Conv2d(3, 16, 3), layers.GroupNormAct(16, 4, act_layer=nn.SiLU),
                          nn.Conv2d(16, 8, 1), nn.GroupNorm(2, 8, eps=1e-6))
    net = exact(model, size=12)
    assert ops(net).count("group_norm") == 2
    assert "group_norm(2, eps = 1e-6)" in write_spec(net.base_ir, se_graph=net.ir).text
    with pytest.raises(sedsl.SpecError, match="groups = 3 does not divide 8 channels"):
        sedsl.loads("network n {\n  input 3x8x8\n  conv(8, 3) group_norm(3)\n}\n")


def test_filter_response_norm_with_its_tlu_or_an_activation() -> None:
    """timm's FilterResponseNormTlu2d (max(y, tau)) and FilterResponseNormAct2d (its `act`
    after it) as `frn`: params (weight, bias and tau), fvcore (none of its ops), outputs (on
    random weights, tau and eps included), the written spec; flat input is a spec error."""
    layers = pytest.importorskip("timm.layers")
    model = nn.Sequential(nn.Conv2d(3, 16, 3), layers.FilterResponseNormTlu2d(16, eps=1e-4),
                          nn.Conv2d(16, 8, 1),
                          layers.FilterResponseNormAct2d(8, act_layer=nn.SiLU))
    net = exact(model, size=12)
    assert ops(net).count("frn") == 2 and "silu" in ops(net)
    assert "frn(tlu = false) silu" in write_spec(net.base_ir, se_graph=net.ir).text
    with pytest.raises(sedsl.SpecError, match="`frn` needs a CxHxW feature map"):
        sedsl.loads("network n {\n  input 3x8x8\n  conv(8, 3) flatten frn\n}\n")


class Twice(nn.Module):
    def __init__(self, merge: Any) -> None:
        super().__init__()
        self.conv, self.merge = nn.Conv2d(3, 8, 1), merge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.merge(y, y)


@pytest.mark.parametrize("merge", [lambda a, b: a + b, lambda a, b: torch.cat([a, b], 1),
                                   lambda a, b: a * b], ids=["add", "cat", "mul"])
def test_a_merge_of_a_tensor_with_itself_is_refused(merge: Any) -> None:
    """`y + y`, `cat([y, y])`, `y * y`: the graph holds one edge between two layers (this was
    an internal error: a pass found the merge's second port missing)."""
    with pytest.raises(sedsl.SpecError, match="reads one tensor twice"):
        sedsl.from_torch(nn.Sequential(Twice(merge)), input=8)


class ScalarScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


def test_space_to_depth() -> None:
    """TResNet's SpaceToDepth (timm's code: view to 6-D, permute, view back) as
    `space_to_depth(4)`, its (block row, block column, channel) order checked through the
    outputs; other views of the blocks are refused."""
    s2d = pytest.importorskip("timm.layers.space_to_depth")
    net = exact(nn.Sequential(nn.Conv2d(3, 5, 1), s2d.SpaceToDepth(4), nn.Conv2d(80, 8, 3)))
    assert ops(net)[2] == "space_to_depth"
    assert "space_to_depth(4)" in write_spec(net.base_ir, se_graph=net.ir).text
    with pytest.raises(sedsl.SpecError, match="space-to-depth only"):
        sedsl.from_torch(Lambda(lambda x: x.view(1, 3, 4, 2, 4, 2).permute(0, 2, 4, 1, 3, 5)
                                .reshape(1, 12, 4, 4)), input=8)


@pytest.mark.parametrize("kwargs", [{}, {"filt_size": 5}, {"pad_mode": "constant"}],
                         ids=["reflect3", "reflect5", "zeros"])
def test_blur_pool(kwargs: dict[str, Any]) -> None:
    """timm's BlurPool2d (ResNet-blur, TResNet): reflect (or zero) padding, then its fixed
    binomial filter per channel at stride 2, as `blur_pool`; a depthwise conv's FLOPs, which
    fvcore counts, and no parameters (the filter is not in the state dict)."""
    blur = pytest.importorskip("timm.layers.blur_pool")
    net = exact(nn.Sequential(nn.Conv2d(3, 8, 1), blur.BlurPool2d(8, **kwargs),
                              nn.Conv2d(8, 4, 1)), size=15)
    assert ops(net)[2] == "blur_pool" and net.cost().se.params == 3 * 8 + 8 + 8 * 4 + 4
    odd = blur.BlurPool2d(8)
    odd.filt.fill_(1 / 9)
    with pytest.raises(sedsl.SpecError, match="other than the binomial"):
        sedsl.from_torch(nn.Sequential(nn.Conv2d(3, 8, 1), odd), input=8)


def test_leaky_relu_in_batch_norm_act_and_a_linear_classifier() -> None:
    """CSPNet's BatchNormAct2d with LeakyReLU; timm's Linear reads its weight (F.linear)."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3),
                          timm_layers.BatchNormAct2d(8, act_layer=nn.LeakyReLU),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), timm_layers.Linear(8, 5))
    net = exact(model)
    assert ops(net)[-1] == "linear" and "leaky_relu" in ops(net)


@pytest.mark.parametrize("make", [
    lambda: convnext.ConvNeXtBlock(16, ls_init_value=0.5),  # timm: conv_mlp=False, gamma
    lambda: torchvision.models.convnext.CNBlock(16, 0.5, 0.0),  # torchvision: layer_scale
], ids=["timm", "torchvision"])
def test_convnext_block_as_channels_first_ops(make: Any) -> None:
    """Permute, LayerNorm over C, Linear on C, GELU, Linear, layer scale, permute back: the
    channels-first ops, their tensors under the model's own keys (the layer scale's gains
    `.weight`). The block owns its layer scale: transfer_weights' structural matcher pairs it
    where the block multiplies by it, after the MLP (timm reshapes `gamma` first: the reshape
    is no use of it), so the model's weights go into the written spec by structure."""
    model = nn.Sequential()
    model.add_module("stem", nn.Conv2d(3, 16, 1))
    model.add_module("block", make())
    net = exact(model)
    assert {"layer_norm", "channel_linear", "layer_scale"} <= set(ops(net))
    keys = set(net.to_torch(fused=False).state_dict())
    assert {k for k in randomise(model).state_dict() if "gamma" not in k and
            "layer_scale" not in k} <= keys


@pytest.mark.parametrize("bilinear", [False, True])
def test_upsample(bilinear: bool) -> None:
    mode = "bilinear" if bilinear else "nearest"
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Upsample(scale_factor=2, mode=mode),
                          Lambda(lambda x: F.interpolate(x, scale_factor=2)))
    assert "upsample" in ops(exact(model))


class OwnStdConv(nn.Conv2d):
    """Weight standardisation written by hand, not timm's class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        return F.conv2d(x, (w - w.mean((1, 2, 3), keepdim=True)) / w.std((1, 2, 3), keepdim=True))


def test_timms_weight_standardisation_imports_exactly() -> None:
    """StdConv2d (BiT) and ScaledStdConv2dSame (dynamic `same` padding before a strided conv)."""
    net = exact(nn.Sequential(timm_layers.StdConv2d(3, 8, 3),
                              timm_layers.ScaledStdConv2dSame(8, 8, 4, stride=2, gamma=1.5)))
    assert ops(net) == ["input", "conv", "pad", "conv"]


def test_other_weight_code_and_transformers_are_refused_by_name() -> None:
    with pytest.raises(sedsl.SpecError, match=r"`0` \(OwnStdConv\): computes `.*` with the "
                                              r"tensor `0.weight` directly"):
        sedsl.from_torch(nn.Sequential(OwnStdConv(3, 8, 3)), input=16)
    with torch.device("meta"):
        vit = torchvision.models.vit_b_16()
    with pytest.raises(sedsl.SpecError, match="VisionTransformer computes on token sequences"):
        sedsl.from_torch(vit, input=224)


@pytest.mark.parametrize(("zoo", "name", "size", "left_out"), [
    ("torchvision", "mnasnet0_5", 64, ()),  # mean over H x W
    ("torchvision", "shufflenet_v2_x0_5", 64, ()),  # chunk, concat, channel shuffle
    ("torchvision", "googlenet", 64, ("aux1", "aux2")),  # heads eval never calls
    ("torchvision", "inception_v3", 75, ("AuxLogits",)),  # F.avg_pool2d, F.max_pool2d
    ("timm", "tf_mobilenetv3_small_minimal_100", 64, ()),  # Conv2dSame
    ("timm", "rexnet_100", 64, ()),  # cat([x[:, :c] + s, x[:, c:]]) as x + pad_channels(s)
    ("timm", "hgnetv2_b0", 64, ()),  # LearnableAffineBlock as affine
    ("timm", "resnetblur18", 64, ()),  # BlurPool2d as blur_pool
])
def test_zoo_models_import_exactly(zoo: str, name: str, size: int,
                                   left_out: tuple[str, ...]) -> None:
    kwargs = {"init_weights": False} if name in ("googlenet", "inception_v3") else {}
    model = randomise(torchvision.models.get_model(name, **kwargs) if zoo == "torchvision" else
                      timm.create_model(name))
    net = sedsl.from_torch(model, input=size, name=name)
    dropped = sum(n_params(model.get_submodule(m)) for m in left_out)
    assert net.cost().se.params == n_params(model) - dropped
    assert [n.split("`")[1] for n in net.notes] == list(left_out)
    assert_same_outputs(net.to_torch(fused=False), model, (3, size, size), tol=1e-5)
    written = sedsl.loads(write_spec(net.base_ir, se_graph=net.ir).text)
    back = written.cost()
    assert (back.base.params, back.se.params) == (net.cost().base.params, net.cost().se.params)
    # the model's weights go into the written spec, the layers it never calls left out
    ours = sedsl.transfer_weights(model, written.to_torch(fused=False), input=(3, size, size))
    assert_same_outputs(ours, model, (3, size, size), tol=1e-5)
