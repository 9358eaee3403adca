"""The se section as data: settings (what an SE block is), variants (its steps) and rules (where
SE blocks go).

Precedence, lowest first: the defaults below, the section's own settings, overrides from the
caller (`--set ratio=8`), then each rule's `{ ... }` settings for the blocks it matches."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from fractions import Fraction
from typing import Any

from sedsl.errors import NOWHERE, Span, SpecError, did_you_mean
from sedsl.ir.vocab import ACTIVATIONS, GATES, SQUEEZES
from sedsl.language import ast
from sedsl.language.evaluate import Env, Evaluator, Value, make_divisible, parse_text
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


def evaluate_se(sections: tuple[ast.SeSection, ...], ev: Evaluator, env: Env,
                overrides: Mapping[str, Value]) -> SeConfig:
    """Evaluate the se section in the network's parameter scope."""
    if len(sections) > 1:
        raise SpecError("a spec has one se section", sections[1].span)
    values: dict[str, Any] = {}
    for s in sections[0].settings if sections else ():
        values[s.name] = _setting(s, ev, env)
    for name, value in overrides.items():
        if name not in SETTINGS:
            raise SpecError(f"unknown parameter `{name}`", NOWHERE,
                            did_you_mean(name, SETTINGS)
                            or "only network parameters and SE settings can be set")
        values[name] = _check(name, parse_text(value) if isinstance(value, str) else value,
                              NOWHERE)
    settings = SeSettings(**values)
    rules = tuple(_rule(r, settings, ev, env) for r in (sections[0].rules if sections else ()))
    return SeConfig(settings, rules)


def _rule(rule: ast.Rule, settings: SeSettings, ev: Evaluator, env: Env) -> SeRule:
    own = {s.name: _setting(s, ev, env) for s in rule.settings}
    target = ALIASES.get(rule.target, rule.target) if rule.where == "at" else rule.target
    if rule.where == "at" and not target.endswith((".start", ".end")):
        raise SpecError(f"`at {rule.target}` is not a point of a block", rule.span,
                        "points are BRANCH.start / BRANCH.end (residual, shortcut, block, or a "
                        "parallel branch), or standard / pre / post / identity; "
                        "use `after LAYER` for a layer")
    ranges = tuple((r.first, r.last, r.span) for r in rule.ranges)
    return SeRule(rule.where, target, ranges, rule.kinds, replace(settings, **own), rule.span)


def _setting(s: ast.Setting, ev: Evaluator, env: Env) -> Any:
    if s.name not in SETTINGS:
        raise SpecError(f"unknown SE setting `{s.name}`", s.span,
                        did_you_mean(s.name, SETTINGS) or f"settings: {', '.join(SETTINGS)}")
    if isinstance(s.value, ast.Name) and s.name in SYMBOLS and env.lookup(s.value.id) is None:
        return _check(s.name, s.value.id, s.value.span)  # a bare word: avg, floor, sigmoid
    return _check(s.name, ev.eval(s.value, env), s.value.span)


def _check(name: str, value: Value, span: Span) -> Any:
    """Validate one setting's value; return it as plain data."""
    if name in ("bias", "enabled"):
        if isinstance(value, bool):
            return value
        raise SpecError(f"`{name}` must be true or false", span)
    if name in SYMBOLS and isinstance(value, str):
        if value in SYMBOLS[name]:
            return value
        raise SpecError(f"`{name}` cannot be `{value}`", span,
                        f"choose from {', '.join(sorted(SYMBOLS[name]))}"
                        + (" or a divisor like 8" if name == "round" else ""))
    if isinstance(value, Fraction) and not isinstance(value, bool):
        whole = value.denominator == 1
        if name == "ratio" and value > 0:
            return int(value) if whole else float(value)
        if name in ("width", "round") and whole and value > 0:
            return int(value)
        if name == "round_limit" and 0 <= value < 1:
            return float(value)
    expected = {"ratio": "a number > 0", "width": "a whole number >= 1",
                "round": "floor, ceil or a divisor like 8",
                "round_limit": "a number in [0, 1), like 0.9"}.get(
        name, ", ".join(sorted(SYMBOLS.get(name, ()))))
    raise SpecError(f"`{name}` must be {expected}", span)
