"""The `se { }` section evaluated: its settings and rules as the records of sedsl.ir.se.

Precedence, lowest first: the defaults (sedsl.ir.se.SeSettings), the section's own settings,
overrides from the caller (`--set ratio=8`), then each rule's `{ ... }` settings for the blocks
it matches."""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from sedsl.errors import NOWHERE, Span, SpecError, did_you_mean
from sedsl.ir.se import (
    ALIASES,
    SETTINGS,
    SYMBOLS,
    SeConfig,
    SeRule,
    SeSettings,
    identity_problem,
)
from sedsl.language import ast
from sedsl.language.evaluate import Env, Evaluator, Value, parse_text


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
    settings = SeSettings().set(**values)
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
    mine = settings.set(**own)
    problem = identity_problem(mine.resolved())
    if problem is not None:
        raise SpecError(problem, rule.span, "variants that cannot start as the identity start "
                        "as their reference does (init = default)")
    return SeRule(rule.where, target, ranges, rule.kinds, mine, rule.span)


def _setting(s: ast.Setting, ev: Evaluator, env: Env) -> Any:
    if s.name not in SETTINGS:
        raise SpecError(f"unknown SE setting `{s.name}`", s.span,
                        did_you_mean(s.name, SETTINGS) or f"settings: {', '.join(SETTINGS)}")
    if isinstance(s.value, ast.Name) and s.name in SYMBOLS and env.lookup(s.value.id) is None:
        return _check(s.name, s.value.id, s.value.span)  # a bare word: avg, floor, sigmoid
    return _check(s.name, ev.eval(s.value, env), s.value.span)


def _check(name: str, value: Value, span: Span) -> Any:
    """Validate one setting's value; return it as plain data."""
    if name in ("bias", "enabled", "mlp"):
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
        if name in ("kernel", "spatial_kernel") and whole and value > 0 and value % 2 == 1:
            return int(value)
        if name in ("gamma", "beta") and (value > 0 or name == "beta"):
            return int(value) if whole else float(value)
    expected = {"ratio": "a number > 0", "width": "a whole number >= 1",
                "round": "floor, ceil or a divisor like 8",
                "round_limit": "a number in [0, 1), like 0.9",
                "kernel": "an odd whole number, like 3, or auto (ECA's rule from the channels)",
                "spatial_kernel": "an odd whole number, like 7",
                "gamma": "a number > 0", "beta": "a number"}.get(
        name, ", ".join(sorted(SYMBOLS.get(name, ()))))
    raise SpecError(f"`{name}` must be {expected}", span)


SE_FILE = "<se>"  # the name errors give an `se { }` section passed as text (sedsl.from_torch)


def se_section(text: str) -> str:
    """`se { ... }` as a spec writes it, from a section or its body (`;` ends a statement)."""
    body = text.strip()
    if not body.startswith("se"):
        body = "se {\n" + body + "\n}"
    return re.sub(r";[ \t]*", "\n", body) + "\n"


def parse_se(section: str) -> SeConfig:
    """The text of an `se { ... }` section (named SE_FILE in errors) as an SeConfig."""
    from sedsl.language.evaluate import Env, Evaluator
    from sedsl.language.library import Library
    from sedsl.language.parse import parse

    module = parse(section, SE_FILE)
    return evaluate_se(module.se, Evaluator(Library({})), Env({}), {})
