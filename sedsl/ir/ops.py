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
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from sedsl.errors import SpecError
from sedsl.ir.vocab import ACTIVATIONS, SQUEEZES, Activation
from sedsl.record import Record

Shape: TypeAlias = tuple[int, ...]
Attr: TypeAlias = int | float | bool | str | tuple[int, ...] | tuple[str, ...]
Attrs: TypeAlias = Mapping[str, Attr]
Shapes: TypeAlias = Sequence[Shape]


class Arg(Record):
    """An argument a spec passes to an op: `conv(64, 3, stride = 2)`."""

    name: str
    kind: str  # count | pair | pair0 | float | prob | bool
    default: Attr | None = None  # None: required, unless derived
    derived: bool = False  # when not given, `complete` works it out from the other arguments


class TorchModule(Record):
    """Lowered to a module: `source` constructs it, e.g. `nn.Conv2d(3, 64, 7, ...)`."""

    source: str


class TorchExpr(Record):
    """Lowered to an expression over the inputs `{0}`, `{1}`, ... e.g. `{0} + {1}`."""

    template: str


Lowering: TypeAlias = TorchModule | TorchExpr


def _zero(a: Attrs, ins: Shapes, out: Shape) -> int:
    return 0


def _none(a: Attrs, ins: Shapes) -> None:
    return None


def _as_given(attrs: dict[str, Any]) -> dict[str, Any]:
    return attrs


Count: TypeAlias = Callable[[Attrs, Shapes, Shape], int]


@dataclass(frozen=True)
class Op:
    name: str
    args: tuple[Arg, ...]
    infer: Callable[[Attrs, Shapes], Shape]
    torch: Callable[[Attrs, Shapes, Shape], Lowering]
    params: Count = _zero
    buffers: Count = _zero  # elements of state that is not a parameter (BN's running statistics)
    macs: Count = _zero  # multiply-accumulates of convolutions and fully connected layers
    fvcore: Count = _zero  # what fvcore's FlopCountAnalysis counts for the lowering
    paper: Count | None = None  # the SE paper's convention; None: the same as `macs`
    check: Callable[[Attrs, Shapes], None] = _none  # extra validation with the input shapes
    complete: Callable[[dict[str, Any]], dict[str, Any]] = _as_given  # derived arguments
    resets: Attrs = field(default_factory=dict)  # what copies after the first of `* n` reset
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
    user: bool = True  # callable from a spec (merges and SE internals are not)
    example: str = ""  # a call shown in errors; "" for the bare name

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


def _conv_infer(a: Attrs, ins: Shapes) -> Shape:
    _, h, w = _spatial("conv", ins[0])
    (kh, kw), (sh, sw) = _pair(a["kernel"]), _pair(a["stride"])
    (ph, pw), (dh, dw) = _pair(a["padding"]), _pair(a["dilation"])
    return (_int(a, "c_out"), _window(h, kh, sh, ph, dh, False), _window(w, kw, sw, pw, dw, False))


def _conv_params(a: Attrs, ins: Shapes, out: Shape) -> int:
    kh, kw = _pair(a["kernel"])
    weight = _int(a, "c_out") * ins[0][0] // _int(a, "groups") * kh * kw
    return weight + (_int(a, "c_out") if a["bias"] else 0)


def _conv_macs(a: Attrs, ins: Shapes, out: Shape) -> int:
    kh, kw = _pair(a["kernel"])
    return numel(out) * ins[0][0] // _int(a, "groups") * kh * kw


def _conv_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    extra = "".join(
        f", {k}={_src(a[k])}" for k, default in (("stride", (1, 1)), ("padding", (0, 0)),
                                                  ("dilation", (1, 1)), ("groups", 1))
        if a[k] != default
    )
    return TorchModule(f"nn.Conv2d({ins[0][0]}, {a['c_out']}, {_src(a['kernel'])}{extra}, "
                       f"bias={a['bias']})")


