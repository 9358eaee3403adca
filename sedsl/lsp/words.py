"""What the editor says about the language's own words: the SE settings and points (as
docs/language.md's tables say them), the built-in functions and the keywords. The settings'
meanings and values come from `sedsl.ir.se.SETTING_DOCS` and `SYMBOLS`, the ops from
`sedsl.ir.ops.OPS`."""

from __future__ import annotations

from sedsl.ir.se import ALIASES, SETTING_DOCS, SYMBOLS, SeSettings

SETTINGS: dict[str, tuple[str, str]] = SETTING_DOCS  # name -> (meaning, values)

POINTS: dict[str, str] = {
    "residual.end": "on the residual branch, before the add (the paper's SE-ResNet)",
    "residual.start": "on the residual branch, before its first layer (SE-PRE)",
    "block.end": "after the block, i.e. after the add and activation (SE-POST)",
    "shortcut.end": "on the shortcut, before the add (SE-Identity)",
    "block.start": "on the block's input, before it forks",
}

BUILTINS: dict[str, str] = {
    "floor": "floor(x): the largest whole number <= x",
    "ceil": "ceil(x): the smallest whole number >= x",
    "round": "round(x): the nearest whole number (halves up)",
    "min": "min(a, b, ...)",
    "max": "max(a, b, ...)",
    "abs": "abs(x)",
    "make_divisible": "make_divisible(x, d, round_limit = 0.9): the nearest multiple of d, at "
                      "least d, one multiple more if that falls below round_limit * x (timm's)",
}

KEYWORDS = ("use", "block", "network", "se", "input", "from", "residual", "shortcut", "parallel",
            "if", "then", "else", "true", "false", "and", "or", "not", "identity")
LAYER_BUILTINS = {"c_in": "the channels of the block's input",
                  "h_in": "the height of the block's input",
                  "w_in": "the width of the block's input"}


def default(setting: str) -> str:
    value = getattr(SeSettings(), setting)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def values(setting: str) -> list[str]:
    """The symbolic values a setting takes (empty for numbers)."""
    if setting in ("bias", "enabled"):
        return ["true", "false"]
    return sorted(SYMBOLS.get(setting, ()))


def point(name: str) -> str | None:
    """What a point of `at` means; aliases say what they stand for."""
    if name in ALIASES:
        return f"`{name}` = `{ALIASES[name]}`: {POINTS[ALIASES[name]]}"
    if name in POINTS:
        alias = next((k for k, v in ALIASES.items() if v == name), None)
        return POINTS[name] + (f" (alias `{alias}`)" if alias else "")
    branch, _, end = name.rpartition(".")
    if end in ("start", "end") and branch:
        return f"the {end} of the parallel branch `{branch}`"
    return None
