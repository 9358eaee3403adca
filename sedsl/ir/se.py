"""SE blocks and the channel-attention family as data: step kinds (how a step becomes an IR
node), variants (a block's steps and its reference's defaults), settings (what one block is) and
rules (where blocks go). compile/se_rules.py evaluates a spec's `se { }` section into these
records; compile/passes.py inserts the blocks; cost, lowering and fusion read the nodes.

Precedence of settings, lowest first: the defaults of `SeSettings`, the variant's defaults (its
reference module's), the section's own settings, overrides from the caller (`--set ratio=8`),
then each rule's `{ ... }` settings for the blocks it matches."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

from sedsl.errors import Span
from sedsl.ir.ops import Attr, Shape, same_padding
from sedsl.ir.vocab import ACTIVATIONS, GATES, SQUEEZES
from sedsl.record import Record, replace

# --- settings -----------------------------------------------------------------------------------


class SeSettings(Record):
    """What one attention block is. `given` names the settings a spec or caller set: the others
    take the variant's defaults (`resolved`)."""

    ratio: int | float = 16  # reduced width = round(C / ratio)
    width: int | None = None  # an explicit reduced width instead of the ratio
    round: str | int = "floor"  # floor | ceil | a divisor d (the nearest multiple of d, >= d)
    round_limit: float = 0.0  # with a divisor: go up a multiple when below round_limit * C/r
    base: str = "channels"  # what C is: the SE's own channels, or the block's input (block_in)
    variant: str = "se"  # the steps of the block (VARIANTS)
    squeeze: str = "avg"  # the statistic over H x W (sedsl.ir.vocab.SQUEEZES)
    excite: str = "relu"  # activation inside the transform (between the two FC layers)
    gate: str = "sigmoid"  # the gate's activation
    bias: bool = True  # FC layers with bias
    kernel: int | str = "auto"  # ECA's 1-D channel conv: odd k, or auto (from C, gamma, beta)
    gamma: float = 2  # ECA's rule: t = int(|log2(C) + beta| / gamma), k = t or t + 1, odd, >= 3
    beta: float = 1
    spatial_kernel: int = 7  # CBAM's spatial gate: a k x k conv
    gather: str = "mean"  # Gather-Excite: mean (theta-minus) or conv (theta: depthwise, full map)
    mlp: bool = False  # Gather-Excite: an MLP after the gather (theta-plus)
    init: str = "default"  # identity: the block starts as x -> x (Variant.identity)
    enabled: bool = True  # false: no SE block (the base network)
    given: frozenset[str] = frozenset()

    def resolved(self) -> SeSettings:
        """The settings with the variant's defaults in place of those nobody set; every setting
        counts as given then, so resolving again changes nothing."""
        defaults = VARIANTS[self.variant].defaults
        return replace(self, **{k: v for k, v in defaults if k not in self.given},
                       given=frozenset(SETTINGS))

    def set(self, **values: Any) -> SeSettings:
        """These settings with `values` given explicitly."""
        return replace(self, **values, given=self.given | frozenset(values))

    def reduced(self, channels: int) -> int:
        """The reduced width for `channels` (already the block input for base = block_in)."""
        if self.width is not None:
            return self.width
        v = Fraction(channels) / Fraction(self.ratio)
        if self.round == "floor":
            return math.floor(v)
        if self.round == "ceil":
            return math.ceil(v)
        return int(make_divisible(v, int(self.round), Fraction(self.round_limit)))

    def eca_kernel(self, channels: int) -> int:
        """ECA's channel-conv size: the setting, or timm's EcaModule rule from C (in floats, as
        timm computes it, so that every C gives timm's k)."""
        if self.kernel != "auto":
            return int(self.kernel)
        t = int(abs(math.log(channels, 2) + float(self.beta)) / float(self.gamma))
        return max(t if t % 2 else t + 1, 3)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SETTINGS}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SeSettings:
        return cls(**{k: v for k, v in doc.items() if k in SETTINGS}, given=frozenset(SETTINGS))


