"""The syntax tree of a spec: frozen records (`sedsl.record`), one per grammar rule, each with its
span."""

from __future__ import annotations

from fractions import Fraction
from typing import TypeAlias

from sedsl.errors import Span
from sedsl.record import Record

# The span of a node a program made rather than read: line 0 is no place in a text.
GENERATED = Span("<generated>", 0, 0, 0, 0)

# --- expressions ----------------------------------------------------------------------------


class Number(Record):
    """A number literal; `text` is its spelling (`1e-3`, `1.0`), which the printer keeps. The
    spelling is not part of the value: `1e-3` and `0.001` are equal Numbers."""

    value: Fraction
    span: Span
    text: str | None = None  # None: a number made by a program, printed in a canonical form

    def _values(self) -> tuple[object, ...]:
        return (self.value, self.span)


class ShapeLit(Record):
    """`3x224x224` or `1x7`."""

    dims: tuple[int, ...]
    span: Span


class String(Record):
    value: str
    span: Span


class Bool(Record):
    value: bool
    span: Span


class Name(Record):
    id: str
    span: Span


class Arg(Record):
    """One call argument; `name` is None for a positional one."""

    name: str | None
    value: Expr
    span: Span


class Call(Record):
    func: str
    args: tuple[Arg, ...]
    span: Span
    func_span: Span


class BinOp(Record):
    op: str  # + - * / // % == != < <= > >= and or
    left: Expr
    right: Expr
    span: Span


class UnaryOp(Record):
    op: str  # - not
    operand: Expr
    span: Span


class Cond(Record):
    """`if test then a else b`."""

    test: Expr
    then: Expr
    orelse: Expr
    span: Span


class Seq(Record):
    """Juxtaposed layers: `conv(64, 3) bn relu`."""

    items: tuple[Expr, ...]
    span: Span


class Group(Record):
    """`{ statements }` used as one layer."""

    body: tuple[Stmt, ...]
    span: Span


class Residual(Record):
    """`residual(args) { body } shortcut { shortcut }`."""

    args: tuple[Arg, ...]
    body: tuple[Stmt, ...]
    shortcut: tuple[Stmt, ...] | None
    span: Span
    shortcut_span: Span | None


class Parallel(Record):
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


class From(Record):
    """`from a, b`: the earlier statements of the body (`input`: its input) a statement reads
    instead of the previous one; `span` covers the clause, from its `from`."""

    names: tuple[Name, ...]
    span: Span


class Bind(Record):
    """`name = expr`, or `name = from a, b expr`."""

    name: str
    value: Expr
    span: Span
    name_span: Span
    source: From | None = None  # None: the previous statement's output


class Place(Record):
    """A bare layer expression, or `from a, b expr`."""

    value: Expr
    span: Span
    source: From | None = None


class Input(Record):
    dims: tuple[int, ...]
    span: Span


class If(Record):
    test: Expr
    body: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...]
    span: Span


Stmt: TypeAlias = Bind | Place | Input | If

# --- definitions ----------------------------------------------------------------------------


class Param(Record):
    """`name`, `name = default`, or `name: "a" | "b" = "a"` (the values it takes)."""

    name: str
    default: Expr | None
    span: Span
    choices: tuple[Expr, ...] = ()  # () : any value of the default's kind


class BlockDef(Record):
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span
    is_network: bool = False


class Setting(Record):
    """`ratio = 16` in an se section or rule."""

    name: str
    value: Expr
    span: Span


class PathRange(Record):
    """`conv2` or `conv2..conv5` (siblings, inclusive)."""

    first: str
    last: str | None
    span: Span


class Rule(Record):
    """`at residual.end in conv2..conv5 of bottleneck { ratio = 8 }` or `after relu2 ...`."""

    where: str  # "at" (a point of a block) or "after" (a named layer)
    target: str  # "residual.end", "block.end", ... or a layer path inside the block
    ranges: tuple[PathRange, ...]
    kinds: tuple[str, ...]
    settings: tuple[Setting, ...]
    span: Span


class SeSection(Record):
    settings: tuple[Setting, ...]
    rules: tuple[Rule, ...]
    span: Span


class Use(Record):
    path: str
    span: Span


class Comment(Record):
    """`# ...` to the end of its line, trailing whitespace dropped. `own_line`: nothing but
    whitespace before it on its line (else it trails code); `closes`: the next token is a `}`
    (it ends a body). A comment at line 0 (made by a program, not read) heads the file."""

    text: str
    span: Span
    own_line: bool = True
    closes: bool = False


class Module(Record):
    """One parsed file; `comments` in source order (the printer puts them back in place)."""

    file: str
    uses: tuple[Use, ...]
    blocks: tuple[BlockDef, ...]
    networks: tuple[BlockDef, ...]
    se: tuple[SeSection, ...]
    comments: tuple[Comment, ...] = ()
