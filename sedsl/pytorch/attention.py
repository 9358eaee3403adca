"""A model's own attention modules, recognised as sedsl's SE variants.

torchvision's `SqueezeExcitation` (EfficientNet, MobileNetV3, RegNetY), timm's `SEModule`,
`SqueezeExcite` (its EfficientNet family), `EffectiveSEModule`, `EcaModule`, `CecaModule`,
`GlobalContext`, `CbamModule`, `LightCbamModule`, `CoordAttn` and the legacy SENet's `SEModule`
are traced as leaves: each call becomes an SE block of the variant whose steps compute what the
module computes, with the settings its submodules fix (activations, gate, bias, squeeze, kernel
sizes) and its reduced width; `sedsl.compile.se_infer` then finds the rules that put them there.
A module of one of these classes whose options no variant has (GlobalContext fusing by scale and
add at once, CoordAttn's skip) is refused by name.

timm's `SplitAttn` (ResNeSt) and `SelectiveKernel` (SKNet), attention across branches, are no SE
variant: their branches are traced as they run and their attention becomes one `split_attention`
node of the base graph (`SPLIT_CLASSES`).

Recognition reads the module's structure, never its name alone: every submodule a variant needs
is checked (a 1x1 conv with or without bias, the activation's class), and `steps` maps the
module's parameters onto the block's step nodes, so that the import carries its weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from sedsl.ir.se import SeSettings
from sedsl.ir.vocab import ACTIVATIONS
from sedsl.record import Record


class Recognised(Record):
    """An attention module as an SE block: its settings (variant and what the module fixes),
    its reduced width and ECA kernel (None where the variant has none), and its parameters'
    module paths (relative to it) -> the step whose node holds them."""

    settings: SeSettings
    rd: int | None
    kernel: int | None
    steps: Mapping[str, str]


class NotVariant(Exception):
    """An attention module with options no SE variant has."""


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# timm's own activation classes (timm.layers.activations*) and what they compute.
_TIMM_ACTIVATIONS = {
    "Sigmoid": "sigmoid", "Tanh": "tanh", "GELU": "gelu", "Swish": "silu", "SwishMe": "silu",
    "HardSigmoid": "hardsigmoid", "HardSigmoidMe": "hardsigmoid", "HardSwish": "hardswish",
    "HardSwishMe": "hardswish", "Mish": "mish", "MishMe": "mish",
}
_TORCH_ACTIVATIONS = {getattr(nn, a.module): a.name for a in ACTIVATIONS.values()}


def activation(m: Any, what: str) -> str:
    """The vocabulary's name of an activation module (torch's, or timm's own classes)."""
    cls = type(m)
    if cls in _TORCH_ACTIVATIONS:
        if isinstance(m, nn.GELU) and m.approximate != "none":
            raise NotVariant(f"its {what} is GELU(approximate={m.approximate!r})")
        return _TORCH_ACTIVATIONS[cls]
    if cls.__module__.startswith("timm.layers.activations") and \
            cls.__name__ in _TIMM_ACTIVATIONS:
        return _TIMM_ACTIVATIONS[cls.__name__]
    raise NotVariant(f"its {what} is {cls.__name__}, which is not an activation of sedsl's "
                     "vocabulary")


def _fc(m: Any, what: str, c_in: int | None = None) -> bool:
    """A 1x1 conv (an SE block's FC layer); returns whether it has a bias."""
    if not isinstance(m, nn.Conv2d) or m.kernel_size != (1, 1) or m.stride != (1, 1) or \
            m.padding not in ((0, 0), "valid") or m.groups != 1 or m.dilation != (1, 1):
        raise NotVariant(f"its {what} is not a plain 1x1 convolution")
    if c_in is not None and m.in_channels != c_in:
        raise NotVariant(f"its {what} reads {m.in_channels} channels, not {c_in}")
    return m.bias is not None


def _bn(m: Any, what: str) -> None:
    if not isinstance(m, nn.BatchNorm2d) or m.eps != 1e-5 or not m.affine or \
            not m.track_running_stats or type(m).__name__ not in ("BatchNorm2d",
                                                                  "BatchNormAct2d"):
        raise NotVariant(f"its {what} is not a BatchNorm2d (eps 1e-5, affine)")
    act = getattr(m, "act", None)
    if act is not None and not isinstance(act, nn.Identity):
        raise NotVariant(f"its {what} runs an activation")