def make_divisible(x: Fraction, d: Fraction | int, round_limit: Fraction) -> Fraction:
    """timm's make_divisible(x, d, round_limit): the nearest multiple of d, at least d, one
    multiple up when that falls below round_limit * x (torchvision's rule: round_limit 0.9; timm's
    SE modules pass 0)."""
    if d <= 0:
        raise ValueError("the divisor must be > 0")
    rounded = max(Fraction(d), Fraction(math.floor(x + Fraction(d) / 2) // d) * d)
    return rounded + d if rounded < round_limit * x else rounded


# --- step kinds: how a step becomes an IR node ----------------------------------------------------


class Block(Record):
    """What a step sees of the attention block it builds: the resolved settings, the tensor the
    block recalibrates (`x`, of `shape`), its reduced width, and the shapes built so far."""

    settings: SeSettings
    shape: Shape  # x's shape, (C, H, W)
    rd: int  # the reduced width, rounded
    shapes: Mapping[str, Shape]  # "x", "prev" and every step built so far, by step name

    @property
    def c(self) -> int:
        return self.shape[0]

    def width(self, spec: str | int | None) -> int:
        """A width a step names: "rd" (reduced), "c" (the block's channels) or a number."""
        return self.rd if spec == "rd" else self.c if spec in ("c", None) else int(spec)


class Step(Record):
    """One node of an attention block: a kind of STEP_KINDS applied to `inputs` ("x": the
    tensor the block recalibrates; "prev": the previous step's output; or an earlier step's
    name; none given: the kind's own, `("prev",)`, or `("x", "prev")` for scale and shift),
    with constants of its own in `args`. `when` keeps the step only where every named setting
    has the given value (Gather-Excite's optional parts)."""

    name: str  # local name: <block>.se.<name>
    kind: str
    width: str | int | None = None  # fc/conv steps: "rd", "c" or a number
    inputs: tuple[str, ...] = ()
    args: tuple[tuple[str, Any], ...] = ()
    when: tuple[tuple[str, Any], ...] = ()  # (setting, value) pairs that must all hold

    def arg(self, name: str, default: Any = None) -> Any:
        return dict(self.args).get(name, default)

    def kept(self, s: SeSettings) -> bool:
        return all(getattr(s, name) == value for name, value in self.when)

    def sources(self) -> tuple[str, ...]:
        """The step's inputs, its kind's own where it names none."""
        return self.inputs or STEP_KINDS[self.kind].inputs


Build = Callable[[Step, Block], tuple[str, dict[str, Attr]]]


class StepKind(Record):
    """A kind of step: the IR node it builds (op and attributes; the op table gives its shape,
    cost and lowering), and whether the fused kernels implement it. `fc_weights` marks the
    steps the paper's closed form (2/r)·ΣC² counts: 1x1 FC layers."""

    name: str
    build: Build
    doc: str
    kernel: bool = False
    fc_weights: bool = False
    inputs: tuple[str, ...] = ("prev",)  # a step's inputs where it names none
    # It acts on the squeezed vectors alone, O(N x C) work, as a module: the fused op's generic
    # transform (`steps`) runs it in torch between the statistic and the apply kernels.
    per_channel: bool = False


_FC: dict[str, Attr] = {"kernel": (1, 1), "stride": (1, 1), "padding": (0, 0),
                        "dilation": (1, 1), "groups": 1}


def _squeeze(step: Step, b: Block) -> tuple[str, dict[str, Attr]]:
    return "squeeze", {"mode": step.arg("mode", b.settings.squeeze)}


def _fc(step: Step, b: Block) -> tuple[str, dict[str, Attr]]:
    return "conv", {"c_out": b.width(step.width), **_FC, "bias": step.arg("bias", b.settings.bias)}


def _conv(step: Step, b: Block) -> tuple[str, dict[str, Attr]]:
    """A conv: CBAM's k x k spatial gate ("same" padding; k the setting `kernel` names, by
    default `spatial_kernel`), SRM's 1x2 per-channel FC (a fixed kernel, no padding), or
    Gather-Excite's depthwise gather over the whole feature map (kernel "full")."""
    src = b.shapes[step.sources()[0]]
    k = step.arg("kernel", "spatial_kernel")
    if k == "full" or isinstance(k, tuple):
        kernel, padding = ((src[1], src[2]) if k == "full" else k), (0, 0)
    else:
        n = int(getattr(b.settings, k))
        kernel, padding = (n, n), same_padding(n)
    groups = b.c if step.arg("groups") == "c" else 1
    return "conv", {"c_out": b.width(step.width), "kernel": kernel, "stride": (1, 1),
                    "padding": padding, "dilation": (1, 1), "groups": groups,
                    "bias": step.arg("bias", False)}


_ACTIVATION_KINDS = ("excite", "gate")  # step kinds that apply the setting of their name


def _activation(setting: str) -> Build:
    def build(step: Step, b: Block) -> tuple[str, dict[str, Attr]]:
        return str(step.arg("act", getattr(b.settings, setting))), {}
    return build


def _channel_conv(step: Step, b: Block) -> tuple[str, dict[str, Attr]]:
    """ECA's 1-D conv across channels: k taps (the `kernel` setting, or 1 for ECA-MLP's first
    conv), zero or circular padding, from `features` to `width` features per channel."""
    k = int(step.arg("k", 0)) or b.settings.eca_kernel(b.c)
    return "channel_conv", {"kernel": k, "c_in": b.width(step.arg("c_in", 1)),
                            "c_out": b.width(step.width or 1),
                            "padding": step.arg("padding", "zeros"),
                            "bias": bool(step.arg("bias", False))}


def _slice(step: Step, b: Block) -> tuple[str, dict[str, Attr]]:
    """CoordAttention's split of the H + W positions: bounds "h" and "hw" are x's."""
    _, h, w = b.shape
    bound = {"h": h, "hw": h + w}
    return "slice", {"axis": int(step.arg("axis", 1)),
                     "start": bound.get(step.arg("start"), step.arg("start", 0)),
                     "stop": bound.get(step.arg("stop"), step.arg("stop"))}


def _op(op: str, **attrs: Attr) -> Build:
    """A step that is one op with fixed attributes (step args override them)."""
    def build(step: Step, b: Block) -> tuple[str, dict[str, Attr]]:
        return op, {**attrs, **dict(step.args)}
    return build


STEP_KINDS: dict[str, StepKind] = {k.name: k for k in (
    StepKind("squeeze", _squeeze, "a statistic over H x W per channel (the `squeeze` setting, "
             "or the step's own mode): C x H x W -> C x 1 x 1", kernel=True),
    StepKind("fc", _fc, "a 1x1 conv to `width` (rd or c), bias as the `bias` setting",
             kernel=True, fc_weights=True, per_channel=True),
    StepKind("conv", _conv, "a k x k conv to `width`: CBAM's spatial gate, Gather-Excite's "
             "depthwise gather over the whole map"),
    *(StepKind(kind, _activation(kind), f"the `{kind}` activation", kernel=True,
               per_channel=True) for kind in _ACTIVATION_KINDS),
    StepKind("bn", _op("bn", eps=1e-5, momentum=0.1), "batch norm", per_channel=True),
    StepKind("layer_norm", _op("layer_norm", eps=1e-6), "layer norm over channels (timm's "
             "LayerNorm2d), GCNet's transform"),
    StepKind("channel_conv", _channel_conv, "ECA's 1-D conv across the channels of a C x 1 x 1 "
             "vector: k taps, zero or circular padding", kernel=True, per_channel=True),
    StepKind("attn_pool", _op("attn_pool"), "GCNet's context: x weighted by the softmax over "
             "H x W of a 1-channel map, summed: C x 1 x 1"),
    StepKind("reduce", _op("reduce", axis="c", mode="mean"), "a mean, max or sum over one axis "
             "(c, h or w), kept as size 1"),
    StepKind("concat", _op("concat", axis=0), "tensors joined along an axis (0 c, 1 h, 2 w)"),
    StepKind("transpose", _op("transpose"), "H and W swapped (CoordAttention)"),
    StepKind("slice", _slice, "a range along an axis (bounds may be h: x's height, hw: its "
             "height plus width)"),
    StepKind("style_fc", _op("style_fc"), "SRM's style integration: per channel, its two "
             "statistics weighted and summed", per_channel=True),
    StepKind("norm", _op("gct_norm", eps=1e-5), "GCT's channel normalisation: alpha-scaled "
             "embedding, normalised by its mean square over channels, gamma and beta",
             kernel=True),
    StepKind("energy", _op("simam", e_lambda=1e-4), "SimAM's per-element energy"),
    StepKind("scale", _op("mul"), "the first input times the second (broadcast): the output",
             kernel=True, inputs=("x", "prev")),
    StepKind("shift", _op("shift"), "the first input plus the second (broadcast): GCNet's add "
             "fusion", inputs=("x", "prev")),
    StepKind("add", _op("add"), "the sum of two same-shaped tensors (scSE's two branches)"),
)}

# --- variants: the attention family ---------------------------------------------------------------


class IdentityInit(Record):
    """How a variant starts as the identity (`init = identity`), so that blocks inserted into a
    pretrained network leave its outputs unchanged until training moves them: the steps whose
    node starts at a fixed value (`init`, an attribute of the node that its op's lowering
    applies after constructing the module: "zero" sets a conv's weight and bias to 0, "open"
    GCT's gamma and beta), and the settings under which that makes the block exactly x -> x."""

    marks: tuple[tuple[str, str], ...]  # (step name, init)
    needs: tuple[tuple[str, Any], ...]  # (setting, value) the identity holds under
    how: str  # why the block is then x -> x (docs)


class Variant(Record):
    """A kind of attention block: its steps, its reference, and the reference's defaults for
    the settings a spec does not set. `identity`: how it can start as the identity (None: its
    gate cannot be exactly 1 with a gradient, and `init = identity` is refused)."""

    name: str
    steps: tuple[Step, ...]
    doc: str
    reference: str = ""
    defaults: tuple[tuple[str, Any], ...] = ()
    # The transform of a dedicated fused op (sedsl.ir.ops.TRANSFORMS) with which it computes
    # exactly these steps, [BN,] squeeze, transform, gate, scale [+ add [+ activation]]. The
    # fusion pass (compile/passes.fused_transform) uses it only where the steps its settings
    # keep are the transform's (`Transform.steps`: ge's parameter-free form, not its conv
    # gather or MLP); otherwise (and for None) the step kinds decide whether the generic
    # transform ("steps") computes the block: a statistic, a chain of per_channel steps ending
    # in the gate, the scale; else it runs as plain ops.
    fused: str | None = None
    identity: IdentityInit | None = None

    def steps_for(self, s: SeSettings) -> tuple[Step, ...]:
        """The steps these settings keep (see Step.when)."""
        return tuple(step for step in self.steps if step.kept(s))


_SQUEEZE, _SCALE = Step("squeeze", "squeeze"), Step("scale", "scale")
_MLP = (Step("fc1", "fc", "rd"), Step("act", "excite"), Step("fc2", "fc", "c"))
_ECA = (_SQUEEZE, Step("conv", "channel_conv"), Step("gate", "gate"), _SCALE)
_TIMM = (("round", 1), ("bias", True))  # timm: make_divisible(C / r, 1, 0): the nearest integer


def _gc(fuse: Step) -> tuple[Step, ...]:
    """GCNet: attention pooling, then an MLP with layer norm, fused by scale or by add."""
    return (Step("attn", "fc", 1, inputs=("x",), args=(("bias", True),)),
            Step("context", "attn_pool", inputs=("x", "attn")),
            Step("fc1", "fc", "rd"), Step("norm", "layer_norm"), Step("act", "excite"),
            Step("fc2", "fc", "c"), *((Step("gate", "gate"),) if fuse.kind == "scale" else ()),
            fuse)


def _cbam(light: bool) -> tuple[Step, ...]:
    """CBAM: a channel gate from mean and max (one MLP for both: a 1x1 conv over the 1x2 map of
    the two statistics, then their sum), then a spatial gate from the mean and max over C."""
    if light:  # LightCbam: the MLP on 0.5 mean + 0.5 max; the spatial gate on 0.5 mean + 0.5 max
        channel: tuple[Step, ...] = (
            Step("squeeze", "squeeze", inputs=("x",), args=(("mode", "avgmax"),)), *_MLP)
        spatial: tuple[Step, ...] = (Step("pool", "reduce", inputs=("channel",),
                                          args=(("axis", "c"), ("mode", "avgmax"))),)
    else:
        channel = (Step("avg", "squeeze", inputs=("x",), args=(("mode", "avg"),)),
                   Step("max", "squeeze", inputs=("x",), args=(("mode", "max"),)),
                   Step("stats", "concat", inputs=("avg", "max"), args=(("axis", 2),)), *_MLP,
                   Step("sum", "reduce", args=(("axis", "w"), ("mode", "sum"))))
        spatial = (Step("mean", "reduce", inputs=("channel",), args=(("axis", "c"),)),
                   Step("peak", "reduce", inputs=("channel",),
                        args=(("axis", "c"), ("mode", "max"))),
                   Step("pool", "concat", inputs=("mean", "peak")))
    return (*channel, Step("channel_gate", "gate"),
            Step("channel", "scale", inputs=("x", "channel_gate")), *spatial,
            Step("spatial", "conv", 1), Step("bn", "bn"), Step("gate", "gate"),
            Step("scale", "scale", inputs=("channel", "gate")))


_COORD = (
    Step("pool_h", "reduce", inputs=("x",), args=(("axis", "w"),)),  # C x H x 1
    Step("pool_w", "reduce", inputs=("x",), args=(("axis", "h"),)),  # C x 1 x W
    Step("pool_wt", "transpose"),  # C x W x 1
    Step("pool", "concat", inputs=("pool_h", "pool_wt"), args=(("axis", 1),)),  # C x (H+W) x 1
    Step("fc1", "fc", "rd"), Step("bn", "bn"), Step("act", "excite"),
    Step("y_h", "slice", inputs=("act",), args=(("axis", 1), ("start", 0), ("stop", "h"))),
    Step("y_wt", "slice", inputs=("act",), args=(("axis", 1), ("start", "h"), ("stop", "hw"))),
    Step("y_w", "transpose"),  # rd x 1 x W
    Step("conv_h", "fc", "c", inputs=("y_h",)), Step("gate_h", "gate"),
    Step("conv_w", "fc", "c", inputs=("y_w",)), Step("gate_w", "gate"),
    Step("scale_w", "scale", inputs=("x", "gate_w")),
    Step("scale", "scale", inputs=("scale_w", "gate_h")),
)

_CONV_GATHER = (("gather", "conv"),)
# Gather-Excite at global extent. theta-minus (gather = mean): the mean, no parameters. theta
# (gather = conv): a depthwise conv whose kernel is the whole map, no bias, then BN (the
# authors' RN50-GEP.prototxt). theta-plus (mlp = true): after the conv gather and its BN the
# `excite` activation (ReLU), then SE's MLP with biases (RN50-GEPP.prototxt: gather/bn,
# gather/relu, excite/1x1_down, relu, excite/1x1_up); after the mean, the MLP directly (timm's
# GatherExcite: mean, ConvMlp).
_GE = (
    Step("squeeze", "squeeze", when=(("gather", "mean"),)),
    Step("gather", "conv", "c", args=(("kernel", "full"), ("groups", "c")), when=_CONV_GATHER),
    Step("gather_bn", "bn", when=_CONV_GATHER),
    Step("gather_act", "excite", when=(*_CONV_GATHER, ("mlp", True))),
    *(Step(s.name, s.kind, s.width, when=(("mlp", True),)) for s in _MLP),
    Step("gate", "gate"), _SCALE,
)

VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("se", (_SQUEEZE, *_MLP, Step("gate", "gate"), _SCALE),
            "the paper's block: squeeze, FC to C/r, excite, FC back to C, gate, scale",
            "timm SEModule; the SE authors' Caffe release", fused="mlp"),
    Variant("se_bn", (_SQUEEZE, Step("fc1", "fc", "rd"), Step("bn", "bn"), Step("act", "excite"),
                      Step("fc2", "fc", "c"), Step("gate", "gate"), _SCALE),
            "batch norm after the first FC (as some SE-ResNet variants and SKNet do)"),
    Variant("ese", (_SQUEEZE, Step("fc", "fc", "c"), Step("gate", "gate"), _SCALE),
            "effective SE (CenterMask / VoVNetV2): one FC from C to C, a hard-sigmoid gate",
            "timm EffectiveSEModule", (("gate", "hardsigmoid"),)),
    Variant("eca", _ECA, "ECA-Net: a 1-D conv of k taps across the squeezed channels, no "
            "reduction", "timm EcaModule", (("bias", False),), fused="channel_conv"),
    Variant("ceca", (_SQUEEZE, Step("conv", "channel_conv", args=(("padding", "circular"),)),
                     Step("gate", "gate"), _SCALE),
            "ECA with circular padding across channels", "timm CecaModule", (("bias", False),),
            fused="channel_conv"),
    Variant("ecam", (_SQUEEZE,
                     Step("conv1", "channel_conv", "rd", args=(("k", 1), ("bias", True))),
                     Step("act", "excite"),
                     Step("conv2", "channel_conv", 1, args=(("c_in", "rd"), ("bias", True))),
                     Step("gate", "gate"), _SCALE),
            "ECA with an MLP: 1 -> rd features per channel, then k taps back to one",
            "timm EcaModule(use_mlp=True)", (("ratio", 8), ("round", 8))),
    Variant("ge", _GE,
            "Gather-Excite at global extent: gather = mean (theta-minus, no parameters) or a "
            "depthwise conv over the whole map with BN (theta); mlp = true adds an MLP "
            "(theta-plus: after the conv gather, BN and ReLU as the authors' release has it)",
            "Hu et al. 2018, Gather-Excite: the authors' Caffe release (hujie-frank/GENet, "
            "RN50-GEP / RN50-GEPP.prototxt); timm GatherExcite for gather = mean",
            (*_TIMM,), fused="identity"),
    Variant("gc", _gc(_SCALE), "GCNet: softmax attention pooling, an MLP with layer norm, "
            "x * sigmoid(t)", "timm GlobalContext", (("ratio", 8), *_TIMM)),
    Variant("gca", _gc(Step("shift", "shift")),
            "GCNet with add fusion: x + t", "timm GlobalContext(fuse_add=True, "
            "fuse_scale=False)", (("ratio", 8), *_TIMM),
            identity=IdentityInit((("fc2", "zero"),), (),
                                  "fc2's weight and bias 0: t = 0, x + t = x")),
    Variant("cbam", _cbam(light=False), "CBAM: a channel gate (shared MLP on mean and max), "
            "then a spatial gate (k x k conv and BN on the mean and max over channels)",
            "timm CbamModule", (*_TIMM, ("bias", False))),
    Variant("lcbam", _cbam(light=True), "light CBAM: the MLP on (mean + max) / 2, the spatial "
            "conv on (mean + max) / 2 over channels", "timm LightCbamModule",
            (*_TIMM, ("bias", False))),
    Variant("coord", _COORD, "Coordinate attention: means along W and along H, a shared 1x1 "
            "conv with BN and hard-swish, a gate per direction",
            "timm CoordAttn", (("ratio", 24), ("round", 8), ("bias", False),
                               ("excite", "hardswish"))),
    Variant("srm", (Step("mean", "squeeze", inputs=("x",), args=(("mode", "avg"),)),
                    Step("std", "squeeze", inputs=("x",), args=(("mode", "std"),)),
                    Step("style", "concat", inputs=("mean", "std"), args=(("axis", 2),)),
                    Step("cfc", "style_fc"),
                    Step("bn", "bn"), Step("gate", "gate"), _SCALE),
            "SRM: style pooling (mean and unbiased std), a per-channel 2-tap FC, BN, sigmoid",
            "official SRM code (hyunjaelee410/style-based-recalibration-module)"),
    Variant("gct", (Step("embed", "squeeze", args=(("mode", "l2"),)), Step("norm", "norm"),
                    Step("gate", "gate"), Step("scale", "scale", args=(("offset", 1.0),))),
            "GCT: the L2 embedding per channel, normalised across channels, x * (1 + tanh)",
            "official GCT code (z-x-yang/GCT)", (("gate", "tanh"),), fused="gct_norm",
            identity=IdentityInit((("norm", "open"),), (("gate", "tanh"),),
                                  "gamma and beta 0 (the release's own start): the gate is "
                                  "1 + tanh(0) = 1")),
    Variant("simam", (Step("energy", "energy", inputs=("x",)), Step("gate", "gate"),
                      _SCALE),
            "SimAM: a parameter-free per-element energy, x * sigmoid(energy)",
            "official SimAM code (ZjjConan/SimAM)"),
    Variant("scse", (_SQUEEZE, *_MLP, Step("gate", "gate"),
                     Step("cse", "scale"),
                     Step("sse_conv", "fc", 1, inputs=("x",), args=(("bias", True),)),
                     Step("sse_gate", "gate"), Step("sse", "scale"),
                     Step("sum", "add", inputs=("cse", "sse"))),
            "concurrent spatial and channel SE: x * cSE(x) + x * sSE(x)",
            "segmentation_models_pytorch SCSEModule", (("round", "floor"),),
            identity=IdentityInit((("fc2", "zero"), ("sse_conv", "zero")),
                                  (("gate", "sigmoid"),),
                                  "fc2 and sse_conv 0: both gates sigmoid(0) = 1/2, and "
                                  "x / 2 + x / 2 = x exactly")),
)}