def _conv_complete(attrs: dict[str, Any]) -> dict[str, Any]:
    if attrs.get("padding") is None:
        (kh, kw), (dh, dw) = _pair(attrs["kernel"]), _pair(attrs["dilation"])
        attrs["padding"] = (dh * (kh - 1) // 2, dw * (kw - 1) // 2)  # "same" for odd kernels
    return attrs


UNIT_STRIDE: Attrs = {"stride": (1, 1)}  # the stride belongs to the first copy of a repeat

CONV = Op(
    "conv",
    (Arg("c_out", "count"), Arg("kernel", "pair"), Arg("stride", "pair", 1),
     Arg("padding", "pair0", derived=True), Arg("dilation", "pair", 1), Arg("groups", "count", 1),
     Arg("bias", "bool", False)),
    infer=_conv_infer, torch=_conv_torch, params=_conv_params, macs=_conv_macs,
    fvcore=_conv_macs, check=_conv_check, complete=_conv_complete, resets=UNIT_STRIDE,
    fresh=True, example="conv(64, 3)",
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
    "bn", (Arg("eps", "float", 1e-5), Arg("momentum", "prob", 0.1)),  # momentum: training only
    infer=_same, torch=_bn_torch, fresh=True,
    params=lambda a, ins, out: 2 * ins[0][0],
    buffers=lambda a, ins, out: 2 * ins[0][0] + 1,  # running mean and var, num_batches_tracked
    fvcore=lambda a, ins, out: 2 * numel(ins[0]),  # eval-mode batch_norm with affine: 2 per element
)


def _activation(act: Activation) -> Op:
    """An op for each activation of the vocabulary."""
    source = TorchModule(f"nn.{act.module}()")
    inplace = f"nn.{act.module}(inplace=True)" if act.inplace_module else None
    return Op(act.name, (), infer=_same, torch=lambda a, ins, out: source, inplace=inplace)


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
MAXPOOL = Op("maxpool", _POOL_ARGS, infer=_pool_infer, torch=_pool_torch("MaxPool2d"),
             complete=_pool_complete, resets=UNIT_STRIDE, example="maxpool(3, 2)")
AVGPOOL = Op("avgpool", (*_POOL_ARGS, Arg("count_pad", "bool", True)),
             infer=_pool_infer, torch=_pool_torch("AvgPool2d"), complete=_pool_complete,
             resets=UNIT_STRIDE, example="avgpool(3, 2)")


def _global(a: Attrs, ins: Shapes) -> Shape:
    return (_spatial("global pooling", ins[0])[0], 1, 1)


GLOBAL_AVGPOOL = Op(
    "global_avgpool", (), infer=_global,
    torch=lambda a, ins, out: TorchModule("nn.AdaptiveAvgPool2d(1)"),
    fvcore=lambda a, ins, out: numel(ins[0]),  # adaptive_avg_pool2d: one per input element
)


def _adaptive_infer(a: Attrs, ins: Shapes) -> Shape:
    c = _spatial("adaptive_avgpool", ins[0])[0]
    return (c, *_pair(a["size"]))


# Average pooling to a fixed output size (VGG's 7x7 before its classifier, at any input size).
ADAPTIVE_AVGPOOL = Op(
    "adaptive_avgpool", (Arg("size", "pair"),), infer=_adaptive_infer,
    torch=lambda a, ins, out: TorchModule(f"nn.AdaptiveAvgPool2d({_src(a['size'])})"),
    fvcore=lambda a, ins, out: numel(ins[0]),  # adaptive_avg_pool2d: one per input element
)
GLOBAL_MAXPOOL = Op("global_maxpool", (), infer=_global,
                    torch=lambda a, ins, out: TorchModule("nn.AdaptiveMaxPool2d(1)"))


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
)
DROPOUT = Op("dropout", (Arg("p", "prob", 0.5),), infer=_same,
             torch=lambda a, ins, out: TorchModule(f"nn.Dropout({a['p']!r})"))


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
               example="drop_path(0.2)")
FLATTEN = Op("flatten", (), infer=lambda a, ins: (numel(ins[0]),),
             torch=lambda a, ins, out: TorchExpr("torch.flatten({0}, 1)"))


def _shuffle_check(a: Attrs, ins: Shapes) -> None:
    c = _spatial("channel_shuffle", ins[0])[0]
    if c % _int(a, "groups"):
        raise fail(f"channel_shuffle groups = {a['groups']} does not divide {c} channels")


CHANNEL_SHUFFLE = Op("channel_shuffle", (Arg("groups", "count"),), infer=_same,
                     check=_shuffle_check, example="channel_shuffle(4)",
                     torch=lambda a, ins, out: TorchModule(f"nn.ChannelShuffle({a['groups']})"))
SCALE = Op("scale", (Arg("factor", "float"),), infer=_same, fresh=True, example="scale(0.2)",
           torch=lambda a, ins, out: TorchExpr(f"{{0}} * {a['factor']!r}"))

# --- merges and the SE internals (not callable from a spec) ---------------------------------------


def _branches(a: Attrs, ins: Shapes) -> str:
    names = a.get("branches", ())
    assert isinstance(names, tuple)
    return ", ".join(f"{n} {_fmt(s)}" for n, s in zip(names, ins, strict=False))


def _add_infer(a: Attrs, ins: Shapes) -> Shape:
    if len(set(ins)) != 1:
        raise fail(f"cannot add tensors of different shapes: {_branches(a, ins)}",
                   "a projection shortcut (conv + bn) can match the channels and the stride")
    return ins[0]


def _concat_infer(a: Attrs, ins: Shapes) -> Shape:
    sizes = {s[1:] for s in ins}
    if len(sizes) != 1 or len(ins[0]) != 3:
        raise fail(f"cannot concatenate feature maps of different sizes: {_branches(a, ins)}",
                   "every branch must keep the same height and width (check strides, padding)")
    return (sum(s[0] for s in ins), *ins[0][1:])


