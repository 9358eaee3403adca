"""The se section as data: settings (what an SE block is) and rules (where SE blocks go).

Precedence, lowest first: the defaults below, the section's own settings, overrides from the
caller (`--set ratio=8`), then each rule's `{ ... }` settings for the blocks it matches."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from sedsl import ast
from sedsl.errors import NOWHERE, Span, SpecError, did_you_mean
from sedsl.ops import ACTIVATIONS

if TYPE_CHECKING:
    from sedsl.elaborate import Elaborator, Env, Value


@dataclass(frozen=True)
class SeSettings:
    ratio: int | float = 16  # reduced width = round(C / ratio)
    width: int | None = None  # an explicit reduced width instead of the ratio
    round: str | int = "floor"  # floor | ceil | a divisor d (timm: nearest multiple of d, >= d)
    base: str = "channels"  # what C is: the SE's own channels, or the block's input (block_in)
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
        d = int(self.round)  # timm's make_divisible(v, d, round_limit=0)
        return max(d, math.floor(v + Fraction(d, 2)) // d * d)


SYMBOLS: dict[str, frozenset[str]] = {
    "round": frozenset({"floor", "ceil"}),
    "base": frozenset({"channels", "block_in"}),
    "squeeze": frozenset({"avg", "max"}),
    "excite": frozenset(ACTIVATIONS),
    "gate": frozenset({"sigmoid", "hardsigmoid", "tanh", "relu"}),
}
SETTINGS = tuple(f.name for f in fields(SeSettings))

# Positions with a name from the SE papers.
ALIASES = {"standard": "residual.end", "pre": "residual.start", "post": "block.end",
           "identity": "shortcut.end"}


@dataclass(frozen=True)
class SeRule:
    where: str  # "at": a point of each matched block; "after": a named layer of it
    target: str  # "residual.end", "block.start", "b2.end", ... or a layer name like "relu2"
    ranges: tuple[tuple[str, str | None, Span], ...]  # (first, last, span); empty: everywhere
    kinds: tuple[str, ...]  # block definitions the rule is limited to; empty: any
    settings: SeSettings
    span: Span


@dataclass(frozen=True)
class SeConfig:
    settings: SeSettings
    rules: tuple[SeRule, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "rules": [
                {"where": r.where, "target": r.target,
                 "ranges": [[a, b, s.to_json()] for a, b, s in r.ranges],
                 "kinds": list(r.kinds), "settings": asdict(r.settings), "span": r.span.to_json()}
                for r in self.rules
            ],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SeConfig:
        rules = tuple(
            SeRule(r["where"], r["target"],
                   tuple((a, b, Span.from_json(s)) for a, b, s in r["ranges"]),
                   tuple(r["kinds"]), SeSettings(**r["settings"]), Span.from_json(r["span"]))
            for r in doc["rules"]
        )
        return cls(SeSettings(**doc["settings"]), rules)


def evaluate_se(sections: tuple[ast.SeSection, ...], el: Elaborator, env: Env,
                overrides: Mapping[str, Value]) -> SeConfig:
    """Evaluate the se section in the network's parameter scope."""
    if len(sections) > 1:
        raise SpecError("a spec has one se section", sections[1].span)
    values: dict[str, Any] = {}
    for s in sections[0].settings if sections else ():
        values[s.name] = _setting(s, el, env)
    for name, value in overrides.items():
        if name not in SETTINGS:
            raise SpecError(f"unknown parameter `{name}`", NOWHERE,
                            did_you_mean(name, SETTINGS)
                            or "only network parameters and SE settings can be set")
        values[name] = _check(name, value, NOWHERE)
    settings = SeSettings(**values)
    rules = tuple(_rule(r, settings, el, env) for r in (sections[0].rules if sections else ()))
    return SeConfig(settings, rules)


def _rule(rule: ast.Rule, settings: SeSettings, el: Elaborator, env: Env) -> SeRule:
    own = {s.name: _setting(s, el, env) for s in rule.settings}
    target = ALIASES.get(rule.target, rule.target) if rule.where == "at" else rule.target
    if rule.where == "at" and not target.endswith((".start", ".end")):
        raise SpecError(f"`at {rule.target}` is not a point of a block", rule.span,
                        "points are BRANCH.start / BRANCH.end (residual, shortcut, block, or a "
                        "parallel branch), or standard / pre / post / identity; "
                        "use `after LAYER` for a layer")
    ranges = tuple((r.first, r.last, r.span) for r in rule.ranges)
    return SeRule(rule.where, target, ranges, rule.kinds, replace(settings, **own), rule.span)


def _setting(s: ast.Setting, el: Elaborator, env: Env) -> Any:
    if s.name not in SETTINGS:
        raise SpecError(f"unknown SE setting `{s.name}`", s.span,
                        did_you_mean(s.name, SETTINGS) or f"settings: {', '.join(SETTINGS)}")
    if isinstance(s.value, ast.Name) and s.name in SYMBOLS and env.lookup(s.value.id) is None:
        return _check(s.name, s.value.id, s.value.span)  # a bare word: avg, floor, sigmoid
    return _check(s.name, el.eval(s.value, env), s.value.span)


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
    if isinstance(value, Fraction) and not isinstance(value, bool) and value > 0:
        whole = value.denominator == 1
        if name == "ratio":
            return int(value) if whole else float(value)
        if name in ("width", "round") and whole:
            return int(value)
    expected = {"ratio": "a number > 0", "width": "a whole number >= 1",
                "round": "floor, ceil or a divisor like 8"}.get(
        name, ", ".join(sorted(SYMBOLS.get(name, ()))))
    raise SpecError(f"`{name}` must be {expected}", span)