def identity_problem(s: SeSettings) -> str | None:
    """Why `init = identity` cannot hold for these (resolved) settings, or None when it can."""
    if s.init != "identity":
        return None
    identity = VARIANTS[s.variant].identity
    able = ", ".join(n for n, v in VARIANTS.items() if v.identity is not None)
    if identity is None:
        return (f"`init = identity` needs a variant that can start as the identity ({able}); "
                f"`{s.variant}` cannot: " + _NOT_IDENTITY.get(s.variant, _GATED))
    for name, value in identity.needs:
        if getattr(s, name) != value:
            return (f"`init = identity` makes `{s.variant}` the identity only with "
                    f"{name} = {value}, not {getattr(s, name)}")
    return None


_GATED = ("its output is x times a gate (a sigmoid or hard sigmoid), which is 1 only where it "
          "saturates, and a saturated gate passes no gradient, so the block could never learn")
_NOT_IDENTITY = {
    "simam": "it has no parameters to start from: its gate depends on x alone",
    "srm": "its gate is sigmoid(BN(cfc . style)); with cfc = 0 it is sigmoid(BN's bias), which is "
           "1 only where the sigmoid saturates and passes no gradient",
}


def statistic(steps: tuple[Step, ...], s: SeSettings) -> tuple[str, int] | None:
    """The statistic the leading steps compute and how many steps that is: one squeeze of x
    (its mode), or SRM's mean and std joined along W by a concat ("avgstd", C x 1 x 2); None
    when the steps do not begin so."""
    modes = []
    for i, step in enumerate(steps):
        if step.kind != "squeeze" or step.sources() not in (("x",), ("prev",) if i == 0 else ()):
            break
        modes.append(str(step.arg("mode", s.squeeze)))
    if len(modes) == 1:
        return modes[0], 1
    names = tuple(step.name for step in steps[:2])
    if (modes == ["avg", "std"] and len(steps) > 2 and steps[2].kind == "concat"
            and steps[2].inputs == names and steps[2].arg("axis") == 2):
        return "avgstd", 3
    return None