def _same_bias(*flags: bool) -> bool:
    if len(set(flags)) != 1:
        raise NotVariant("some of its FC layers have a bias and some do not")
    return flags[0]


def _settings(**values: Any) -> SeSettings:
    return SeSettings().set(**values)


# --- the classes -----------------------------------------------------------------------------


def _torchvision_se(m: Any) -> Recognised:
    """torchvision.ops.SqueezeExcitation: avgpool, fc1, activation, fc2, scale_activation."""
    if not isinstance(m.avgpool, nn.AdaptiveAvgPool2d) or m.avgpool.output_size not in (1, (1, 1)):
        raise NotVariant("its pooling is not a global average")
    bias = _same_bias(_fc(m.fc1, "fc1"), _fc(m.fc2, "fc2", m.fc1.out_channels))
    s = _settings(squeeze="avgpool", excite=activation(m.activation, "activation"),
                  gate=activation(m.scale_activation, "scale activation"), bias=bias)
    return Recognised(s, m.fc1.out_channels, None, {"fc1": "fc1", "fc2": "fc2"})


def _timm_se(m: Any) -> Recognised:
    """timm.layers.SEModule: mean [+ max], fc1, bn?, act, fc2, gate."""
    bias = _same_bias(_fc(m.fc1, "fc1"), _fc(m.fc2, "fc2", m.fc1.out_channels))
    steps = {"fc1": "fc1", "fc2": "fc2"}
    variant = "se"
    if not isinstance(m.bn, nn.Identity):
        _bn(m.bn, "norm layer")
        variant, steps = "se_bn", {**steps, "bn": "bn"}
    s = _settings(variant=variant, squeeze="avgmax" if m.add_maxpool else "avg",
                  excite=activation(m.act, "activation"), gate=activation(m.gate, "gate"),
                  bias=bias)
    return Recognised(s, m.fc1.out_channels, None, steps)


def _timm_effnet_se(m: Any) -> Recognised:
    """timm's EfficientNet-family SqueezeExcite: mean, conv_reduce, act1, conv_expand, gate."""
    bias = _same_bias(_fc(m.conv_reduce, "conv_reduce"),
                      _fc(m.conv_expand, "conv_expand", m.conv_reduce.out_channels))
    s = _settings(excite=activation(m.act1, "activation"), gate=activation(m.gate, "gate"),
                  bias=bias)
    return Recognised(s, m.conv_reduce.out_channels, None,
                      {"conv_reduce": "fc1", "conv_expand": "fc2"})


def _legacy_se(m: Any) -> Recognised:
    """The legacy SENet's SEModule (Cadene's port): mean, fc1, relu, fc2, sigmoid."""
    bias = _same_bias(_fc(m.fc1, "fc1"), _fc(m.fc2, "fc2", m.fc1.out_channels))
    s = _settings(excite=activation(m.relu, "activation"),
                  gate=activation(m.sigmoid, "gate"), bias=bias)
    return Recognised(s, m.fc1.out_channels, None, {"fc1": "fc1", "fc2": "fc2"})


def _ese(m: Any) -> Recognised:
    """timm's EffectiveSEModule: mean [+ max], one FC from C to C, the gate."""
    if not _fc(m.fc, "fc"):
        raise NotVariant("its FC has no bias")
    s = _settings(variant="ese", squeeze="avgmax" if m.add_maxpool else "avg",
                  gate=activation(m.gate, "gate"))
    return Recognised(s, None, None, {"fc": "fc"})


def _hgnet_ese(m: Any) -> Recognised:
    """HGNet's EseModule: mean, one FC from C to C with a bias, a sigmoid."""
    if not _fc(m.conv, "conv"):
        raise NotVariant("its FC has no bias")
    s = _settings(variant="ese", gate=activation(m.sigmoid, "gate"))
    return Recognised(s, None, None, {"conv": "fc"})


def _conv1d(m: Any, what: str, c_in: int, c_out: int) -> tuple[int, int, bool]:
    """A Conv1d across channels: (kernel, padding, bias)."""
    if not isinstance(m, nn.Conv1d) or (m.in_channels, m.out_channels) != (c_in, c_out) or \
            m.stride != (1,) or m.dilation != (1,) or m.groups != 1 or \
            m.padding_mode != "zeros" or not isinstance(m.padding, tuple):
        raise NotVariant(f"its {what} is not the 1-D conv across channels ECA has")
    return m.kernel_size[0], m.padding[0], m.bias is not None


