"""The syntax tree of a spec: frozen dataclasses, one per grammar rule, each with its span."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TypeAlias

from sedsl.errors import Span

# --- expressions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    value: Fraction
    span: Span


@dataclass(frozen=True)
class ShapeLit:
    """`3x224x224` or `1x7`."""

    dims: tuple[int, ...]
    span: Span


@dataclass(frozen=True)
class String:
    value: str
    span: Span


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span


@dataclass(frozen=True)
class Name:
    id: str
    span: Span


@dataclass(frozen=True)
class Arg:
    """One call argument; `name` is None for a positional one."""

    name: str | None
    value: Expr
    span: Span


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Arg, ...]
    span: Span
    func_span: Span


@dataclass(frozen=True)
class BinOp:
    op: str  # + - * / // % == != < <= > >= and or
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True)
class UnaryOp:
    op: str  # - not
    operand: Expr
    span: Span


@dataclass(frozen=True)
class Cond:
    """`if test then a else b`."""

    test: Expr
    then: Expr
    orelse: Expr
    span: Span


@dataclass(frozen=True)
class Seq:
    """Juxtaposed layers: `conv(64, 3) bn relu`."""

    items: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class Group:
    """`{ statements }` used as one layer."""

    body: tuple[Stmt, ...]
    span: Span


@dataclass(frozen=True)
class Residual:
    """`residual(args) { body } shortcut { shortcut }`."""

    args: tuple[Arg, ...]
    body: tuple[Stmt, ...]
    shortcut: tuple[Stmt, ...] | None
    span: Span
    shortcut_span: Span | None


@dataclass(frozen=True)
class Parallel:
    """`parallel concat { branches }`."""

    merge: str
    body: tuple[Stmt, ...]
    span: Span
    merge_span: Span


Expr: TypeAlias = (
    Number | ShapeLit | String | Bool | Name | Call | BinOp | UnaryOp | Cond | Seq | Group
    | Residual | Parallel
)

# --- statements -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bind:
    """`name = expr`."""

    name: str
    value: Expr
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Place:
    """A bare layer expression."""

    value: Expr
    span: Span


@dataclass(frozen=True)
class Input:
    dims: tuple[int, ...]
    span: Span


@dataclass(frozen=True)
class If:
    test: Expr
    body: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...]
    span: Span


Stmt: TypeAlias = Bind | Place | Input | If

# --- definitions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    default: Expr | None
    span: Span


@dataclass(frozen=True)
class BlockDef:
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span
    is_network: bool = False


@dataclass(frozen=True)
class Setting:
    """`ratio = 16` in an se section or rule."""

    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class PathRange:
    """`conv2` or `conv2..conv5` (siblings, inclusive)."""

    first: str
    last: str | None
    span: Span


@dataclass(frozen=True)
class Rule:
    """`at residual.end in conv2..conv5 of bottleneck { ratio = 8 }` or `after relu2 ...`."""

    where: str  # "at" (a point of a block) or "after" (a named layer)
    target: str  # "residual.end", "block.end", ... or a layer path inside the block
    ranges: tuple[PathRange, ...]
    kinds: tuple[str, ...]
    settings: tuple[Setting, ...]
    span: Span


@dataclass(frozen=True)
class SeSection:
    settings: tuple[Setting, ...]
    rules: tuple[Rule, ...]
    span: Span


@dataclass(frozen=True)
class Use:
    path: str
    span: Span


@dataclass(frozen=True)
class Module:
    """One parsed file."""

    file: str
    uses: tuple[Use, ...]
    blocks: tuple[BlockDef, ...]
    networks: tuple[BlockDef, ...]
    se: tuple[SeSection, ...]
