"""What the editor says about the language's own words: the SE settings and points (as
docs/language.md's tables say them), the built-in functions and the keywords. The values each
setting takes come from `sedsl.ir.se.SYMBOLS`, the ops from `sedsl.ir.ops.OPS`;
tests/test_lsp.py checks that every setting has its line here."""

from __future__ import annotations

from sedsl.ir.se import ALIASES, SYMBOLS, SeSettings

SETTINGS: dict[str, tuple[str, str]] = {  # name -> (meaning, values)
    "ratio": ("reduced width = round(C / ratio)", "a number > 0"),
    "width": ("an explicit reduced width (then `ratio` and `round` are unused)",
              "a whole number"),
    "round": ("floor(C/r) as in the authors' Caffe release, or `d`: make_divisible(C/r, d, "
              "round_limit)", "floor, ceil, or a divisor d"),
    "round_limit": ("with a divisor: one multiple more when the rounded width falls below "
                    "round_limit * C/r (0: timm's SE modules; 0.9: torchvision's)",
                    "a number in [0, 1)"),
    "variant": ("the block's steps", "se, se_bn, ese"),
    "base": ("C is the SE's own channels, or the block's input channels (EfficientNet, RegNet)",
             "channels, block_in"),
    "squeeze": ("the global pooling", "avg, max"),
    "excite": ("the activation between fc1 and fc2", "any activation"),
    "gate": ("the gate", "sigmoid, hardsigmoid, tanh, relu"),
    "bias": ("biases in fc1 and fc2", "true, false"),
    "enabled": ("false inserts nothing: the base network", "true, false"),
}

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

KEYWORDS = ("use", "block", "network", "se", "input", "residual", "shortcut", "parallel",
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