def step_kind_supported(variant: Variant, s: SeSettings) -> bool:
    """Whether every step these settings keep is a kind the fused kernels implement."""
    return all(STEP_KINDS[step.kind].kernel for step in variant.steps_for(s))


def step_activations(variant: Variant, s: SeSettings) -> frozenset[str]:
    """The activations the steps these settings keep apply: an `excite` or `gate` step's own
    `act`, else the setting its kind is named after (see _activation)."""
    return frozenset(str(step.arg("act", getattr(s, step.kind))) for step in variant.steps_for(s)
                     if step.kind in _ACTIVATION_KINDS)


SYMBOLS: dict[str, frozenset[str]] = {
    "round": frozenset({"floor", "ceil"}),
    "base": frozenset({"channels", "block_in"}),
    "variant": frozenset(VARIANTS),
    "squeeze": frozenset(SQUEEZES),
    "excite": frozenset(ACTIVATIONS),
    "gate": frozenset(GATES),
    "kernel": frozenset({"auto"}),
    "gather": frozenset({"mean", "conv"}),
    "init": frozenset({"default", "identity"}),
}
SETTINGS = tuple(name for name in SeSettings._fields if name != "given")

# What each setting means and the values it takes, as docs/language.md and the editor say them.
SETTING_DOCS: dict[str, tuple[str, str]] = {
    "ratio": ("reduced width = round(C / ratio)", "a number > 0"),
    "width": ("an explicit reduced width (then `ratio` and `round` are unused)",
              "a whole number"),
    "round": ("floor(C/r) as in the authors' Caffe release, or `d`: make_divisible(C/r, d, "
              "round_limit)", "floor, ceil, or a divisor d"),
    "round_limit": ("with a divisor: one multiple more when the rounded width falls below "
                    "round_limit * C/r (0: timm's SE modules; 0.9: torchvision's)",
                    "a number in [0, 1)"),
    "base": ("C is the block's own channels, or the block's input channels (EfficientNet, "
             "RegNet)", "channels, block_in"),
    "variant": ("the block's steps: SE or a member of the attention family",
                ", ".join(sorted(SYMBOLS["variant"]))),
    "squeeze": ("the statistic over H x W", ", ".join(sorted(SYMBOLS["squeeze"]))),
    "excite": ("the activation inside the transform (between fc1 and fc2)", "any activation"),
    "gate": ("the gate's activation", ", ".join(sorted(SYMBOLS["gate"]))),
    "bias": ("biases in the 1x1 FC layers", "true, false"),
    "kernel": ("ECA's channel conv: k taps", "an odd number, or auto (timm's rule from C)"),
    "gamma": ("ECA's auto kernel: t = int(|log2 C + beta| / gamma)", "a number > 0"),
    "beta": ("ECA's auto kernel (see gamma)", "a number"),
    "spatial_kernel": ("CBAM's spatial gate: a k x k conv", "an odd number"),
    "gather": ("Gather-Excite's gather: the mean, or a depthwise conv over the whole map",
               "mean, conv"),
    "mlp": ("Gather-Excite: an MLP after the gather (theta-plus)", "true, false"),
    "init": ("identity: the block starts as the identity, where its variant can (gca, gct, "
             "scse), so inserting it into a trained network changes nothing at step 0",
             "default, identity"),
    "enabled": ("false inserts nothing: the base network", "true, false"),
}

# Positions with a name from the SE papers.
ALIASES = {"standard": "residual.end", "pre": "residual.start", "post": "block.end",
           "identity": "shortcut.end"}


class SeRule(Record):
    where: str  # "at": a point of each matched block; "after": a named layer of it
    target: str  # "residual.end", "block.start", "b2.end", ... or a layer name like "relu2"
    ranges: tuple[tuple[str, str | None, Span], ...]  # (first, last, span); empty: everywhere
    kinds: tuple[str, ...]  # block definitions the rule is limited to; empty: any
    settings: SeSettings
    span: Span


class SeConfig(Record):
    settings: SeSettings
    rules: tuple[SeRule, ...]
