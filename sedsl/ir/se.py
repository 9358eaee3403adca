"""SE blocks as data: settings (what an SE block is), variants (its steps) and rules (where
SE blocks go). compile/se_rules.py evaluates a spec's `se { }` section into these records.

Precedence, lowest first: the defaults below, the section's own settings, overrides from the
caller (`--set ratio=8`), then each rule's `{ ... }` settings for the blocks it matches."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from fractions import Fraction

from sedsl.errors import Span
from sedsl.ir.vocab import ACTIVATIONS, GATES, SQUEEZES
from sedsl.record import Record

# --- what an SE block is: its steps ---------------------------------------------------------------


class Step(Record):
    """One node of an SE block, applied to the previous step's output.

    `kind`: squeeze (the setting `squeeze`), fc (a 1x1 conv to `width`: "rd" the reduced width,
    "c" the block's channels), excite / gate (the activation the setting names), bn, or scale
    (the block's input times the previous step: the output)."""

    name: str  # local name: <block>.se.<name>
    kind: str
    width: str | None = None


class Variant(Record):
    """A kind of SE block: its steps and whether the fused kernels implement it."""

    name: str
    steps: tuple[Step, ...]
    doc: str
    kernel: bool = False  # the fused op computes exactly these steps


_SQUEEZE, _SCALE = Step("squeeze", "squeeze"), Step("scale", "scale")
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("se", (_SQUEEZE, Step("fc1", "fc", "rd"), Step("act", "excite"),
                   Step("fc2", "fc", "c"), Step("gate", "gate"), _SCALE),
            "the paper's block: squeeze, FC to C/r, excite, FC back to C, gate, scale",
            kernel=True),
    Variant("se_bn", (_SQUEEZE, Step("fc1", "fc", "rd"), Step("bn", "bn"), Step("act", "excite"),
                      Step("fc2", "fc", "c"), Step("gate", "gate"), _SCALE),
            "batch norm after the first FC (as some SE-ResNet variants and SKNet do)"),
    Variant("ese", (_SQUEEZE, Step("fc", "fc", "c"), Step("gate", "gate"), _SCALE),
            "effective SE (CenterMask / VoVNetV2): one FC from C to C, no reduction"),
)}


# --- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeSettings:
    ratio: int | float = 16  # reduced width = round(C / ratio)
    width: int | None = None  # an explicit reduced width instead of the ratio
    round: str | int = "floor"  # floor | ceil | a divisor d (the nearest multiple of d, >= d)
    round_limit: float = 0.0  # with a divisor: go up a multiple when below round_limit * C/r
    base: str = "channels"  # what C is: the SE's own channels, or the block's input (block_in)
    variant: str = "se"  # the steps of the block (VARIANTS)
    squeeze: str = "avg"  # avg | max
    excite: str = "relu"  # activation between the two FC layers
    gate: str = "sigmoid"  # sigmoid | hardsigmoid | tanh | relu
    bias: bool = True  # FC layers with bias
    enabled: bool = True  # false: no SE block (the base network)

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


def make_divisible(x: Fraction, d: Fraction | int, round_limit: Fraction) -> Fraction:
    """timm's make_divisible(x, d, round_limit): the nearest multiple of d, at least d, one
    multiple up when that falls below round_limit * x (torchvision's rule: round_limit 0.9; timm's
    SE modules pass 0)."""
    if d <= 0:
        raise ValueError("the divisor must be > 0")
    rounded = max(Fraction(d), Fraction(math.floor(x + Fraction(d) / 2) // d) * d)
    return rounded + d if rounded < round_limit * x else rounded


SYMBOLS: dict[str, frozenset[str]] = {
    "round": frozenset({"floor", "ceil"}),
    "base": frozenset({"channels", "block_in"}),
    "variant": frozenset(VARIANTS),
    "squeeze": frozenset(SQUEEZES),
    "excite": frozenset(ACTIVATIONS),
    "gate": frozenset(GATES),
}
SETTINGS = tuple(f.name for f in fields(SeSettings))

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


