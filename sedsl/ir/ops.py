"""The op table: for every op, its arguments, shape rule, parameter and FLOP rules, its PyTorch
lowering and its behaviour in the compiler (what a repeat resets, how missing arguments are
completed, whether its output is a fresh tensor), side by side. Adding an op is one entry here
plus its docs row and its tests; activations come from the vocabulary (`sedsl.ir.vocab`).

Shapes exclude the batch dimension: (C, H, W) for feature maps, (F,) for flat features.
`macs` are multiply-accumulates of convolutions and fully connected layers; `fvcore` is exactly
what fvcore's FlopCountAnalysis counts for the op's lowering (see docs/cost_model.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeAlias

from sedsl.errors import SpecError
from sedsl.ir.vocab import ACTIVATIONS, KERNEL_SQUEEZES, SQUEEZES, Activation
from sedsl.record import Record

Shape: TypeAlias = tuple[int, ...]
Attr: TypeAlias = int | float | bool | str | tuple[int, ...] | tuple[str, ...]
Attrs: TypeAlias = Mapping[str, Attr]
Shapes: TypeAlias = Sequence[Shape]


class Arg(Record):
    """An argument a spec passes to an op: `conv(64, 3, stride = 2)`."""

    name: str
    kind: str  # count (>= 1) | index (a whole number >= 0) | int (any whole number)
    #             | pair (count or HxW) | pair0 (>= 0) | float | positive | prob | bool
    default: Attr | None = None  # None: required, unless derived
    derived: bool = False  # when not given, `complete` works it out from the other arguments


class TorchModule(Record):
    """Lowered to a module: `source` constructs it, e.g. `nn.Conv2d(3, 64, 7, ...)`; `support`
    names helper classes or functions (sedsl.targets.support) the generated code must define;
    `init`, statements run right after constructing it (`{m}` the module): a node's `init`
    attribute (`init = identity`, sedsl.ir.se.IdentityInit) as code."""

    source: str
    support: tuple[str, ...] = ()
    init: tuple[str, ...] = ()


class TorchExpr(Record):
    """Lowered to an expression over the inputs `{0}`, `{1}`, ... e.g. `{0} + {1}`."""

    template: str
    support: tuple[str, ...] = ()


Lowering: TypeAlias = TorchModule | TorchExpr


def _zero(a: Attrs, ins: Shapes, out: Shape) -> int:
    return 0


def _none(a: Attrs, ins: Shapes) -> None:
    return None


def _as_given(attrs: dict[str, Any]) -> dict[str, Any]:
    return attrs


Count: TypeAlias = Callable[[Attrs, Shapes, Shape], int]


def _read_write(a: Attrs, ins: Shapes, out: Shape) -> int:
    """Elements an op reads and writes when it runs on its own: every input once, the output."""
    return sum(math.prod(s) for s in ins) + math.prod(out)


class Op(Record):
    name: str
    args: tuple[Arg, ...]
    infer: Callable[[Attrs, Shapes], Shape]
    torch: Callable[[Attrs, Shapes, Shape], Lowering]
    params: Count = _zero
    buffers: Count = _zero  # elements of state that is not a parameter (BN's running statistics)
    macs: Count = _zero  # multiply-accumulates of convolutions and fully connected layers
    fvcore: Count = _zero  # what fvcore's FlopCountAnalysis counts for the lowering
    paper: Count | None = None  # the SE paper's convention; None: the same as `macs`
    traffic: Count = _read_write  # elements read and written by its eager lowering
    activations: Count = _zero  # what fvcore's ActivationCountAnalysis counts (output elements
    # of convolutions, linear layers and matmuls)
    check: Callable[[Attrs, Shapes], None] = _none  # extra validation with the input shapes
    complete: Callable[[dict[str, Any]], dict[str, Any]] = _as_given  # derived arguments
    resets: Attrs = MappingProxyType({})  # what copies after the first of `* n` reset
    fresh: bool = False  # the lowering returns a new tensor that autograd does not keep
    # The lowering when it may overwrite its input, a fresh tensor nobody else reads: a module
    # (`nn.ReLU(inplace=True)`), or an expression whose {0} is the input it writes into.
    inplace: str | None = None
    arity: int | None = 1  # how many inputs; None: several (merges, the fused SE block)
    # Modules the lowering also builds, at their own paths, and passes to this node's module
    # as keyword arguments: (keyword, module path, constructor). The fused SE block's folded
    # BN keeps its place (and state-dict keys) in the model this way.
    companions: Callable[[Attrs, Shapes], tuple[tuple[str, str, TorchModule], ...]] = \
        lambda a, ins: ()
    user: bool = True  # callable from a spec (merges and SE internals are not): a printed form
    # How a call is printed from a node's attributes (sedsl.targets.spec.op_call): the first
    # `positional` arguments by position (None: the required ones), up to the last one that must
    # be written; later ones by keyword where they differ from the default (derived ones: from
    # what `complete` works out). `user=False`: no printed form.
    positional: int | None = None
    example: str = ""  # a call shown in errors; "" for the bare name
    doc: str = ""  # what it computes, in one line (the language server's hover shows it)

    def count_paper(self, a: Attrs, ins: Shapes, out: Shape) -> int:
        return (self.paper or self.macs)(a, ins, out)


def numel(shape: Shape) -> int:
    return math.prod(shape)


def fail(message: str, hint: str | None = None) -> SpecError:
    """An op rule failed; the elaborator adds the span of the call."""
    return SpecError(message, None, hint)


def _fmt(shape: Shape) -> str:
    return "x".join(map(str, shape))


def _spatial(op: str, shape: Shape) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise fail(f"`{op}` needs a CxHxW feature map, got a flat {_fmt(shape)} tensor",
                   "put it before `flatten`")
    c, h, w = shape
    return c, h, w


def _int(a: Attrs, key: str) -> int:
    value = a[key]
    assert isinstance(value, int), f"{key} = {value!r}: elaboration normalises it to an int"
    return value


def _pair(value: Attr) -> tuple[int, int]:
    if isinstance(value, tuple):
        h, w = value
        assert isinstance(h, int) and isinstance(w, int)
        return h, w
    assert isinstance(value, int)
    return value, value


def _src(value: Attr) -> str:
    """A Python literal for a generated constructor: `3`, `(1, 7)`, `1e-05`, `True`."""
    if isinstance(value, tuple) and len(set(value)) == 1 and len(value) == 2:
        return repr(value[0])
    return repr(value)


def _window(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    if span < 0:
        raise fail(f"a {k}-wide window does not fit in {size} (padding {p})",
                   "the feature map is too small here; check the input size and the strides")
    out = (span + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p:  # PyTorch: the last window must start inside the input
        out -= 1
    return out


# --- convolution ------------------------------------------------------------------------------


def _conv_check(a: Attrs, ins: Shapes) -> None:
    c_in = _spatial("conv", ins[0])[0]
    g, c_out = _int(a, "groups"), _int(a, "c_out")
    if c_in % g or c_out % g:
        raise fail(f"conv groups = {g} must divide the input channels ({c_in}) and the output "
                   f"channels ({c_out})")
    if not a.get("std"):
        if a.get("gain") or a.get("gamma", 1.0) != 1.0 or a.get("eps", 1e-6) != 1e-6:
            raise fail("`gain`, `gamma` and `eps` are weight standardisation's arguments",
                       "add `std = true`")
        return
    if a.get("gamma", 1.0) != 1.0 and not a.get("gain"):
        raise fail("`gamma` scales the standardised weight with its learned gain",
                   "add `gain = true` (a ScaledStdConv2d), or leave `gamma` out")
    if _fan_in(a, ins) == 1:
        raise fail("weight standardisation needs more than one weight per output channel: "
                   "this conv has c_in / groups x kernel = 1",
                   "standardising a single weight divides zero by zero")


def _conv_infer(a: Attrs, ins: Shapes) -> Shape:
    _, h, w = _spatial("conv", ins[0])
    (kh, kw), (sh, sw) = _pair(a["kernel"]), _pair(a["stride"])
    (ph, pw), (dh, dw) = _pair(a["padding"]), _pair(a["dilation"])
    return (_int(a, "c_out"), _window(h, kh, sh, ph, dh, False), _window(w, kw, sw, pw, dw, False))


def _fan_in(a: Attrs, ins: Shapes) -> int:
    """Weights per output channel: c_in / groups x kh x kw."""
    kh, kw = _pair(a["kernel"])
    return ins[0][0] // _int(a, "groups") * kh * kw


def _conv_params(a: Attrs, ins: Shapes, out: Shape) -> int:
    weight = _int(a, "c_out") * _fan_in(a, ins)
    return weight + _int(a, "c_out") * ((1 if a["bias"] else 0) + (1 if a.get("gain") else 0))


def _conv_fvcore(a: Attrs, ins: Shapes, out: Shape) -> int:
    """The conv's multiply-accumulates; a standardised weight adds what fvcore counts for the
    training-mode batch_norm that standardises it: 4 per weight, 5 with the gain as its affine
    weight (fvcore's norm_flop_counter)."""
    weights = _int(a, "c_out") * _fan_in(a, ins) if a.get("std") else 0
    return _conv_macs(a, ins, out) + weights * (5 if a.get("gain") else 4)


def _conv_macs(a: Attrs, ins: Shapes, out: Shape) -> int:
    kh, kw = _pair(a["kernel"])
    return numel(out) * ins[0][0] // _int(a, "groups") * kh * kw


def _conv_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    extra = "".join(
        f", {k}={_src(a[k])}" for k, default in (("stride", (1, 1)), ("padding", (0, 0)),
                                                  ("dilation", (1, 1)), ("groups", 1))
        if a[k] != default
    )
    if a.get("std"):  # timm's StdConv2d / ScaledStdConv2d: their computation and keys
        std = f", eps={a.get('eps', 1e-6)!r}"
        if a.get("gain"):
            std += f", gamma={a.get('gamma', 1.0)!r}, gain=True"
        return TorchModule(f"StdConv({ins[0][0]}, {a['c_out']}, {_src(a['kernel'])}{extra}, "
                           f"bias={a['bias']}{std})", support=("StdConv",),
                           init=_zero_init(a, ("weight", "bias")))
    return TorchModule(f"nn.Conv2d({ins[0][0]}, {a['c_out']}, {_src(a['kernel'])}{extra}, "
                       f"bias={a['bias']})", init=_zero_init(a, ("weight", "bias")))


def _zero_init(a: Attrs, names: tuple[str, ...]) -> tuple[str, ...]:
    """init = "zero": these parameters of the module start at 0 (`bias` where it has one)."""
    if a.get("init") is None:
        return ()
    assert a["init"] == "zero", f"a conv starts at zero or as constructed, not {a['init']!r}"
    return tuple(f"nn.init.zeros_({{m}}.{n})" for n in names if n != "bias" or a.get("bias"))


def same_pads(size: tuple[int, int], kernel: Attr, stride: Attr = 1,
              dilation: Attr = 1) -> tuple[int, int, int, int]:
    """TensorFlow's `same` padding of an H x W input, (left, right, top, bottom): the output is
    ceil(size / stride), the pad it takes split with the odd one after (timm's `pad_same`). The
    one padding rule: at stride 1 it does not depend on the size (`same_padding`)."""
    def axis(n: int, k: int, s: int, d: int) -> tuple[int, int]:
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        return total // 2, total - total // 2

    (kh, kw), (sh, sw), (dh, dw) = _pair(kernel), _pair(stride), _pair(dilation)
    top, bottom = axis(size[0], kh, sh, dh)
    left, right = axis(size[1], kw, sw, dw)
    return left, right, top, bottom


def same_padding(kernel: Attr, dilation: Attr = 1) -> tuple[int, int]:
    """The padding before H and W that keeps H x W at stride 1 (`same_pads`; equal on both
    sides for an odd kernel): the padding that the conv op's default, imported
    `padding="same"` convs and attention blocks' convs share."""
    left, _, top, _ = same_pads((1, 1), kernel, 1, dilation)
    return top, left


def _conv_complete(attrs: dict[str, Any]) -> dict[str, Any]:
    if attrs.get("padding") is None:
        attrs["padding"] = same_padding(attrs["kernel"], attrs["dilation"])
    return attrs


UNIT_STRIDE: Attrs = {"stride": (1, 1)}  # the stride belongs to the first copy of a repeat

# `std = true`: weight standardisation (timm's StdConv2d, BiT), the weight of each output channel
# normalised in the forward, (w - mean) / sqrt(var + eps), by a training-mode batch_norm of the
# weight; `gain = true`: also times a learned gain per output channel and gamma / sqrt(fan-in)
# (ScaledStdConv2d, NF-Nets), c_out more parameters. fvcore counts that batch_norm (see
# _conv_fvcore).

CONV = Op(
    "conv",
    (Arg("c_out", "count"), Arg("kernel", "pair"), Arg("stride", "pair", 1),
     Arg("padding", "pair0", derived=True), Arg("dilation", "pair", 1), Arg("groups", "count", 1),
     Arg("bias", "bool", False), Arg("std", "bool", False), Arg("gain", "bool", False),
     Arg("gamma", "float", 1.0), Arg("eps", "positive", 1e-6)),
    infer=_conv_infer, torch=_conv_torch, params=_conv_params, macs=_conv_macs,
    fvcore=_conv_fvcore, check=_conv_check, complete=_conv_complete, resets=UNIT_STRIDE,
    activations=lambda a, ins, out: numel(out),
    fresh=True, example="conv(64, 3)", positional=2,
    doc="2-D convolution (groups, dilation, bias); `groups = c_in` is depthwise; `std = true` "
        "standardises its weight per output channel (eps), `gain = true` then scales it by a "
        "learned gain per output channel and gamma / sqrt(fan-in) (NF-Nets)",
)

# --- normalisation, activations -----------------------------------------------------------------


def _same(a: Attrs, ins: Shapes) -> Shape:
    return ins[0]


def _bn_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    kind = "nn.BatchNorm2d" if len(ins[0]) == 3 else "nn.BatchNorm1d"
    eps = "" if a["eps"] == 1e-5 else f", eps={a['eps']!r}"
    momentum = "" if a.get("momentum", 0.1) == 0.1 else f", momentum={a['momentum']!r}"
    return TorchModule(f"{kind}({ins[0][0]}{eps}{momentum})")


BN = Op(
    "bn", (Arg("eps", "positive", 1e-5), Arg("momentum", "prob", 0.1)),  # momentum: training only
    infer=_same, torch=_bn_torch, fresh=True, positional=1,
    params=lambda a, ins, out: 2 * ins[0][0],
    buffers=lambda a, ins, out: 2 * ins[0][0] + 1,  # running mean and var, num_batches_tracked
    fvcore=lambda a, ins, out: 2 * numel(ins[0]),  # eval-mode batch_norm with affine: 2 per element
    doc="batch normalisation over the channels (eps; momentum matters for training only)",
)


def _activation(act: Activation) -> Op:
    """An op for each activation of the vocabulary."""
    source = TorchModule(f"nn.{act.module}()")
    inplace = f"nn.{act.module}(inplace=True)" if act.inplace_module else None
    return Op(act.name, (), infer=_same, torch=lambda a, ins, out: source, inplace=inplace,
              doc=f"activation: {act.formula}")


# --- pooling ------------------------------------------------------------------------------------


def _pool_infer(a: Attrs, ins: Shapes) -> Shape:
    c, h, w = _spatial("pooling", ins[0])
    (kh, kw), (sh, sw), (ph, pw) = _pair(a["kernel"]), _pair(a["stride"]), _pair(a["padding"])
    if 2 * ph > kh or 2 * pw > kw:
        raise fail(f"pooling padding {ph}x{pw} is more than half the window {kh}x{kw}")
    ceil = bool(a["ceil"])
    return (c, _window(h, kh, sh, ph, 1, ceil), _window(w, kw, sw, pw, 1, ceil))


def _pool_torch(kind: str) -> Callable[[Attrs, Shapes, Shape], Lowering]:
    def lower(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
        extra = f", stride={_src(a['stride'])}" if a["stride"] != a["kernel"] else ""
        if a["padding"] != (0, 0):
            extra += f", padding={_src(a['padding'])}"
        if a["ceil"]:
            extra += ", ceil_mode=True"
        if not a.get("count_pad", True):
            extra += ", count_include_pad=False"
        return TorchModule(f"nn.{kind}({_src(a['kernel'])}{extra})")

    return lower


def _pool_complete(attrs: dict[str, Any]) -> dict[str, Any]:
    if attrs.get("stride") is None:
        attrs["stride"] = attrs["kernel"]
    return attrs


_POOL_ARGS = (Arg("kernel", "pair"), Arg("stride", "pair", derived=True),
              Arg("padding", "pair0", 0), Arg("ceil", "bool", False))


def _maxpool_pads(a: Attrs, ins: Shapes) -> tuple[int, int, int, int]:
    """`same = true`: TensorFlow's `same` padding for this input (`same_pads`), else none."""
    if not a.get("same"):
        return (0, 0, 0, 0)
    _, h, w = _spatial("maxpool", ins[0])
    if a["padding"] != (0, 0) or a["ceil"]:
        raise fail("`maxpool(..., same = true)` works out its own padding: it takes no "
                   "`padding` and no `ceil`")
    return same_pads((h, w), a["kernel"], a["stride"])


def _maxpool_infer(a: Attrs, ins: Shapes) -> Shape:
    left, right, top, bottom = _maxpool_pads(a, ins)
    c, h, w = _spatial("maxpool", ins[0])
    (kh, kw), (sh, sw) = _pair(a["kernel"]), _pair(a["stride"])
    if a.get("same"):
        return (c, _window(h + top + bottom, kh, sh, 0, 1, False),
                _window(w + left + right, kw, sw, 0, 1, False))
    return _pool_infer(a, ins)


def _maxpool_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    """Max pooling pads with -inf: equal `same` padding is the module's own, unequal padding
    (an even size at stride 2) a ConstantPad2d of -inf before it (timm's MaxPool2dSame)."""
    if not a.get("same"):
        return _pool_torch("MaxPool2d")(a, ins, out)
    left, right, top, bottom = _maxpool_pads(a, ins)
    if (left, top) == (right, bottom):
        return _pool_torch("MaxPool2d")({**a, "padding": (top, left)}, ins, out)
    pool = _pool_torch("MaxPool2d")(a, ins, out)
    assert isinstance(pool, TorchModule)
    return TorchModule(f"nn.Sequential(nn.ConstantPad2d(({left}, {right}, {top}, {bottom}), "
                       f"-float(\"inf\")), {pool.source})")


# fvcore counts no max pooling and no padding.
MAXPOOL = Op("maxpool", (*_POOL_ARGS, Arg("same", "bool", False)), infer=_maxpool_infer,
             torch=_maxpool_torch, complete=_pool_complete, resets=UNIT_STRIDE,
             example="maxpool(3, 2)", positional=2,
             doc="max pooling (stride defaults to the window; `ceil = true` pools as Caffe; "
                 "`same = true` pads as TensorFlow's `same`, with -inf: out = ceil(in / stride))")
AVGPOOL = Op("avgpool", (*_POOL_ARGS, Arg("count_pad", "bool", True)),
             infer=_pool_infer, torch=_pool_torch("AvgPool2d"), complete=_pool_complete,
             resets=UNIT_STRIDE, example="avgpool(3, 2)", positional=2,
             doc="average pooling (stride defaults to the window; `ceil = true` pools as Caffe)")


def _global(a: Attrs, ins: Shapes) -> Shape:
    return (_spatial("global pooling", ins[0])[0], 1, 1)


GLOBAL_AVGPOOL = Op(
    "global_avgpool", (), infer=_global,
    torch=lambda a, ins, out: TorchModule("nn.AdaptiveAvgPool2d(1)"),
    fvcore=lambda a, ins, out: numel(ins[0]),  # adaptive_avg_pool2d: one per input element
    doc="the mean over H x W: C x 1 x 1",
)


def _adaptive_infer(a: Attrs, ins: Shapes) -> Shape:
    c = _spatial("adaptive_avgpool", ins[0])[0]
    return (c, *_pair(a["size"]))


# Average pooling to a fixed output size (VGG's 7x7 before its classifier, at any input size).
ADAPTIVE_AVGPOOL = Op(
    "adaptive_avgpool", (Arg("size", "pair"),), infer=_adaptive_infer,
    torch=lambda a, ins, out: TorchModule(f"nn.AdaptiveAvgPool2d({_src(a['size'])})"),
    fvcore=lambda a, ins, out: numel(ins[0]),  # adaptive_avg_pool2d: one per input element
    doc="average pooling to a fixed output size `size` (a number or HxW), at any input size",
)
GLOBAL_MAXPOOL = Op("global_maxpool", (), infer=_global,
                    torch=lambda a, ins, out: TorchModule("nn.AdaptiveMaxPool2d(1)"),
                    doc="the maximum over H x W: C x 1 x 1")


# --- classifier pieces ----------------------------------------------------------------------------


def _linear_infer(a: Attrs, ins: Shapes) -> Shape:
    if len(ins[0]) != 1:
        raise fail(f"`linear` needs flat features, got a {_fmt(ins[0])} feature map",
                   "put `flatten` (after `global_avgpool`) before it")
    return (_int(a, "c_out"),)


def _linear_macs(a: Attrs, ins: Shapes, out: Shape) -> int:
    return ins[0][0] * _int(a, "c_out")


LINEAR = Op(
    "linear", (Arg("c_out", "count"), Arg("bias", "bool", True)),
    infer=_linear_infer,
    torch=lambda a, ins, out: TorchModule(
        f"nn.Linear({ins[0][0]}, {a['c_out']}, bias={a['bias']})"),
    params=lambda a, ins, out: _linear_macs(a, ins, out) + (_int(a, "c_out") if a["bias"] else 0),
    macs=_linear_macs, fvcore=_linear_macs, fresh=True, example="linear(1000)",
    activations=lambda a, ins, out: numel(out),
    doc="fully connected layer on flat features (after `flatten`)",
)
DROPOUT = Op("dropout", (Arg("p", "prob", 0.5),), infer=_same, positional=1,
             torch=lambda a, ins, out: TorchModule(f"nn.Dropout({a['p']!r})"),
             doc="dropout with probability p (training only: no cost)")


def _drop_path_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    """Stochastic depth: in training, each sample's tensor is zeroed with probability p, else
    divided by 1 - p (torchvision.ops.stochastic_depth, mode "row", in the same RNG order)."""
    q = 1.0 - float(a["p"])  # type: ignore[arg-type]
    if q == 1.0:
        return TorchExpr("{0}")
    mask = "{0}.new_empty(({0}.shape[0],) + (1,) * ({0}.dim() - 1))"
    return TorchExpr(f"({{0}} * {mask}.bernoulli_({q!r}).div_({q!r}) if self.training else {{0}})")


# Drop path (stochastic depth) on a residual branch: a training-time op, free at inference.
DROP_PATH = Op("drop_path", (Arg("p", "prob", 0.0),), infer=_same, torch=_drop_path_torch,
               example="drop_path(0.2)", positional=1,
               doc="stochastic depth on a residual branch (training only: no cost)")
FLATTEN = Op("flatten", (), infer=lambda a, ins: (numel(ins[0]),),
             torch=lambda a, ins, out: TorchExpr("torch.flatten({0}, 1)"),
             doc="C x H x W to C*H*W flat features")


def _shuffle_check(a: Attrs, ins: Shapes) -> None:
    c = _spatial("channel_shuffle", ins[0])[0]
    if c % _int(a, "groups"):
        raise fail(f"channel_shuffle groups = {a['groups']} does not divide {c} channels")


CHANNEL_SHUFFLE = Op("channel_shuffle", (Arg("groups", "count"),), infer=_same,
                     check=_shuffle_check, example="channel_shuffle(4)",
                     torch=lambda a, ins, out: TorchModule(f"nn.ChannelShuffle({a['groups']})"),
                     doc="ShuffleNet's channel shuffle across `groups` groups")
SCALE = Op("scale", (Arg("factor", "float"),), infer=_same, fresh=True, example="scale(0.2)",
           torch=lambda a, ins, out: TorchExpr(f"{{0}} * {a['factor']!r}"),
           doc="multiply by a constant (Inception-ResNet's residual scaling)")


def _pad_channels_infer(a: Attrs, ins: Shapes) -> Shape:
    c, h, w = _spatial("pad_channels", ins[0])
    if _int(a, "c_out") < c:
        raise fail(f"`pad_channels({a['c_out']})` cannot drop channels: its input has {c}",
                   "pad_channels only appends zero channels: pad the narrower tensor "
                   "(ReXNet pads its shortcut up to the residual branch's width)")
    return (_int(a, "c_out"), h, w)


def _pad_channels_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    extra = out[0] - ins[0][0]
    return TorchExpr(f"nn.functional.pad({{0}}, (0, 0, 0, 0, 0, {extra}))" if extra else "{0}")


# Zero channels appended after the input's, up to c_out: a shortcut that adds to the first c_in
# channels of a wider residual branch only (ReXNet: `out[:, :c_in] += x`). Adding zeros leaves
# the other channels bit for bit, so `f(x) + pad(x)` equals timm's `cat([f(x)[:, :c] + x,
# f(x)[:, c:]])`. No parameters; fvcore counts no pad (constant_pad_nd) and no add. Not `fresh`:
# with nothing to pad, the lowering returns its input.
PAD_CHANNELS = Op("pad_channels", (Arg("c_out", "count"),), infer=_pad_channels_infer,
                  torch=_pad_channels_torch, example="pad_channels(64)",
                  doc="zero channels appended up to c_out (ReXNet's partial-channel residual)")

# --- what imported models compute (every one a spec can call too) ---------------------------------


def _mean_infer(a: Attrs, ins: Shapes) -> Shape:
    c = _spatial("mean", ins[0])[0]
    return (c, 1, 1) if a["keep"] else (c,)


# The mean over H x W as a reduction (`x.mean((2, 3))`: MNASNet's head). fvcore counts no mean,
# where it counts `global_avgpool` (adaptive average pooling): the two ops differ in their count.
MEAN = Op("mean", (Arg("keep", "bool", False),), infer=_mean_infer, fresh=True, positional=0,
          torch=lambda a, ins, out: TorchExpr(
              "{0}.mean((2, 3), keepdim=True)" if a["keep"] else "{0}.mean((2, 3))"),
          doc="the mean over H x W: C flat features, or C x 1 x 1 with `keep = true` (a "
              "reduction: fvcore counts none, unlike `global_avgpool`)")


def _channel_slice_infer(a: Attrs, ins: Shapes) -> Shape:
    c, h, w = _spatial("channel_slice", ins[0])
    start, stop = _int(a, "start"), _int(a, "stop")
    if not start < stop <= c:
        raise fail(f"`channel_slice({start}, {stop})` needs 0 <= start < stop <= {c}, the "
                   "input's channels")
    return (stop - start, h, w)


# Channels [start, stop) of the input: the pieces of `torch.split`, `chunk` and `x[:, a:b]`
# (ShuffleNetV2, CSPNet, MixNet, GhostNet). A view: no cost, not a fresh tensor.
CHANNEL_SLICE = Op("channel_slice", (Arg("start", "index"), Arg("stop", "count")),
                   infer=_channel_slice_infer, example="channel_slice(0, 32)",
                   torch=lambda a, ins, out: TorchExpr(f"{{0}}[:, {a['start']}:{a['stop']}]"),
                   doc="the channels [start, stop) of the input (a split's piece)")


def _pad_infer(a: Attrs, ins: Shapes) -> Shape:
    c, h, w = _spatial("pad", ins[0])
    left, right, top, bottom = (_int(a, k) for k in ("left", "right", "top", "bottom"))
    cropped = (h + min(top, 0) + min(bottom, 0), w + min(left, 0) + min(right, 0))
    out = (h + top + bottom, w + left + right)
    if min(cropped) < 1 or min(out) < 1:
        raise fail(f"`pad({left}, {right}, {top}, {bottom})` crops a {_fmt(ins[0])} feature map "
                   "to nothing", "a negative amount crops: each side's crop must leave a row "
                   "and a column")
    return (c, *out)


# Zero padding, also unequal (TensorFlow's `same` padding, timm's Conv2dSame: one more row and
# column after than before at stride 2); a negative amount crops that side (NASNet's
# `ZeroPad2d((-1, 1, -1, 1))`, a one-pixel shift). fvcore counts no padding.
PAD = Op("pad", (Arg("left", "int"), Arg("right", "int"), Arg("top", "int"),
                 Arg("bottom", "int")), infer=_pad_infer, fresh=True, example="pad(0, 1, 0, 1)",
         torch=lambda a, ins, out: TorchExpr(
             f"nn.functional.pad({{0}}, ({a['left']}, {a['right']}, {a['top']}, {a['bottom']}))"),
         doc="zero padding: left, right, top, bottom (unequal where TensorFlow's `same` pads; "
             "negative: a crop)")


def _leaky_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    return TorchModule(f"nn.LeakyReLU({a['slope']!r})")


LEAKY_RELU = Op("leaky_relu", (Arg("slope", "float", 0.01),), infer=_same, torch=_leaky_torch,
                positional=1, example="leaky_relu(0.1)",
                doc="activation: x if x > 0 else slope * x")

# A learned scale per channel (ConvNeXt's layer scale `gamma * x`): C parameters. fvcore counts
# no elementwise multiply.
LAYER_SCALE = Op("layer_scale", (), infer=_same, fresh=True, params=lambda a, ins, out: ins[0][0],
                 torch=lambda a, ins, out: TorchModule(f"LayerScale({ins[0][0]})",
                                                       support=("LayerScale",)),
                 doc="a learned scale per channel (layer scale): C parameters")

# A learned scalar scale and bias, `scale * x + bias` (HGNetV2's LearnableAffineBlock): two
# parameters of shape (1,), kept as the lowering's `scale` and `bias`. fvcore counts no
# elementwise multiply or add.
AFFINE = Op("affine", (), infer=_same, fresh=True, params=lambda a, ins, out: 2,
            torch=lambda a, ins, out: TorchModule("Affine()", support=("Affine",)),
            doc="a learned scalar scale and bias: scale * x + bias (2 parameters)")

# A learned scalar scale, `gain * x` (NF-Nets' skipinit_gain): one parameter of shape (), kept as
# the lowering's `weight`. fvcore counts no elementwise multiply.
GAIN = Op("gain", (), infer=_same, fresh=True, params=lambda a, ins, out: 1,
          torch=lambda a, ins, out: TorchModule("Gain()", support=("Gain",)),
          doc="a learned scalar scale: gain * x (1 parameter; NF-Nets' skipinit gain)")


def _space_to_depth_infer(a: Attrs, ins: Shapes) -> Shape:
    c, h, w = _spatial("space_to_depth", ins[0])
    b = _int(a, "block")
    if h % b or w % b:
        raise fail(f"`space_to_depth({b})` needs H and W divisible by {b}, got {_fmt(ins[0])}")
    return (c * b * b, h // b, w // b)


def _space_to_depth_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    c, b = ins[0][0], a["block"]
    return TorchExpr(f"{{0}}.reshape(-1, {c}, {out[1]}, {b}, {out[2]}, {b})"
                     f".permute(0, 3, 5, 1, 2, 4).reshape(-1, {out[0]}, {out[1]}, {out[2]})")


# Each block x block patch moved into the channels, block row and column first, then the
# input's channel (TResNet's SpaceToDepth, TensorFlow's space_to_depth in NCHW): output
# channel (i * block + j) * C + c at (y, x) is input channel c at (y * block + i, x * block + j).
# torch's pixel_unshuffle orders them c * block^2 + i * block + j: not this op. No parameters;
# fvcore counts no view or permute.
SPACE_TO_DEPTH = Op("space_to_depth", (Arg("block", "count"),), infer=_space_to_depth_infer,
                    torch=_space_to_depth_torch, fresh=True, positional=1,
                    example="space_to_depth(4)",
                    doc="block x block patches moved into the channels, (block row, block "
                        "column, channel) order: block^2 C x H/block x W/block (TResNet's stem)")


def _blur_infer(a: Attrs, ins: Shapes) -> Shape:
    c, h, w = _spatial("blur_pool", ins[0])
    k, s = _int(a, "size"), _int(a, "stride")
    if k < 2:
        raise fail(f"`blur_pool({k})` needs a filter of 2 or more taps")
    p = same_padding(k)[0]
    if a["reflect"] and p >= min(h, w):
        raise fail(f"`blur_pool({k})` pads {p} by reflection: it needs H and W over {p}, got "
                   f"{_fmt(ins[0])}")
    return (c, _window(h, k, s, p, 1, False), _window(w, k, s, p, 1, False))


def _blur_macs(a: Attrs, ins: Shapes, out: Shape) -> int:
    return numel(out) * _int(a, "size") ** 2


def _blur_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    return TorchModule(f"BlurPool({ins[0][0]}, {a['size']}, {a['stride']}, "
                       f"reflect={a['reflect']})", support=("BlurPool",))


# Anti-aliased downsampling (Zhang 2019; timm's BlurPool2d: ResNet-blur, TResNet): padding by
# `same_padding(size)` (reflected, or zeros with `reflect = false`), then a fixed depthwise
# binomial filter (row C(size - 1, i) / 2^(size - 1), its outer product) at `stride`. No
# parameters (the filter is a constant, not in the state dict); a depthwise conv's
# multiply-accumulates, which fvcore counts too (F.conv2d).
BLUR_POOL = Op("blur_pool", (Arg("size", "count", 3), Arg("stride", "count", 2),
                             Arg("reflect", "bool", True)),
               infer=_blur_infer, torch=_blur_torch, macs=_blur_macs, fvcore=_blur_macs,
               activations=lambda a, ins, out: numel(out), fresh=True, positional=0,
               example="blur_pool(3, 2)",
               doc="blur pooling: reflect padding, a fixed binomial size x size filter per "
                   "channel, at stride (anti-aliased downsampling)")


def _split_check(a: Attrs, ins: Shapes) -> None:
    rc = _spatial("split_attention", ins[0])[0]
    k, g = _int(a, "radix"), _int(a, "groups")
    if rc % k:
        raise fail(f"`split_attention` with radix {k} needs channels divisible by {k}, got {rc}",
                   "its input is the radix branches, C channels each, concatenated")
    c, rd = rc // k, _int(a, "rd")
    if c % g or rd % g:
        raise fail(f"split_attention groups = {g} must divide the channels of a branch ({c}) "
                   f"and rd ({rd})")


def _split_infer(a: Attrs, ins: Shapes) -> Shape:
    rc, h, w = _spatial("split_attention", ins[0])
    return (rc // _int(a, "radix"), h, w)


def _split_macs(a: Attrs, ins: Shapes, out: Shape) -> int:
    """fc1 (C to rd) and fc2 (rd to radix C), each grouped, on the pooled vector."""
    k, g, rd = _int(a, "radix"), _int(a, "groups"), _int(a, "rd")
    return out[0] * rd // g * (1 + k)


def _split_params(a: Attrs, ins: Shapes, out: Shape) -> int:
    bias = out[0] * _int(a, "radix") + _int(a, "rd") if a["bias"] else 0
    return _split_macs(a, ins, out) + bias + 2 * _int(a, "rd")  # + bn1's weight and bias


def _split_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    return TorchModule(f"SplitAttention({out[0]}, {a['radix']}, {a['rd']}, groups={a['groups']}, "
                       f"bias={a['bias']})", support=("SplitAttention",))


# Attention across branches (ResNeSt's split attention, SKNet's selective kernel): the input is
# `radix` branches of C channels each, concatenated; their sum is averaged over H x W, goes
# through fc1 (C to rd, grouped), bn1, ReLU and fc2 (rd to radix C, grouped), a softmax across
# the branches per channel (ResNeSt's RadixSoftmax order: fc2's channels grouped by `groups`
# first, then by branch; a sigmoid for radix 1) weights them, and the weighted branches are
# summed: C x H x W. Its parameters are named as ResNeSt's (fc1, bn1, fc2). fvcore counts the
# two 1x1 convs and the batch norm (2 per element of rd); no sum, mean, softmax or product.
# `paper`: the FCs, the squeeze (C H W) and the weighting (radix C H W).
SPLIT_ATTENTION = Op(
    "split_attention", (Arg("radix", "count"), Arg("rd", "count"), Arg("groups", "count", 1),
                        Arg("bias", "bool", True)),
    infer=_split_infer, check=_split_check, torch=_split_torch, params=_split_params,
    buffers=lambda a, ins, out: 2 * _int(a, "rd") + 1, macs=_split_macs,
    fvcore=lambda a, ins, out: _split_macs(a, ins, out) + 2 * _int(a, "rd"),
    paper=lambda a, ins, out: _split_macs(a, ins, out) + numel(ins[0]) + numel(out),
    activations=lambda a, ins, out: _int(a, "rd") + ins[0][0], fresh=True, positional=2,
    example="split_attention(2, 32)",
    doc="attention across `radix` branches concatenated along the channels (ResNeSt, SKNet): "
        "a softmax per channel over the branches from their pooled sum's MLP, the weighted sum",
)


def _channel_linear_macs(a: Attrs, ins: Shapes, out: Shape) -> int:
    return numel(ins[0]) * _int(a, "c_out")


# A fully connected layer over the channels of each position: ConvNeXt's MLP, which applies
# nn.Linear to a channels-last tensor, as a channels-first op. The same computation as a 1x1
# conv; its weight keeps nn.Linear's layout (c_out x c_in), so the model's tensors load as they
# are, and fvcore counts its matmul as it counts the model's linear layer.
CHANNEL_LINEAR = Op(
    "channel_linear", (Arg("c_out", "count"), Arg("bias", "bool", True)), fresh=True,
    infer=lambda a, ins: (_int(a, "c_out"), *_spatial("channel_linear", ins[0])[1:]),
    params=lambda a, ins, out: ins[0][0] * _int(a, "c_out") + (_int(a, "c_out") if a["bias"]
                                                               else 0),
    macs=_channel_linear_macs, fvcore=_channel_linear_macs,
    activations=lambda a, ins, out: numel(out), example="channel_linear(256)",
    torch=lambda a, ins, out: TorchModule(
        f"ChannelLinear({ins[0][0]}, {a['c_out']}, bias={a['bias']})",
        support=("ChannelLinear",)),
    doc="a linear layer over the channels of each position (ConvNeXt's MLP, channels-first)")

def _upsample_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    mode = "'bilinear', align_corners=" + repr(bool(a["align"])) if a["bilinear"] else "'nearest'"
    return TorchModule(f"nn.Upsample(scale_factor={a['scale']}, mode={mode})")


def _upsample_infer(a: Attrs, ins: Shapes) -> Shape:
    c, h, w = _spatial("upsample", ins[0])
    if a["align"] and not a["bilinear"]:
        raise fail("`align = true` is bilinear upsampling's option", "add `bilinear = true`")
    return (c, h * _int(a, "scale"), w * _int(a, "scale"))


# Upsampling by a whole factor, nearest or bilinear (HRNet's fuse layers). fvcore counts one per
# output element for nearest, four for bilinear.
UPSAMPLE = Op("upsample", (Arg("scale", "count"), Arg("bilinear", "bool", False),
                           Arg("align", "bool", False)),
              infer=_upsample_infer, torch=_upsample_torch, fresh=True, example="upsample(2)",
              positional=1,
              fvcore=lambda a, ins, out: numel(out) * (4 if a["bilinear"] else 1),
              doc="upsampling by a whole factor: nearest, or bilinear (`align`: corners)")


# --- merges and the SE internals (not callable from a spec) ---------------------------------------


def _branches(a: Attrs, ins: Shapes) -> str:
    """The inputs' shapes, named by branch (`from a, b add`: by position)."""
    names = a.get("branches") or tuple(f"input {i + 1}" for i in range(len(ins)))
    assert isinstance(names, tuple)
    return ", ".join(f"{n} {_fmt(s)}" for n, s in zip(names, ins, strict=False))


def _add_infer(a: Attrs, ins: Shapes) -> Shape:
    if len(set(ins)) != 1:
        raise fail(f"cannot add tensors of different shapes: {_branches(a, ins)}",
                   "a projection shortcut (conv + bn) can match the channels and the stride")
    return ins[0]


def _concat_infer(a: Attrs, ins: Shapes) -> Shape:
    """Along `axis` (0 channels, as Inception's merges; 1 height, 2 width: attention blocks)."""
    axis = _int(a, "axis") if "axis" in a else 0
    rest = {s[:axis] + s[axis + 1:] for s in ins}
    if len(rest) != 1 or len(ins[0]) != 3:
        raise fail(f"cannot concatenate feature maps of different sizes: {_branches(a, ins)}",
                   "every branch must keep the same height and width (check strides, padding)")
    joined = list(ins[0])
    joined[axis] = sum(s[axis] for s in ins)
    return tuple(joined)


ADD = Op("add", (), infer=_add_infer, arity=None, user=False, fresh=True, inplace="{0}.add_({1})",
         torch=lambda a, ins, out: TorchExpr(" + ".join(f"{{{i}}}" for i in range(len(ins)))))
CONCAT = Op("concat", (), infer=_concat_infer, arity=None, user=False, fresh=True,
            torch=lambda a, ins, out: TorchExpr(
                "torch.cat([" + ", ".join(f"{{{i}}}" for i in range(len(ins))) + "], "
                f"{_int(a, 'axis') + 1 if 'axis' in a else 1})"))


def _product_infer(a: Attrs, ins: Shapes) -> Shape:
    if len(set(ins)) != 1:
        raise fail(f"cannot multiply tensors of different shapes: {_branches(a, ins)}",
                   "every branch of `parallel mul` must keep the same shape")
    return ins[0]


# The elementwise product of tensors of one shape (StarNet's star, act(f1(x)) * f2(x)):
# `parallel mul`. No parameters; fvcore counts no elementwise multiply, and the `paper`
# convention counts it as it counts `add`: nothing (the SE scale, `mul`, is the SE block's own).
PRODUCT = Op("product", (), infer=_product_infer, arity=None, user=False, fresh=True,
             torch=lambda a, ins, out: TorchExpr(" * ".join(f"{{{i}}}" for i in range(len(ins)))))

# The merges `parallel <merge> { ... }` takes: the word a spec writes -> the op of the merge node.
MERGES: dict[str, Op] = {"add": ADD, "concat": CONCAT, "mul": PRODUCT}


def _elementwise(a: Attrs, ins: Shapes, out: Shape) -> int:
    """The paper's convention: one operation per element of the SE block's input."""
    return numel(ins[0])


# The SE squeeze, F_sq: a statistic over H x W (sedsl.ir.vocab.SQUEEZES), as timm computes it.
# fvcore counts none of mean, amax, var, pow, sum, sqrt, so its totals on timm's SE models equal
# sedsl's; it counts adaptive average pooling (torchvision's SqueezeExcitation: `avgpool`).
def _twice_for_avgmax(a: Attrs, ins: Shapes, out: Shape) -> int:
    """avgmax reads its input twice (a mean and a max); the others once."""
    return numel(ins[0]) * (2 if a["mode"] == "avgmax" else 1) + numel(out)


def _squeeze_fvcore(a: Attrs, ins: Shapes, out: Shape) -> int:
    """fvcore counts adaptive average pooling (one per input element), no reduction."""
    return numel(ins[0]) if a["mode"] == "avgpool" else 0


SQUEEZE = Op(
    "squeeze", (), infer=_global, user=False, paper=_elementwise, traffic=_twice_for_avgmax,
    fvcore=_squeeze_fvcore,
    torch=lambda a, ins, out: TorchExpr(SQUEEZES[str(a["mode"])].expr),
)


def _broadcast_infer(a: Attrs, ins: Shapes) -> Shape:
    """x (C, H, W) and a factor or term that broadcasts to it: (C, 1, 1), (1, H, W), (C, H, 1),
    (C, 1, W) or (C, H, W)."""
    u, s = ins
    if len(u) != 3 or len(s) != 3 or any(d not in (1, e) for d, e in zip(s, u, strict=True)):
        raise fail(f"cannot broadcast {_fmt(s)} onto a {_fmt(u)} feature map")
    return u


def _mul_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    offset = a.get("offset", 0.0)
    return TorchExpr(f"{{0}} * ({offset!r} + {{1}})" if offset else "{0} * {1}")


# x times a gate that broadcasts to it; `offset` adds a constant to the gate (GCT: 1 + tanh).
MUL = Op("mul", (), infer=_broadcast_infer, arity=2, user=False, fresh=True, paper=_elementwise,
         torch=_mul_torch)
# x plus a term that broadcasts to it (GCNet's add fusion).
SHIFT = Op("shift", (), doc="x plus a term that broadcasts to it (GCNet's add fusion)",
           infer=_broadcast_infer, arity=2, user=False, fresh=True,
           torch=lambda a, ins, out: TorchExpr("{0} + {1}"))


def _se_infer(a: Attrs, ins: Shapes) -> Shape:
    if len(ins) == 2 and ins[0] != ins[1]:
        raise fail(f"cannot add tensors of different shapes: {_fmt(ins[0])}, {_fmt(ins[1])}")
    return ins[0]


class Transform(Record):
    """What a fused SE node computes between its squeeze and its gate (its attribute
    `transform`): the counts of the plain nodes it replaces (the FCs, the channel conv, GCT's
    norm; none for `identity`), the module that computes the block, which squeezes it takes,
    whether a BN before the block folds into it (sedsl.pytorch.kernels.bn_op), the step kinds it
    computes and the gate's offset. Attributes every fused node has besides the
    transform's own (its doc names them): `transform`, `gate`, `act` (the activation after the
    residual add, or none), and `bn`, `bn_eps`, `bn_momentum` when a BN is folded in."""

    name: str
    params: Count
    macs: Count  # the plain nodes' multiply-accumulates (fvcore counts these too)
    activations: Count  # what fvcore's ActivationCountAnalysis counts for the plain nodes
    module: Callable[[Attrs, Shapes], TorchModule]
    squeezes: frozenset[str]
    folds_bn: bool
    doc: str
    # The kinds of the steps between the squeeze and the gate that it computes
    # (sedsl.ir.se.STEP_KINDS): the fusion pass fuses a block only when the steps its settings
    # keep are exactly squeeze, these, gate, scale (Gather-Excite's conv gather or MLP: plain).
    steps: tuple[str, ...] = ()
    offset: float = 0.0  # the scale step's `offset` (GCT's 1 + gate) the op computes
    # Counts in the other conventions, where they are not the defaults: the state (BN running
    # statistics), fvcore's (None: `macs`) and the paper's (None: `macs` + the squeeze and
    # the scale, one per element of U each).
    buffers: Count = _zero
    fvcore: Count | None = None
    paper: Count | None = None
    # `steps`: any steps that act on the squeezed (N, C) vectors (sedsl.ir.se.StepKind's
    # `per_channel`) between these statistics and the gate, not `steps` above
    generic: bool = False


def _mlp_params(a: Attrs, ins: Shapes, out: Shape) -> int:
    c, rd = ins[0][0], _int(a, "rd_channels")
    return 2 * c * rd + ((rd + c) if a["bias"] else 0)


def _mlp_module(a: Attrs, ins: Shapes) -> TorchModule:
    return TorchModule(
        f"SqueezeExcite({ins[0][0]}, {a['rd_channels']}, bias={a['bias']}, "
        f"squeeze={a['squeeze']!r}, excite={a['excite']!r}, gate={a['gate']!r}, "
        f"act={a['act']!r})", support=("SqueezeExcite",))


def _eca_module(a: Attrs, ins: Shapes) -> TorchModule:
    padding = "zero" if a["padding"] == "zeros" else str(a["padding"])  # the op's spelling
    return TorchModule(f"EfficientChannelAttention({a['kernel']}, padding={padding!r}, "
                       f"gate={a['gate']!r}, act={a['act']!r})",
                       support=("EfficientChannelAttention",))


def _ge_module(a: Attrs, ins: Shapes) -> TorchModule:
    return TorchModule(f"GatherExcite(gate={a['gate']!r}, act={a['act']!r})",
                       support=("GatherExcite",))


def _gct_module(a: Attrs, ins: Shapes) -> TorchModule:
    """init = "open" (the norm node's, `init = identity`): gamma and beta 0, as GCTNorm's."""
    init = (("nn.init.zeros_({m}.norm.gamma)", "nn.init.zeros_({m}.norm.beta)")
            if a.get("init") else ())
    return TorchModule(f"GatedChannelTransformation({ins[0][0]}, eps={a['eps']!r}, "
                       f"gate={a['gate']!r}, act={a['act']!r})",
                       support=("GatedChannelTransformation",), init=init)


# --- the generic transform: the plain nodes' own steps between the statistic and the apply ----
#
# A `steps` node keeps the plain nodes it replaces as data: `steps` (their names, in order),
# `ops`, and per step `<name>.inputs` (the names it reads: "x", the block's input, or an earlier
# step) and `<name>.<attribute>` for each attribute of its node. Its counts are those nodes'
# counts, its module (sedsl.pytorch.kernels.ChannelAttention) holds their modules under their
# names, so its state-dict keys are theirs.


def _names(a: Attrs, key: str) -> tuple[str, ...]:
    value = a[key]
    assert isinstance(value, tuple), (key, value)
    return tuple(map(str, value))


def sub_nodes(a: Attrs, ins: Shapes) -> list[tuple[str, Op, dict[str, Attr], Shapes, Shape]]:
    """(name, op, attributes, input shapes, shape) of each plain node a `steps` node stands
    for, the shapes inferred from the block's input x."""
    shapes: dict[str, Shape] = {"x": ins[0]}
    nodes: list[tuple[str, Op, dict[str, Attr], Shapes, Shape]] = []
    for name, op_name in zip(_names(a, "steps"), _names(a, "ops"), strict=True):
        prefix = f"{name}."
        attrs = {k[len(prefix):]: v for k, v in a.items()
                 if k.startswith(prefix) and k != f"{name}.inputs"}
        op = OPS[op_name]
        sources = tuple(shapes[src] for src in _names(a, f"{name}.inputs"))
        shapes[name] = op.infer(attrs, sources)
        nodes.append((name, op, attrs, sources, shapes[name]))
    return nodes


def _steps_count(count: Callable[[Op], Count]) -> Count:
    def total(a: Attrs, ins: Shapes, out: Shape) -> int:
        return sum(count(op)(attrs, sources, shape)
                   for _, op, attrs, sources, shape in sub_nodes(a, ins))
    return total


def _steps_module(a: Attrs, ins: Shapes) -> TorchModule:
    """ChannelAttention(statistic, {step: module, ...}, act): the modules of the steps after
    the statistic's (squeezes, their concat) up to the scale, under the steps' names."""
    modules, support, init = [], ["ChannelAttention"], []
    for name, op, attrs, sources, shape in sub_nodes(a, ins):
        if name in _names(a, "statistic_steps") or op.name == "mul":
            continue
        lowering = op.torch(attrs, sources, shape)
        assert isinstance(lowering, TorchModule), (name, lowering)
        modules.append(f"{name!r}: {lowering.source}")
        support += [s for s in lowering.support if s not in support]
        init += [stmt.replace("{m}", f"{{m}}.{name}") for stmt in lowering.init]
    return TorchModule(f"ChannelAttention({a['statistic']!r}, {{{', '.join(modules)}}}, "
                       f"act={a['act']!r})", support=tuple(support), init=tuple(init))


TRANSFORMS: dict[str, Transform] = {t.name: t for t in (
    Transform("mlp", params=_mlp_params,
              macs=lambda a, ins, out: 2 * ins[0][0] * _int(a, "rd_channels"),
              activations=lambda a, ins, out: _int(a, "rd_channels") + ins[0][0],  # fc1, fc2
              module=_mlp_module, squeezes=KERNEL_SQUEEZES,
              folds_bn=True,
              doc="SE's MLP: fc1 to `rd_channels`, `excite`, fc2 back to C, `bias` in both, "
                  "after a `squeeze` (sedsl::se_block; sedsl::se_bn_block with a BN folded in)",
              steps=("fc", "excite", "fc")),
    Transform("channel_conv", params=lambda a, ins, out: _int(a, "kernel"),
              macs=lambda a, ins, out: ins[0][0] * _int(a, "kernel"),
              activations=lambda a, ins, out: ins[0][0],  # the conv's C outputs
              module=_eca_module, squeezes=frozenset({"avg"}), folds_bn=False,
              doc="ECA's 1-D conv of `kernel` taps across channels, `padding` zeros or "
                  "circular, no bias, after a mean (sedsl::eca_block)",
              steps=("channel_conv",)),
    Transform("identity", params=_zero, macs=_zero, activations=_zero, module=_ge_module,
              squeezes=frozenset({"avg"}), folds_bn=False,
              doc="nothing: the gate of the mean itself, x * gate(mean_hw x), Gather-Excite's "
                  "parameter-free theta-minus at global extent (sedsl::ge_block)"),
    Transform("gct_norm", params=lambda a, ins, out: 3 * ins[0][0], macs=_zero, activations=_zero,
              module=_gct_module, squeezes=frozenset({"l2"}), folds_bn=False,
              doc="GCT's normalisation of its L2 embedding across channels (alpha, gamma, beta "
                  "per channel, `eps` in both roots), the gate offset by 1: x * (1 + gate(t)) "
                  "(sedsl::gct_block)", steps=("norm",), offset=1.0),
    Transform("steps", params=_steps_count(lambda op: op.params),
              macs=_steps_count(lambda op: op.macs),
              activations=_steps_count(lambda op: op.activations), module=_steps_module,
              squeezes=frozenset({"avg", "avgstd"}), folds_bn=False,
              doc="the plain lowering's own steps between the statistic (`statistic`: avg, or "
                  "avgstd: SRM's mean and std) and the gate, as torch modules on the (N, C) "
                  "vectors between the statistic kernel and the apply kernel "
                  "(sedsl::channel_stats, sedsl::channel_apply): ese, se_bn, srm, ecam",
              buffers=_steps_count(lambda op: op.buffers),
              fvcore=_steps_count(lambda op: op.fvcore),
              paper=_steps_count(lambda op: op.count_paper), generic=True),
)}


def _transform(a: Attrs) -> Transform:
    return TRANSFORMS[str(a["transform"])]


def _bn_attrs(a: Attrs) -> dict[str, Attr]:
    """A fused SE node's folded BN as a `bn` node's attributes."""
    return {"eps": a["bn_eps"], "momentum": a["bn_momentum"]}


def _se_params(a: Attrs, ins: Shapes, out: Shape) -> int:
    folded = BN.params(_bn_attrs(a), ins, out) if "bn" in a else 0
    return _transform(a).params(a, ins, out) + folded


def _se_buffers(a: Attrs, ins: Shapes, out: Shape) -> int:
    folded = BN.buffers(_bn_attrs(a), ins, out) if "bn" in a else 0
    return _transform(a).buffers(a, ins, out) + folded


def _se_companions(a: Attrs, ins: Shapes) -> tuple[tuple[str, str, TorchModule], ...]:
    """The folded BN's module, built where the BN node stood (its state-dict keys)."""
    if "bn" not in a:
        return ()
    module = BN.torch(_bn_attrs(a), ins[:1], ins[0])
    assert isinstance(module, TorchModule)
    return (("bn", str(a["bn"]), module),)


# The fused SE block (see passes.fuse_se): [BN,] squeeze, transform (TRANSFORMS), gate, scale
# [+ shortcut, activation]. Its counts are those of the plain-torch pieces it replaces, the
# BN's included.
def _se_macs(a: Attrs, ins: Shapes, out: Shape) -> int:
    return _transform(a).macs(a, ins, out)


def _se_fvcore(a: Attrs, ins: Shapes, out: Shape) -> int:
    folded = BN.fvcore(_bn_attrs(a), ins, out) if "bn" in a else 0
    return (_transform(a).fvcore or _se_macs)(a, ins, out) + folded


def _se_paper(a: Attrs, ins: Shapes, out: Shape) -> int:
    """The transform's count, plus the squeeze and the scale (one per element of U each)."""
    paper = _transform(a).paper
    return paper(a, ins, out) if paper else _se_macs(a, ins, out) + 2 * numel(ins[0])


SE = Op(
    "se", (), infer=_se_infer, arity=None, user=False,
    torch=lambda a, ins, out: _transform(a).module(a, ins), params=_se_params,
    buffers=_se_buffers, macs=_se_macs, fvcore=_se_fvcore, companions=_se_companions,
    # the transform's outputs (a folded BN adds none: fvcore counts no batch_norm outputs)
    activations=lambda a, ins, out: _transform(a).activations(a, ins, out),
    paper=_se_paper,
)

# --- the attention family's pieces (sedsl.ir.se's step kinds build them; not callable) --------

_AXES = {"c": 0, "h": 1, "w": 2}


def _reduce_infer(a: Attrs, ins: Shapes) -> Shape:
    shape = list(_spatial("reduce", ins[0]))
    shape[_AXES[str(a["axis"])]] = 1
    return tuple(shape)


def _reduce_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    d = _AXES[str(a["axis"])] + 1
    one = {"mean": f"{{0}}.mean({d}, keepdim=True)", "max": f"{{0}}.amax({d}, keepdim=True)",
           "sum": f"{{0}}.sum({d}, keepdim=True)"}
    if a["mode"] == "avgmax":  # timm's light CBAM: the average of the mean and the maximum
        return TorchExpr(f"0.5 * {one['mean']} + 0.5 * {one['max']}")
    return TorchExpr(one[str(a["mode"])])


# A mean, max, sum (or the average of mean and max) over one axis, kept as size 1. fvcore counts
# none of them.
REDUCE = Op("reduce", (), doc="a mean, max, sum or (mean + max) / 2 over one axis, kept as size 1",
            infer=_reduce_infer, torch=_reduce_torch, user=False,
            paper=lambda a, ins, out: numel(ins[0]), traffic=_twice_for_avgmax)
TRANSPOSE = Op("transpose", (), doc="H and W swapped", user=False,
               infer=lambda a, ins: (_spatial("transpose", ins[0])[0], ins[0][2], ins[0][1]),
               torch=lambda a, ins, out: TorchExpr("{0}.transpose(-1, -2)"))


def _slice_infer(a: Attrs, ins: Shapes) -> Shape:
    axis, start, stop = _int(a, "axis"), _int(a, "start"), _int(a, "stop")
    shape = list(_spatial("slice", ins[0]))
    if not 0 <= start < stop <= shape[axis]:
        raise fail(f"cannot take {start}:{stop} of an axis of {shape[axis]}")
    shape[axis] = stop - start
    return tuple(shape)


def _slice_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    index = ", ".join([":"] * (_int(a, "axis") + 1) + [f"{a['start']}:{a['stop']}"])
    return TorchExpr(f"{{0}}[{index}]")


SLICE = Op("slice", (), doc="a range [start, stop) along one axis",
           infer=_slice_infer, torch=_slice_torch, user=False)


def _sequence(shape: Shape, features: int) -> tuple[int, int]:
    """(channels C, features F) of a channel sequence: a C x 1 x 1 vector holds one feature per
    channel; F x C x 1 holds F (ECA-MLP's hidden features)."""
    if features == 1:
        if shape[1:] != (1, 1):
            raise fail(f"a 1-D conv across channels needs a Cx1x1 vector, got {_fmt(shape)}")
        return shape[0], 1
    if shape[0] != features or shape[2:] != (1,):
        raise fail(f"expected {features} features per channel, got {_fmt(shape)}")
    return shape[1], features


def _channel_conv_infer(a: Attrs, ins: Shapes) -> Shape:
    c, _ = _sequence(ins[0], _int(a, "c_in"))
    if _int(a, "kernel") % 2 == 0:
        raise fail(f"ECA's kernel must be odd, got {a['kernel']}")
    return (c, 1, 1) if _int(a, "c_out") == 1 else (_int(a, "c_out"), c, 1)


def _channel_conv_params(a: Attrs, ins: Shapes, out: Shape) -> int:
    c_in, c_out = _int(a, "c_in"), _int(a, "c_out")
    return c_out * c_in * _int(a, "kernel") + (c_out if a["bias"] else 0)


def _channel_conv_macs(a: Attrs, ins: Shapes, out: Shape) -> int:
    c, _ = _sequence(ins[0], _int(a, "c_in"))
    return c * _int(a, "c_out") * _int(a, "c_in") * _int(a, "kernel")


def _channel_conv_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    """An nn.Conv1d (timm's parameter layout) whose forward reshapes in and out, so that the
    module's output is the node's (C x 1 x 1, or c_out x C x 1)."""
    k, mode = _int(a, "kernel"), str(a["padding"])
    pad = f", padding_mode={mode!r}" if mode != "zeros" else ""
    return TorchModule(
        f"ChannelConv({a['c_in']}, {a['c_out']}, {k}, padding={same_padding(k)[0]}{pad}, "
        f"bias={a['bias']})", support=("ChannelConv",))


# ECA's 1-D conv across channels (timm's EcaModule / CecaModule: a Conv1d over the squeezed
# vector viewed as (N, 1, C); circular padding wraps the first and last channels).
CHANNEL_CONV = Op("channel_conv", (),
                  doc="ECA's 1-D conv across channels (k taps, zero or circular padding)",
                  infer=_channel_conv_infer, torch=_channel_conv_torch,
                  params=_channel_conv_params, macs=_channel_conv_macs,
                  fvcore=_channel_conv_macs, user=False, fresh=True,
                  activations=lambda a, ins, out: numel(out))


def _per_channel(n: int) -> Count:
    return lambda a, ins, out: n * ins[0][0]


# Layer norm over the channels of each position (timm's LayerNorm2d, GCNet's transform,
# ConvNeXt's norms). fvcore counts aten::layer_norm with an affine transform as 5 per element.
LAYER_NORM = Op(
    "layer_norm", (Arg("eps", "float", 1e-6),), positional=1,
    doc="layer norm over the channels of each position (eps)", infer=_same,
    fresh=True, params=_per_channel(2),
    fvcore=lambda a, ins, out: 5 * numel(ins[0]),
    torch=lambda a, ins, out: TorchModule(f"nn.LayerNorm({ins[0][0]}, eps={a['eps']!r})")
    if len(ins[0]) == 1 else TorchModule(f"LayerNorm2d({ins[0][0]}, eps={a['eps']!r})",
                                         support=("LayerNorm2d",)))


def _map(op: str) -> Callable[[Attrs, Shapes], Shape]:
    """The shape rule of an op that keeps a C x H x W feature map's shape."""
    def infer(a: Attrs, ins: Shapes) -> Shape:
        return _spatial(op, ins[0])

    return infer


def _group_norm_check(a: Attrs, ins: Shapes) -> None:
    c = _spatial("group_norm", ins[0])[0]
    if c % _int(a, "groups"):
        raise fail(f"group_norm groups = {a['groups']} does not divide {c} channels")


# Group norm (nn.GroupNorm; timm's GroupNormAct): the channels in `groups` groups, each
# normalised over its channels and positions, then a per-channel scale and shift. fvcore counts
# aten::group_norm with an affine transform as 5 per element, as layer norm.
GROUP_NORM = Op(
    "group_norm", (Arg("groups", "count"), Arg("eps", "positive", 1e-5)), positional=1,
    doc="group norm: the channels in `groups` groups, each normalised (eps), then scaled and "
        "shifted per channel", infer=_same, check=_group_norm_check, fresh=True,
    params=_per_channel(2), fvcore=lambda a, ins, out: 5 * numel(ins[0]),
    example="group_norm(8)",
    torch=lambda a, ins, out: TorchModule(
        f"nn.GroupNorm({a['groups']}, {ins[0][0]}, eps={a['eps']!r})"))


# Filter response normalisation (timm's FilterResponseNormTlu2d / FilterResponseNormAct2d):
# x / sqrt(mean over H x W of x² + eps), a per-channel scale and shift, with `tlu` the
# thresholded linear unit max(y, tau) with a learned tau per channel. fvcore counts none of its
# elementwise ops or the mean.
FRN = Op(
    "frn", (Arg("eps", "positive", 1e-5), Arg("tlu", "bool", True)), positional=0,
    doc="filter response normalisation: x / sqrt(mean(x²) + eps) over each channel's positions, "
        "scaled and shifted per channel; tlu: then max(y, tau), tau learned per channel",
    infer=_map("frn"), fresh=True,
    params=lambda a, ins, out: (3 if a["tlu"] else 2) * ins[0][0],
    torch=lambda a, ins, out: TorchModule(
        f"FilterResponseNorm({ins[0][0]}, eps={a['eps']!r}, tlu={a['tlu']})",
        support=("FilterResponseNorm",)))


def _evonorm_check(a: Attrs, ins: Shapes) -> None:
    c, g = _spatial("evonorm_s0", ins[0])[0], _int(a, "groups")
    if c % g:
        raise fail(f"`evonorm_s0` groups = {g} does not divide {c} channels")


def _evonorm_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    return TorchModule(f"EvoNormS0({ins[0][0]}, {a['groups']}, eps={a['eps']!r}, "
                       f"act={a['act']}, norm={a['norm']})", support=("EvoNormS0",))


# EvoNorm-S0 (Liu et al. 2020; timm's EvoNorm2dS0: ResNetV2-EvoNorm, VoVNet-EvoNorm), a norm and
# an activation in one: x * sigmoid(v x) / group_std(x) * weight + bias, the std over each group
# of channels and H x W (biased, eps inside the root); `act = false`: x * weight + bias. Its
# tensors weight, bias (and v) per channel, as timm's. fvcore counts none of its elementwise
# ops and reductions.
def _evonorm_complete(attrs: dict[str, Any]) -> dict[str, Any]:
    if attrs.get("norm") is None:
        attrs["norm"] = attrs["act"]
    return attrs


# `norm = true` with `act = false`: x / group_std(x) * weight + bias, as timm's EvoNorm2dS0a
# without its activation (with it, S0a computes what S0 does).
EVONORM_S0 = Op("evonorm_s0", (Arg("groups", "count", 32), Arg("eps", "positive", 1e-5),
                               Arg("act", "bool", True), Arg("norm", "bool", derived=True)),
                infer=_map("evonorm_s0"), check=_evonorm_check, torch=_evonorm_torch,
                complete=_evonorm_complete,
                fresh=True, positional=1, example="evonorm_s0(32)",
                params=lambda a, ins, out: (3 if a["act"] else 2) * ins[0][0],
                doc="EvoNorm-S0: x * sigmoid(v x) / group_std(x) * weight + bias (groups of "
                    "channels; `act = false`: x * weight + bias, or with `norm = true` "
                    "x / group_std(x) * weight + bias, as EvoNorm-S0a)")
# Global response normalisation (ConvNeXt-V2; timm's GlobalResponseNorm): g = the L2 norm over
# H x W per channel, n = g / (mean_c g + eps), x + weight * (x n) + bias; weight and bias per
# channel. fvcore counts no norm, mean or elementwise op.
GRN = Op("grn", (Arg("eps", "positive", 1e-6),), infer=_map("grn"), fresh=True, positional=0,
         params=_per_channel(2),
         torch=lambda a, ins, out: TorchModule(f"GlobalResponseNorm({ins[0][0]}, "
                                               f"eps={a['eps']!r})",
                                               support=("GlobalResponseNorm",)),
         doc="global response norm: x + weight * x * n + bias, n = the L2 norm over H x W over "
             "its mean over channels (ConvNeXt-V2)")
# timm's SimpleNorm2d (ConvNeXt's `_rms` variants): x / sqrt(var_c(x) + eps) * weight, the
# variance over the channels of each position unbiased (torch.var) and the mean not subtracted
# from x; no bias. Not layer_norm (which centres x and has a bias) nor an RMS norm (mean of
# squares). fvcore counts none of var, rsqrt, mul.
SIMPLE_NORM = Op("simple_norm", (Arg("eps", "positive", 1e-6),), infer=_map("simple_norm"),
                 fresh=True, positional=0, params=_per_channel(1),
                 torch=lambda a, ins, out: TorchModule(f"SimpleNorm2d({ins[0][0]}, "
                                                       f"eps={a['eps']!r})",
                                                       support=("SimpleNorm2d",)),
                 doc="timm's SimpleNorm2d: x / sqrt(var_c(x) + eps) * weight, the channels' "
                     "unbiased variance at each position, x not centred, no bias")


def _attn_pool_infer(a: Attrs, ins: Shapes) -> Shape:
    (c, h, w), attn = _spatial("attn_pool", ins[0]), ins[1]
    if attn != (1, h, w):
        raise fail(f"attention pooling needs a 1x{h}x{w} map, got {_fmt(attn)}")
    return (c, 1, 1)


def _attn_pool_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    c, h, w = ins[0]
    return TorchExpr(f"({{0}}.reshape({{0}}.shape[0], 1, {c}, {h * w}) @ torch.softmax("
                     f"{{1}}.reshape({{1}}.shape[0], 1, {h * w}), -1).unsqueeze(3))"
                     f".view({{0}}.shape[0], {c}, 1, 1)")


# GCNet's context: x weighted by the softmax over H x W of a one-channel map, summed (timm's
# GlobalContext: a matmul, which fvcore counts as C x H x W).
ATTN_POOL = Op("attn_pool", (),
               doc="GCNet's context: x weighted by the softmax over H x W of a 1-channel map",
               infer=_attn_pool_infer, torch=_attn_pool_torch, arity=2,
               user=False, fresh=True, macs=lambda a, ins, out: numel(ins[0]),
               fvcore=lambda a, ins, out: numel(ins[0]), activations=lambda a, ins, out: numel(out))


def _gct_norm_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    """init = "open": gamma and beta 0, so that GCT's gate 1 + tanh(.) is 1 (the release starts
    there too; the statements keep it so whatever initialises the network's other layers)."""
    assert a.get("init") in (None, "open"), f"GCT's norm cannot start as {a['init']!r}"
    init = ("nn.init.zeros_({m}.gamma)", "nn.init.zeros_({m}.beta)") if a.get("init") else ()
    return TorchModule(f"GCTNorm({ins[0][0]}, eps={a['eps']!r})", support=("GCTNorm",),
                       init=init)


# GCT's normalisation of its L2 embedding s (official GCT code): e = alpha * s,
# gamma * e / sqrt(mean_c(e^2) + eps) + beta; three parameters per channel.
GCT_NORM = Op("gct_norm", (),
              doc="GCT's channel normalisation of its L2 embedding (alpha, gamma, beta)",
              infer=_same, user=False, fresh=True, params=_per_channel(3),
              torch=_gct_norm_torch)
# SimAM's energy, per element (official SimAM code): (x - mu)^2 / (4 (var + lambda)) + 1/2.
SIMAM = Op("simam", (), doc="SimAM's per-element energy (parameter-free)",
           infer=_same, user=False, fresh=True,
           traffic=lambda a, ins, out: 6 * numel(ins[0]),  # x twice, d thrice, the result
           torch=lambda a, ins, out: TorchExpr(f"simam_energy({{0}}, {a['e_lambda']!r})",
                                               support=("simam_energy",)))


def _style_fc_infer(a: Attrs, ins: Shapes) -> Shape:
    c = _spatial("style_fc", ins[0])[0]
    if ins[0] != (c, 1, 2):
        raise fail(f"SRM's style integration needs Cx1x2 statistics, got {_fmt(ins[0])}")
    return (c, 1, 1)


# SRM's style integration (official SRM code): per channel, its two statistics weighted and
# summed, a parameter `cfc` of C x 2.
STYLE_FC = Op("style_fc", (), doc="SRM's style integration: mean and std weighted per channel",
              infer=_style_fc_infer, user=False, fresh=True,
              params=_per_channel(2), macs=_per_channel(2),
              torch=lambda a, ins, out: TorchModule(f"StyleFC({ins[0][0]})",
                                                    support=("StyleFC",)))

# The network's input: a node with no inputs; the generated forward's argument.
INPUT = Op("input", (), infer=lambda a, ins: tuple(a["shape"]),  # type: ignore[arg-type]
           torch=lambda a, ins, out: TorchExpr("x"), arity=0, user=False)

OPS: dict[str, Op] = {
    op.name: op
    for op in (
        CONV, BN, *map(_activation, ACTIVATIONS.values()), MAXPOOL, AVGPOOL,
        GLOBAL_AVGPOOL, ADAPTIVE_AVGPOOL, GLOBAL_MAXPOOL, LINEAR, DROPOUT, DROP_PATH, FLATTEN,
        CHANNEL_SHUFFLE, SCALE, PAD_CHANNELS, MEAN, CHANNEL_SLICE, PAD, LEAKY_RELU,
        LAYER_SCALE, AFFINE, GAIN, SPACE_TO_DEPTH, BLUR_POOL, SPLIT_ATTENTION, CHANNEL_LINEAR,
        UPSAMPLE,
        ADD, CONCAT, PRODUCT, SQUEEZE, MUL, SHIFT, REDUCE, TRANSPOSE, SLICE, CHANNEL_CONV,
        LAYER_NORM, GROUP_NORM, FRN, EVONORM_S0, GRN, SIMPLE_NORM,
        ATTN_POOL, GCT_NORM, SIMAM, STYLE_FC, SE, INPUT,
    )
}