ADD = Op("add", (), infer=_add_infer, arity=None, user=False, fresh=True, inplace="{0}.add_({1})",
         torch=lambda a, ins, out: TorchExpr(" + ".join(f"{{{i}}}" for i in range(len(ins)))))
CONCAT = Op("concat", (), infer=_concat_infer, arity=None, user=False, fresh=True,
            torch=lambda a, ins, out: TorchExpr(
                "torch.cat([" + ", ".join(f"{{{i}}}" for i in range(len(ins))) + "], 1)"))


def _elementwise(a: Attrs, ins: Shapes, out: Shape) -> int:
    """The paper's convention: one operation per element of the SE block's input."""
    return numel(ins[0])


# The SE squeeze, F_sq: a global average (or max) over H x W, as timm computes it. fvcore counts
# neither `mean` nor `amax`, so fvcore's totals on timm's SE models equal sedsl's.
SQUEEZE = Op(
    "squeeze", (), infer=_global, user=False, paper=_elementwise,
    torch=lambda a, ins, out: TorchExpr(
        "{0}." + SQUEEZES[str(a["mode"])].reduce + "((2, 3), keepdim=True)"),
)


def _mul_infer(a: Attrs, ins: Shapes) -> Shape:
    u, s = ins
    if s != (u[0], 1, 1):
        raise fail(f"cannot scale a {_fmt(u)} feature map by {_fmt(s)}")
    return u


MUL = Op("mul", (), infer=_mul_infer, arity=2, user=False, fresh=True, paper=_elementwise,
         torch=lambda a, ins, out: TorchExpr("{0} * {1}"))


def _se_infer(a: Attrs, ins: Shapes) -> Shape:
    if len(ins) == 2 and ins[0] != ins[1]:
        raise fail(f"cannot add tensors of different shapes: {_fmt(ins[0])}, {_fmt(ins[1])}")
    return ins[0]


def _bn_attrs(a: Attrs) -> dict[str, Attr]:
    """A fused SE node's folded BN as a `bn` node's attributes."""
    return {"eps": a["bn_eps"], "momentum": a["bn_momentum"]}


def _se_params(a: Attrs, ins: Shapes, out: Shape) -> int:
    c, rd = ins[0][0], _int(a, "rd_channels")
    folded = BN.params(_bn_attrs(a), ins, out) if "bn" in a else 0
    return 2 * c * rd + ((rd + c) if a["bias"] else 0) + folded


def _se_buffers(a: Attrs, ins: Shapes, out: Shape) -> int:
    return BN.buffers(_bn_attrs(a), ins, out) if "bn" in a else 0


def _se_torch(a: Attrs, ins: Shapes, out: Shape) -> Lowering:
    c = ins[0][0]
    return TorchModule(
        f"SqueezeExcite({c}, {a['rd_channels']}, bias={a['bias']}, squeeze={a['squeeze']!r}, "
        f"excite={a['excite']!r}, gate={a['gate']!r}, act={a['act']!r})"
    )


def _se_companions(a: Attrs, ins: Shapes) -> tuple[tuple[str, str, TorchModule], ...]:
    """The folded BN's module, built where the BN node stood (its state-dict keys)."""
    if "bn" not in a:
        return ()
    module = BN.torch(_bn_attrs(a), ins[:1], ins[0])
    assert isinstance(module, TorchModule)
    return (("bn", str(a["bn"]), module),)


# The fused SE block (see passes.fuse_se): [BN,] squeeze, excite, gate, scale [+ shortcut,
# activation]. Its counts are those of the plain-torch pieces it replaces, the BN's included.
def _se_macs(a: Attrs, ins: Shapes, out: Shape) -> int:
    return 2 * ins[0][0] * _int(a, "rd_channels")


def _se_fvcore(a: Attrs, ins: Shapes, out: Shape) -> int:
    folded = BN.fvcore(_bn_attrs(a), ins, out) if "bn" in a else 0
    return _se_macs(a, ins, out) + folded


SE = Op(
    "se", (), infer=_se_infer, arity=None, user=False, torch=_se_torch, params=_se_params,
    buffers=_se_buffers, macs=_se_macs, fvcore=_se_fvcore, companions=_se_companions,
    paper=lambda a, ins, out: _se_macs(a, ins, out) + 2 * numel(ins[0]),  # + squeeze, scale
)

# The network's input: a node with no inputs; the generated forward's argument.
INPUT = Op("input", (), infer=lambda a, ins: tuple(a["shape"]),  # type: ignore[arg-type]
           torch=lambda a, ins, out: TorchExpr("x"), arity=0, user=False)

OPS: dict[str, Op] = {
    op.name: op
    for op in (
        CONV, BN, *map(_activation, ACTIVATIONS.values()), MAXPOOL, AVGPOOL,
        GLOBAL_AVGPOOL, ADAPTIVE_AVGPOOL, GLOBAL_MAXPOOL, LINEAR, DROPOUT, DROP_PATH, FLATTEN,
        CHANNEL_SHUFFLE, SCALE,
        ADD, CONCAT, SQUEEZE, MUL, SE, INPUT,
    )
}