def _eca(m: Any) -> Recognised:
    """timm's EcaModule: mean, a Conv1d across channels (with use_mlp: conv, act, conv2), the
    gate."""
    if m.conv2 is None:
        k, pad, bias = _conv1d(m.conv, "conv", 1, 1)
        if bias or pad != (k - 1) // 2:
            raise NotVariant("its conv has a bias or unequal padding")
        return Recognised(_settings(variant="eca", gate=activation(m.gate, "gate")), None, k,
                          {"conv": "conv"})
    rd = m.conv.out_channels
    k1, _, b1 = _conv1d(m.conv, "conv", 1, rd)
    k, pad, b2 = _conv1d(m.conv2, "conv2", rd, 1)
    if k1 != 1 or not (b1 and b2) or pad != (k - 1) // 2:
        raise NotVariant("its MLP is not ECA-MLP's (a 1-tap conv, biases)")
    s = _settings(variant="ecam", excite=activation(m.act, "activation"),
                  gate=activation(m.gate, "gate"))
    return Recognised(s, rd, k, {"conv": "conv1", "conv2": "conv2"})


def _ceca(m: Any) -> Recognised:
    """timm's CecaModule: mean, circular padding, a Conv1d across channels, the gate."""
    k, pad, bias = _conv1d(m.conv, "conv", 1, 1)
    if bias or pad != 0 or m.padding != (k - 1) // 2:
        raise NotVariant("its conv has a bias (CecaModule with an act_layer) or other padding")
    return Recognised(_settings(variant="ceca", gate=activation(m.gate, "gate")), None, k,
                      {"conv": "conv"})


def _global_context(m: Any) -> Recognised:
    """timm's GlobalContext: attention pooling, an MLP with layer norm, fused by scale (gc) or
    by add (gca)."""
    if m.conv_attn is None:
        raise NotVariant("it pools by the mean (use_attn=False); gc and gca pool by attention")
    if (m.mlp_add is None) == (m.mlp_scale is None):
        raise NotVariant("it fuses by scale and by add at once; gc scales, gca adds")
    fuse, mlp = ("mlp_scale", m.mlp_scale) if m.mlp_add is None else ("mlp_add", m.mlp_add)
    if not _fc(m.conv_attn, "conv_attn") or m.conv_attn.out_channels != 1:
        raise NotVariant("its attention conv is not a 1x1 conv to one channel with a bias")
    bias = _same_bias(_fc(mlp.fc1, "fc1"), _fc(mlp.fc2, "fc2", mlp.fc1.out_channels))
    norm = mlp.norm
    if type(norm).__name__ != "LayerNorm2d" or norm.eps != 1e-6 or \
            not isinstance(getattr(mlp, "drop", nn.Identity()), nn.Identity | nn.Dropout):
        raise NotVariant("its MLP's norm is not timm's LayerNorm2d (eps 1e-6)")
    values: dict[str, Any] = {"variant": "gc" if fuse == "mlp_scale" else "gca",
                              "excite": activation(mlp.act, "activation"), "bias": bias}
    if fuse == "mlp_scale":
        values["gate"] = activation(m.gate, "gate")
    return Recognised(_settings(**values), mlp.fc1.out_channels, None,
                      {"conv_attn": "attn", f"{fuse}.fc1": "fc1", f"{fuse}.norm": "norm",
                       f"{fuse}.fc2": "fc2"})


