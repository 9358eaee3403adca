"""Numbers as a spec writes them: literals and command-line values read as exact fractions,
refused before they are computed when too large or too precise (docs/language.md, "Limits")."""

from __future__ import annotations

import re
from fractions import Fraction

from sedsl.errors import Span, SpecError
from sedsl.limits import MAX_DENOMINATOR, MAX_DIGITS, MAX_NUMBER

_LITERAL = re.compile(r"([0-9]*)(?:\.([0-9]*))?(?:[eE]([-+]?[0-9]+))?")


def literal(text: str, span: Span | None) -> Fraction:
    """A number literal (`64`, `0.25`, `1e-5`) as an exact fraction, refused when too large or
    too precise *before* it is computed: `1e99999999` would take Python minutes to build."""
    match = _LITERAL.fullmatch(text.strip())
    if match is None or not (match[1] or match[2]):
        raise SpecError(f"`{text}` is not a number", span)
    whole, frac, exp_text = match[1], match[2] or "", match[3] or "0"
    digits = (whole + frac).lstrip("0")
    if not digits:
        return Fraction(0)
    exp_digits = exp_text.lstrip("+-").lstrip("0")  # int() of 5000 leading zeros would fail
    if len(exp_digits) > 4:  # |exponent| >= 10^4: far outside either bound
        exp = 10**5 if not exp_text.startswith("-") else -(10**5)
    else:
        exp = int(exp_digits or "0") * (-1 if exp_text.startswith("-") else 1)
    magnitude = len(digits) - len(frac) - 1 + exp  # the power of ten of its first digit
    if magnitude >= 15:
        raise SpecError(f"the number `{_short(text)}` is too large (numbers stay below 10^15)",
                        span)
    significant = digits.rstrip("0")
    if len(significant) > MAX_DIGITS or magnitude < -15:
        raise SpecError(f"the number `{_short(text)}` is too precise (at most {MAX_DIGITS} "
                        "digits, and no smaller than 10^-15)", span)
    # digits x 10^power, built from the significant digits only (never from the whole text)
    power = exp - len(frac) + (len(digits) - len(significant))
    if power >= 0:
        return Fraction(int(significant) * 10**power)
    return Fraction(int(significant), 10**-power)


_UNSIGNED = r"[0-9.]+(?:[eE][-+]?[0-9]+)?"
_COMMAND_LINE_NUMBER = re.compile(rf"[-+]?{_UNSIGNED}(?:/{_UNSIGNED})?")


def number_value(text: str, span: Span | None) -> Fraction | None:
    """A number given as text outside a spec (`--set ratio=8`, `-0.5`, `3/4`), checked as a
    literal is; None when the text is not a number."""
    text = text.strip()
    if not _COMMAND_LINE_NUMBER.fullmatch(text):
        return None
    sign = -1 if text.startswith("-") else 1
    top, _, bottom = text.lstrip("+-").partition("/")
    value = literal(top, span)
    if bottom:
        divisor = literal(bottom, span)
        if divisor == 0:
            raise SpecError("division by zero", span)
        value /= divisor
    return check_number(sign * value, span)


def python_number(value: int | float, span: Span | None) -> Fraction:
    """A Python int or float given as a spec value (floats by their shortest decimal repr)."""
    if isinstance(value, float):
        number = number_value(repr(value), span)
        if number is None:
            raise SpecError(f"{value!r} is not a number a spec can use", span)
        return number
    return check_number(Fraction(value), span)


def check_number(value: Fraction, span: Span | None) -> Fraction:
    """A computed number, refused when its size would make further arithmetic slow."""
    if abs(value) >= MAX_NUMBER:
        raise SpecError("this number is too large (numbers stay below 10^15)", span)
    if value.denominator > MAX_DENOMINATOR:
        raise SpecError("this number is too precise (a fraction with a denominator above "
                        "10^15)", span, "round it: floor(x), round(x), or // for whole division")
    return value


def dimension(text: str, span: Span | None) -> int:
    """One dimension of a shape literal such as `3x224x224`."""
    value = literal(text, span)
    assert value.denominator == 1
    return int(value)


def _short(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:10]}...{text[-10:]}"
