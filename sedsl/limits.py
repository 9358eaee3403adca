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
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sedsl.errors import Span, SpecError
from sedsl.record import Record, replace


class Limits(Record):
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
    names = set(Limits._fields)
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
    names = set(Limits._fields)
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
