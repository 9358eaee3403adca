"""The limits a spec must stay within, checked before the work they bound is done.

Each limit turns what would be a hang, a crash deep in Python or an exhausted machine into a
SpecError at the offending token. Those a real network could outgrow are configurable:
`SEDSL_LIMITS="nodes=5000000,repeat=100000"` in the environment, or in Python

    with sedsl.limits.raised(nodes=5_000_000):
        net = sedsl.load("big.se")

docs/language.md ("Limits") says what each one is and why.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields, replace
from fractions import Fraction
from pathlib import Path

from sedsl.errors import Span, SpecError


@dataclass(frozen=True)
class Limits:
    """The configurable limits (the names are those of SEDSL_LIMITS and `raised`)."""

    nodes: int = 1_000_000  # graph nodes (and layer placements) per network
    repeat: int = 10_000  # the count of one `* n`
    depth: int = 100  # nesting: of the syntax tree, and of blocks, groups and repeats placed
    uses: int = 32  # the depth of a chain of `use` imports
    spec_bytes: int = 4 * 1024 * 1024  # the size of one spec or library file


# Numbers are exact fractions; these keep their arithmetic cheap and their values meaningful
# (no real network has a width of 10^16, and 2^53 keeps every whole number exact as a float).
MAX_NUMBER = 10**15
MAX_DENOMINATOR = 10**15
MAX_DIGITS = 40  # significant digits of a literal
MAX_PATH = 1024  # characters of a `use` path

_ENV = "SEDSL_LIMITS"
_current: ContextVar[Limits | None] = ContextVar("sedsl_limits", default=None)


def current() -> Limits:
    """The limits in force: those of `raised`, else SEDSL_LIMITS, else the defaults."""
    limits = _current.get()
    return limits if limits is not None else from_environment(os.environ.get(_ENV, ""))


@contextmanager
def raised(**changes: int) -> Iterator[Limits]:
    """Run a block under other limits: `with raised(nodes=5_000_000): ...`."""
    names = {f.name for f in fields(Limits)}
    for name, value in changes.items():
        if name not in names:
            raise ValueError(f"no limit `{name}`; the limits are {', '.join(sorted(names))}")
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"limit `{name}` must be a whole number >= 1, got {value!r}")
    token = _current.set(replace(current(), **changes))
    try:
        yield _current.get() or Limits()
    finally:
        _current.reset(token)


def from_environment(text: str) -> Limits:
    """Limits from `nodes=5000000,repeat=100000` (SEDSL_LIMITS); the defaults for the rest."""
    limits = Limits()
    names = {f.name for f in fields(Limits)}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, eq, value = (s.strip() for s in item.partition("="))
        if not eq or name not in names or not value.isdigit() or len(value) > 18:
            raise SpecError(f"{_ENV}: cannot read `{item}`", None,
                            f"e.g. {_ENV}=nodes=5000000,repeat=100000; limits: "
                            f"{', '.join(sorted(names))}")
        limits = replace(limits, **{name: max(1, int(value))})
    return limits


def exceeded(what: str, limit: str, span: Span | None, hint: str | None = None) -> SpecError:
    """The error for a spec past one of the configurable limits, with how to raise it."""
    how = f"raise it with {_ENV}={limit}=N or sedsl.limits.raised({limit}=N)"
    return SpecError(f"{what} (the limit is {getattr(current(), limit):,})", span,
                     f"{hint}; or {how}" if hint else how)


# --- numbers ------------------------------------------------------------------------------------

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


# --- counts -------------------------------------------------------------------------------------


def repeat_count(count: int, span: Span) -> int:
    """The count of a `* n` repeat, refused above the limit before anything is placed."""
    if count > current().repeat:
        raise exceeded(f"a layer repeated {count:,} times", "repeat", span)
    return count


class Budget:
    """Counts the nodes (and empty placements) and the nesting of one elaboration."""

    def __init__(self) -> None:
        self.limits = current()
        self.steps = 0
        self.depth = 0

    def step(self, span: Span) -> None:
        """One more node or placement; refused past the node limit."""
        self.steps += 1
        if self.steps > self.limits.nodes:
            raise exceeded("the network has too many nodes", "nodes", span)

    def expect(self, more: int, span: Span) -> None:
        """Refuse up front work that is known to pass the node limit (the rest of a repeat)."""
        if self.steps + more > self.limits.nodes:
            raise exceeded(f"this repeat would give the network about {self.steps + more:,} "
                           "nodes", "nodes", span)

    @contextmanager
    def nested(self, span: Span) -> Iterator[None]:
        """One level deeper into blocks, groups or repeats being placed."""
        self.depth += 1
        try:
            if self.depth > self.limits.depth:
                raise exceeded("blocks, groups and repeats are nested too deeply", "depth", span)
            yield
        finally:
            self.depth -= 1


def use_depth(depth: int, span: Span) -> None:
    """A chain of `use` imports, refused past its limit (each level is a file read and parsed)."""
    if depth > current().uses:
        raise exceeded("`use` imports are chained too deeply", "uses", span)


# --- files --------------------------------------------------------------------------------------


def read_spec(path: Path, span: Span | None = None) -> str:
    """The text of a spec file: a regular file, at most `spec_bytes`, UTF-8 (a BOM is dropped).

    Devices, FIFOs and directories are refused before they are opened for reading, so that
    /dev/zero cannot fill memory and a FIFO cannot block forever."""
    shown = str(path)
    try:
        info = path.stat()
    except (OSError, ValueError) as err:
        raise SpecError(f"cannot read {shown}: {_reason(err)}", span) from None
    if stat.S_ISDIR(info.st_mode):
        raise SpecError(f"cannot read {shown}: it is a directory", span)
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(f"cannot read {shown}: not a regular file (a device, FIFO or socket)",
                        span)
    limit = current().spec_bytes
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise SpecError(f"cannot read {shown}: {_reason(err)}", span) from None
    if len(data) > limit:
        raise exceeded(f"{shown} is too large for a spec", "spec_bytes", span)
    return decode(data, shown, span)


def decode(data: bytes, shown: str, span: Span | None = None) -> str:
    """Spec bytes as text: UTF-8, with or without a BOM. (A NUL byte decodes, and the lexer
    then points at it: `unexpected character U+0000`.)"""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1  # in bytes
        where = Span(shown, line, col, line, col + 1)
        raise SpecError(f"cannot read {shown}: not UTF-8 text (byte 0x{data[err.start]:02x})",
                        where, "save the file as UTF-8") from None


def is_file(path: Path) -> bool:
    """Whether `path` is a regular file; False for a path the OS cannot even look up."""
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


# --- memory -------------------------------------------------------------------------------------


def check_parameter_memory(network: str, params: int, device: str | None, check: bool) -> None:
    """Refuse to build a module whose parameters and buffers (`params` elements) would not fit
    in the device's free memory (so that the allocator does not fail, or the machine swap,
    halfway through)."""
    import torch

    if params >= 2**62:  # past what a torch tensor can index, even on the meta device
        raise SpecError(f"{network} has {params:.3g} parameters: more than torch can hold", None)
    kind = torch.device(device).type if device is not None else "cpu"
    if not check or kind == "meta":
        return
    need = params * torch.get_default_dtype().itemsize
    free = free_memory(kind, device)
    if free is not None and need > free:
        raise SpecError(
            f"{network} needs about {_bytes(need)} for its {params:,} parameters and buffers, "
            f"more than the "
            f"{_bytes(free)} free on {kind}", None,
            "build it without memory with to_torch(device=\"meta\"), or try anyway with "
            "check_memory=False")


def free_memory(kind: str, device: str | None) -> int | None:
    """Free bytes on the device: MemAvailable for the CPU, the driver's figure for CUDA."""
    if kind == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    if kind != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _reason(err: Exception) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return "not a valid path"  # ValueError: a NUL byte in it