def _spatial(conv: Any, c_in: int) -> int:
    """CBAM's spatial gate conv (timm's ConvNormAct, no activation): its kernel."""
    inner, bn = getattr(conv, "conv", None), getattr(conv, "bn", None)
    if not isinstance(inner, nn.Conv2d) or inner.in_channels != c_in or inner.out_channels != 1 \
            or inner.bias is not None or inner.stride != (1, 1) or inner.groups != 1 or \
            inner.dilation != (1, 1) or inner.kernel_size[0] != inner.kernel_size[1] or \
            inner.padding != ((inner.kernel_size[0] - 1) // 2,) * 2:
        raise NotVariant("its spatial gate's conv is not a k x k conv with `same` padding")
    _bn(bn, "spatial gate's norm")
    return int(inner.kernel_size[0])


def _cbam(m: Any) -> Recognised:
    """timm's CbamModule: ChannelAttn (a shared MLP on mean and max), SpatialAttn."""
    ch, sp = m.channel, m.spatial
    bias = _same_bias(_fc(ch.fc1, "fc1"), _fc(ch.fc2, "fc2", ch.fc1.out_channels))
    gate = activation(ch.gate, "channel gate")
    if activation(sp.gate, "spatial gate") != gate:
        raise NotVariant("its channel and spatial gates differ")
    k = _spatial(sp.conv, 2)
    s = _settings(variant="cbam", excite=activation(ch.act, "activation"), gate=gate,
                  bias=bias, spatial_kernel=k)
    return Recognised(s, ch.fc1.out_channels, None,
                      {"channel.fc1": "fc1", "channel.fc2": "fc2", "spatial.conv.conv": "spatial",
                       "spatial.conv.bn": "bn"})


def _lcbam(m: Any) -> Recognised:
    """timm's LightCbamModule: the MLP on (mean + max) / 2 with a sigmoid (fixed in its forward),
    the spatial gate on (mean + max) / 2 over channels."""
    ch, sp = m.channel, m.spatial
    bias = _same_bias(_fc(ch.fc1, "fc1"), _fc(ch.fc2, "fc2", ch.fc1.out_channels))
    if activation(sp.gate, "spatial gate") != "sigmoid":
        raise NotVariant("its spatial gate is not a sigmoid (its channel gate always is)")
    k = _spatial(sp.conv, 1)
    s = _settings(variant="lcbam", excite=activation(ch.act, "activation"), gate="sigmoid",
                  bias=bias, spatial_kernel=k)
    return Recognised(s, ch.fc1.out_channels, None,
                      {"channel.fc1": "fc1", "channel.fc2": "fc2", "spatial.conv.conv": "spatial",
                       "spatial.conv.bn": "bn"})


def _coord(m: Any) -> Recognised:
    """timm's CoordAttn: means along W and H, a shared 1x1 conv with BN and activation, a gate
    per direction."""
    if m.has_skip:
        raise NotVariant("it adds its input back (has_skip=True)")
    _bn(m.bn1, "norm layer")
    rd = m.conv1.out_channels
    bias = _same_bias(_fc(m.conv1, "conv1"), _fc(m.conv_h, "conv_h", rd),
                      _fc(m.conv_w, "conv_w", rd))
    s = _settings(variant="coord", excite=activation(m.act, "activation"),
                  gate=activation(m.gate, "gate"), bias=bias)
    return Recognised(s, rd, None, {"conv1": "fc1", "bn1": "bn", "conv_h": "conv_h",
                                    "conv_w": "conv_w"})


CLASSES: dict[str, Callable[[Any], Recognised]] = {
    "torchvision.ops.misc.SqueezeExcitation": _torchvision_se,
    "timm.layers.squeeze_excite.SEModule": _timm_se,
    "timm.layers.squeeze_excite.EffectiveSEModule": _ese,
    "timm.models.hgnet.EseModule": _hgnet_ese,
    "timm.models._efficientnet_blocks.SqueezeExcite": _timm_effnet_se,
    "timm.models.senet.SEModule": _legacy_se,
    "timm.layers.eca.EcaModule": _eca,
    "timm.layers.eca.CecaModule": _ceca,
    "timm.layers.global_context.GlobalContext": _global_context,
    "timm.layers.cbam.CbamModule": _cbam,
    "timm.layers.cbam.LightCbamModule": _lcbam,
    "timm.layers.coord_attn.CoordAttn": _coord,
}


def is_attention(m: nn.Module) -> bool:
    """Whether `m` is of a class sedsl reads as an SE variant (traced as a leaf)."""
    return _qualname(type(m)) in CLASSES


def recognise(m: nn.Module) -> Recognised:
    """`m` as an SE block, or NotVariant saying which of its options no variant has."""
    try:
        return CLASSES[_qualname(type(m))](m)
    except AttributeError as err:
        raise NotVariant(f"it lacks a part its class has ({err})") from None


# --- attention across branches (split_attention) ----------------------------------------------


class Split(Record):
    """A module of attention across branches as the `split_attention` op: its attributes and
    its parameters' module paths (relative to it) -> the op's submodule that holds them."""

    attrs: Mapping[str, Any]
    parts: Mapping[str, str]


class SplitClass(Record):
    """How a class of attention across branches is read: `branches(m, x)`, the torch code of
    its branches, concatenated along the channels (traced as it runs, so each branch's layers
    are the graph's); `recognise(m)`, its attention as the op."""

    branches: Callable[..., Any]
    recognise: Callable[[Any], Split]


def _split_fcs(fc1: Any, fc2: Any, radix: int) -> tuple[int, int, bool]:
    """The attention's two grouped 1x1 convs: (rd, groups, bias)."""
    for fc, what in ((fc1, "first FC"), (fc2, "second FC")):
        if not isinstance(fc, nn.Conv2d) or fc.kernel_size != (1, 1) or fc.stride != (1, 1) or \
                fc.padding not in ((0, 0), "valid") or fc.dilation != (1, 1):
            raise NotVariant(f"its {what} is not a 1x1 convolution")
    if fc1.groups != fc2.groups or fc2.in_channels != fc1.out_channels or \
            fc2.out_channels != radix * fc1.in_channels:
        raise NotVariant(f"its FCs are not C to rd to {radix} C with the same groups")
    return fc1.out_channels, fc1.groups, _same_bias(fc1.bias is not None, fc2.bias is not None)


def _relu(m: Any, what: str) -> None:
    if activation(m, what) != "relu":
        raise NotVariant(f"its {what} is not a ReLU")


def _splat_branches(m: Any, x: Any) -> Any:
    """timm's SplitAttn before its attention: its conv (all radix branches at once, grouped),
    norm, drop and activation."""
    return m.act0(m.drop(m.bn0(m.conv(x))))


def _splat(m: Any) -> Split:
    """timm's SplitAttn (ResNeSt): fc1, bn1, ReLU, fc2, RadixSoftmax over `radix` branches
    with cardinality `groups`."""
    radix = int(m.radix)
    rd, groups, bias = _split_fcs(m.fc1, m.fc2, radix)
    _bn(m.bn1, "attention's norm layer")
    _relu(m.act1, "attention's activation")
    soft = m.rsoftmax
    if type(soft).__name__ != "RadixSoftmax" or (soft.radix, soft.cardinality) != (radix, groups):
        raise NotVariant("its softmax is not timm's RadixSoftmax over its radix and groups")
    return Split({"radix": radix, "rd": rd, "groups": groups, "bias": bias},
                 {"fc1": "fc1", "bn1": "bn1", "fc2": "fc2"})


def _sk_branches(m: Any, x: Any) -> Any:
    """timm's SelectiveKernel before its attention: its paths, each on its share of the input
    channels (`split_input`) or on all of them, concatenated (timm stacks them)."""
    import torch

    if m.split_input:
        pieces = torch.split(x, m.in_channels // m.num_paths, 1)
        return torch.cat([path(pieces[i]) for i, path in enumerate(m.paths)], 1)
    return torch.cat([path(x) for path in m.paths], 1)


def _sk(m: Any) -> Split:
    """timm's SelectiveKernel (SKNet): its SelectiveKernelAttn, fc_reduce, bn, ReLU, fc_select,
    a softmax over its paths."""
    attn, radix = m.attn, int(m.num_paths)
    rd, groups, bias = _split_fcs(attn.fc_reduce, attn.fc_select, radix)
    _bn(attn.bn, "attention's norm layer")
    _relu(attn.act, "attention's activation")
    if attn.num_paths != radix or groups != 1:
        raise NotVariant("its attention's paths or groups are not its own")
    return Split({"radix": radix, "rd": rd, "groups": 1, "bias": bias},
                 {"attn.fc_reduce": "fc1", "attn.bn": "bn1", "attn.fc_select": "fc2"})


SPLIT_CLASSES: dict[str, SplitClass] = {
    "timm.layers.split_attn.SplitAttn": SplitClass(_splat_branches, _splat),
    "timm.layers.selective_kernel.SelectiveKernel": SplitClass(_sk_branches, _sk),
}


def split_class(m: nn.Module) -> SplitClass | None:
    """How `m` is read as attention across branches, if it is of such a class."""
    return SPLIT_CLASSES.get(_qualname(type(m)))


def recognise_split(m: nn.Module) -> Split:
    """`m`'s attention as the `split_attention` op, or NotVariant saying which of its options
    the op has not."""
    split = split_class(m)
    assert split is not None, f"{type(m).__name__} is no attention across branches"
    try:
        return split.recognise(m)
    except AttributeError as err:
        raise NotVariant(f"it lacks a part its class has ({err})") from None
