"""AST -> spec text: the inverse of `parse`, in one canonical layout, with the comments in place.

`parse(unparse(m))` equals `m` (spans aside) for every module `parse` gives, and `unparse` of
that is the same text again (`sedsl fmt` is idempotent). The layout (docs/language.md,
"Formatting"): two-space indents, one statement per line, `a = b` and `a + b` spaced, lines up to
100 columns, parentheses only where precedence needs them, numbers as they were written. Where a
construct may stand on one line or several, the source decides: a body written on one line stays
on one line while it fits, and bindings the author aligned stay aligned. Nodes a program made
(line 0 spans, `ast.GENERATED`) get the defaults: blocks, residual and parallel units and `if`
statements spread over lines, groups and rule settings on one line while they fit.

Comments come back where they were: a comment on a line of its own before the statement (or
item, setting, rule, closing brace) that followed it; a comment after code at the end of the line
that code ends on. Blank lines between statements are kept (at most one), and one separates the
top-level definitions.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from typing import Protocol, TypeAlias, TypeVar

from sedsl.errors import Span, SpecError
from sedsl.language import ast, numbers
from sedsl.record import Record

WIDTH = 100
INDENT = "  "

# Words the grammar reserves: none of them can be a NAME.
KEYWORDS = frozenset({
    "use", "block", "network", "input", "if", "then", "else", "or", "and", "not", "true",
    "false", "residual", "shortcut", "parallel", "se", "at", "after", "in", "of", "from",
})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH = re.compile(r"[A-Za-z0-9_.+-]+")  # names, indices, numbers (`1.0`, `1e-3`) and dots

# Precedence levels, loosest first: the grammar's `expr` (a sequence), `test` (a conditional),
# `or_test`, `and_test`, `not_test`, `comparison`, `sum`, `product`, `factor`, `atom`.
EXPR, TEST, OR, AND, NOT, COMPARE, SUM, PRODUCT, FACTOR, ATOM = range(10)
# Binary operators: (their level, the least level of the left and of the right operand).
_BINARY: dict[str, tuple[int, int, int]] = {
    "or": (OR, OR, AND), "and": (AND, AND, NOT),
    **{op: (COMPARE, SUM, SUM) for op in ("==", "!=", "<", "<=", ">", ">=")},
    "+": (SUM, SUM, PRODUCT), "-": (SUM, SUM, PRODUCT),
    **{op: (PRODUCT, PRODUCT, FACTOR) for op in ("*", "/", "//", "%")},
}
_LAYER_TERMS = (ast.Name, ast.Call, ast.Group, ast.Residual, ast.Parallel)

Item: TypeAlias = ast.Use | ast.BlockDef | ast.SeSection
SeItem: TypeAlias = ast.Setting | ast.Rule


class Unprintable(ValueError):
    """A node the language has no text for (a program made it): a name that is no name, a
    string with a quote, a layer term that is not one."""


def unparse(module: ast.Module) -> str:
    """The spec text of `module`, its comments included."""
    p = _Printer(module.comments)
    p.module(module)
    return p.text()


def skeleton(node: object) -> object:
    """A syntax tree without its layout (spans, number spellings; comments by their text): what
    `fmt` may not change."""
    if isinstance(node, ast.Comment):
        return node.text
    if isinstance(node, ast.Number):
        return node.value
    if isinstance(node, Record):
        return (type(node).__name__, *(skeleton(getattr(node, f)) for f in node._fields
                                       if not isinstance(getattr(node, f), Span)))
    if isinstance(node, tuple):
        return tuple(skeleton(x) for x in node)
    return node


def unparse_expr(e: ast.Expr) -> str:
    """One expression on one line (`conv(64, 3, stride = 2)`)."""
    return _flat_expr(e, EXPR, _force_flat=True) or ""


# --- words and numbers ------------------------------------------------------------------------


def name(text: str) -> str:
    """`text` as a NAME, or Unprintable."""
    if not _NAME.fullmatch(text) or text in KEYWORDS:
        raise Unprintable(f"`{text}` cannot be written as a name")
    return text


def string(text: str) -> str:
    if '"' in text or "\n" in text or "\r" in text:
        raise Unprintable(f"the string {text!r} cannot be written in a spec")
    return f'"{text}"'


def number(n: ast.Number) -> tuple[str, int]:
    """A number's text and level: as written when it still reads as its value, else the
    shortest exact decimal (`0.25`, `1e-5`), a negation, or a fraction `1 / 3`."""
    if n.text is not None and _reads_as(n.text, n.value):
        return n.text, ATOM
    return number_text(n.value)


def _reads_as(text: str, value: Fraction) -> bool:
    try:
        return numbers.literal(text, None) == value
    except SpecError:
        return False


def number_text(value: Fraction) -> tuple[str, int]:
    """`value` as spec text, with its level."""
    if value < 0:
        text, _ = number_text(-value)
        return "-" + text, FACTOR
    p, q = value.numerator, value.denominator
    if q == 1:
        return str(p), ATOM
    twos, fives, rest = _factor_2_5(q)
    if rest != 1:
        return f"{p} / {q}", PRODUCT
    k = max(twos, fives)  # value = digits / 10^k
    digits = str(p * 10**k // q)
    plain = digits[:-k].rjust(1, "0") + "." + digits[-k:].rjust(k, "0")
    significant = digits.rstrip("0")
    exponent = len(digits) - len(significant) - k + len(significant) - 1
    scientific = significant[0] + ("." + significant[1:] if len(significant) > 1 else "") + \
        f"e{exponent}"
    return (scientific if len(scientific) < len(plain) else plain), ATOM


def _factor_2_5(q: int) -> tuple[int, int, int]:
    twos = fives = 0
    while q % 2 == 0:
        q, twos = q // 2, twos + 1
    while q % 5 == 0:
        q, fives = q // 5, fives + 1
    return twos, fives, q


# --- layout hints -----------------------------------------------------------------------------


def generated(span: Span) -> bool:
    """A node a program made: it has no place in a text."""
    return span.line == 0


def _one_line(span: Span) -> bool:
    return span.line == span.end_line


def _pos(span: Span) -> tuple[int, int]:
    return span.line, span.col


def _end(span: Span) -> tuple[int, int]:
    return span.end_line, span.end_col


def _inline_body(node: ast.Group | ast.Residual | ast.Parallel | ast.BlockDef) -> bool:
    """Whether a body may stand on one line: as written (its statements on the line of its
    `}`), or, made by a program, for groups."""
    if generated(node.span):
        return isinstance(node, ast.Group)
    stmts = [*node.body, *(node.shortcut or ())] if isinstance(node, ast.Residual) else node.body
    return all(s.span.line == s.span.end_line == node.span.end_line for s in stmts)


def _clauses(s: ast.If) -> list[tuple[ast.Expr | None, tuple[ast.Stmt, ...], Span]]:
    """An if statement's chain: (test, body, span) per clause, test None for the last `else`."""
    out: list[tuple[ast.Expr | None, tuple[ast.Stmt, ...], Span]] = []
    node: ast.If | None = s
    while node is not None:
        out.append((node.test, node.body, node.span))
        orelse, node = node.orelse, None
        if len(orelse) == 1 and isinstance(orelse[0], ast.If):
            node = orelse[0]
        elif orelse:
            out.append((None, orelse, s.span))
    return out


def _inline_clauses(s: ast.If) -> bool:
    """Every clause's body was written on the line of its `if` (or on one line, for `else`)."""
    if generated(s.span):
        return False
    clauses = _clauses(s)
    for test, body, span in clauses:
        lines = {line for st in body for line in (st.span.line, st.span.end_line)}
        if test is None:
            if len(lines) > 1 or (lines and lines != {s.span.end_line}):
                return False
        elif lines - {span.line}:
            return False
    return True


# --- flat text --------------------------------------------------------------------------------


def _paren(text: str, level: int, least: int) -> str:
    return text if level >= least else f"({text})"


def _flat_expr(e: ast.Expr, least: int = EXPR, _force_flat: bool = False) -> str | None:
    """`e` on one line, parenthesised if its level is below `least`; None when a body in it
    keeps its lines (unless forced)."""
    got = _flat(e, _force_flat)
    if got is None:
        return None
    text, level = got
    return _paren(text, level, least)


def _flat(e: ast.Expr, force: bool = False) -> tuple[str, int] | None:
    """(text, level) of `e` on one line, or None."""
    if isinstance(e, ast.Number):
        return number(e)
    if isinstance(e, ast.ShapeLit):
        return "x".join(map(str, e.dims)), ATOM
    if isinstance(e, ast.String):
        return string(e.value), ATOM
    if isinstance(e, ast.Bool):
        return ("true" if e.value else "false"), ATOM
    if isinstance(e, ast.Name):
        return name(e.id), ATOM
    if isinstance(e, ast.Call):
        args = _flat_args(e.args, force)
        return (None if args is None else (f"{name(e.func)}({args})", ATOM))
    if isinstance(e, ast.BinOp):
        level, lmin, rmin = _binary(e.op)
        left, right = _flat_expr(e.left, lmin, force), _flat_expr(e.right, rmin, force)
        if left is None or right is None:
            return None
        return f"{left} {e.op} {right}", level
    if isinstance(e, ast.UnaryOp):
        level = FACTOR if e.op == "-" else NOT
        operand = _flat_expr(e.operand, level, force)
        if operand is None:
            return None
        return (f"-{operand}" if e.op == "-" else f"not {operand}"), level
    if isinstance(e, ast.Cond):
        parts = (_flat_expr(e.test, OR, force), _flat_expr(e.then, TEST, force),
                 _flat_expr(e.orelse, TEST, force))
        if None in parts:
            return None
        return f"if {parts[0]} then {parts[1]} else {parts[2]}", TEST
    if isinstance(e, ast.Seq):
        items = [_flat_expr(e.items[0], TEST, force),
                 *(_flat_tail(item, force) for item in e.items[1:])]
        if None in items:
            return None
        return " ".join(i for i in items if i is not None), EXPR
    if isinstance(e, ast.Group | ast.Residual | ast.Parallel):
        if not force and not _inline_body(e):
            return None
        return _flat_unit(e, force)
    raise Unprintable(f"{type(e).__name__} is not an expression")


def _binary(op: str) -> tuple[int, int, int]:
    if op not in _BINARY:
        raise Unprintable(f"`{op}` is not an operator of the language")
    return _BINARY[op]


def _flat_tail(e: ast.Expr, force: bool) -> str | None:
    """A later item of a sequence: a layer term, or a layer term repeated (`bn * 2`)."""
    if isinstance(e, _LAYER_TERMS):
        return _flat_expr(e, ATOM, force)
    if isinstance(e, ast.BinOp) and e.op == "*" and isinstance(e.left, _LAYER_TERMS):
        left, right = _flat_expr(e.left, ATOM, force), _flat_expr(e.right, FACTOR, force)
        return None if left is None or right is None else f"{left} * {right}"
    raise Unprintable(f"a sequence continues with layer terms (names, calls, bodies), not a "
                      f"{type(e).__name__}")


def _flat_args(args: Sequence[ast.Arg], force: bool = False) -> str | None:
    parts = [_flat_arg(a, force) for a in args]
    return None if None in parts else ", ".join(p for p in parts if p is not None)


def _flat_arg(a: ast.Arg, force: bool = False) -> str | None:
    value = _flat_expr(a.value, EXPR, force)
    if value is None:
        return None
    return value if a.name is None else f"{name(a.name)} = {value}"


def _flat_unit(e: ast.Group | ast.Residual | ast.Parallel, force: bool) -> tuple[str, int] | None:
    if isinstance(e, ast.Group):
        body = _flat_body(e.body, force)
        return None if body is None else (body, ATOM)
    if isinstance(e, ast.Parallel):
        body = _flat_body(e.body, force)
        return None if body is None else (f"parallel {name(e.merge)} {body}", ATOM)
    args, body = _flat_args(e.args, force), _flat_body(e.body, force)
    if args is None or body is None:
        return None
    text = f"residual({args}) {body}" if e.args else f"residual {body}"
    if e.shortcut is not None:
        short = _flat_body(e.shortcut, force)
        if short is None:
            return None
        text += f" shortcut {short}"
    return text, ATOM


def _flat_body(body: Sequence[ast.Stmt], force: bool = False) -> str | None:
    """`{ a; b }`, `{}`."""
    parts = [_flat_stmt(s, force) for s in body]
    if None in parts:
        return None
    return "{ " + "; ".join(p for p in parts if p is not None) + " }" if parts else "{}"


def _flat_stmt(s: ast.Stmt, force: bool = False) -> str | None:
    if isinstance(s, ast.Bind):
        value = _flat_expr(s.value, EXPR, force)
        return None if value is None else f"{name(s.name)} = {from_clause(s)}{value}"
    if isinstance(s, ast.Place):
        value = _flat_expr(s.value, EXPR, force)
        return None if value is None else f"{from_clause(s)}{value}"
    if isinstance(s, ast.Input):
        return "input " + "x".join(map(str, s.dims))
    if not force and not _inline_clauses(s):
        return None
    parts = []
    for test, body, _ in _clauses(s):
        text = _flat_body(body, force)
        if text is None:
            return None
        if test is None:
            parts.append(f"else {text}")
            continue
        cond = _flat_expr(test, TEST, force)
        if cond is None:
            return None
        parts.append(("else if " if parts else "if ") + f"{cond} {text}")
    return " ".join(parts)


def from_clause(s: ast.Bind | ast.Place) -> str:
    """`from a, b ` (with its space), or nothing for a statement that reads the previous one."""
    if s.source is None:
        return ""
    names = [n.id if n.id == "input" else name(n.id) for n in s.source.names]
    return f"from {', '.join(names)} "


def _value_span(s: ast.Bind) -> Span:
    """Where a binding's value starts to be written: at its `from`, if it has one."""
    return s.value.span if s.source is None else s.source.span


def _flat_setting(s: ast.Setting, force: bool = False) -> str | None:
    value = "se" if _se_word(s.value) else _flat_expr(s.value, EXPR, force)
    return None if value is None else f"{name(s.name)} = {value}"


def _se_word(e: ast.Expr) -> bool:
    """`variant = se`: a setting's value may be the keyword `se`, the plain SE variant."""
    return isinstance(e, ast.Name) and e.id == "se"


def _rule_head(r: ast.Rule) -> str:
    if r.where not in ("at", "after"):
        raise Unprintable(f"a rule is `at` or `after`, not `{r.where}`")
    text = f"{r.where} {_path(r.target)}"
    if r.ranges:
        text += " in " + ", ".join(_path(x.first) + (f"..{_path(x.last)}" if x.last else "")
                                   for x in r.ranges)
    if r.kinds:
        text += " of " + ", ".join(name(k) for k in r.kinds)
    return text


def _path(text: str) -> str:
    if not _PATH.fullmatch(text):
        raise Unprintable(f"`{text}` cannot be written as a path")
    return text


def _flat_rule(r: ast.Rule, force: bool = False) -> str | None:
    if not r.settings:
        return _rule_head(r)
    parts = [_flat_setting(s, force) for s in r.settings]
    if None in parts:
        return None
    return f"{_rule_head(r)} {{ " + ", ".join(p for p in parts if p is not None) + " }"


def _flat_param(p: ast.Param) -> str | None:
    head = name(p.name) + _flat_choices(p)
    if p.default is None:
        return head
    value = _flat_expr(p.default, EXPR)
    return None if value is None else f"{head} = {value}"


def _flat_choices(p: ast.Param) -> str:
    """`: "a" | "b"`, the values a parameter takes (each a factor, as the grammar has them)."""
    if not p.choices:
        return ""
    return ": " + " | ".join(_flat_expr(c, FACTOR, True) or "" for c in p.choices)


def _contains_body(e: ast.Expr) -> bool:
    """Whether a body (group, residual, parallel) is part of `e`'s own layout."""
    if isinstance(e, ast.Group | ast.Residual | ast.Parallel):
        return True
    if isinstance(e, ast.Seq):
        return any(_contains_body(i) for i in e.items)
    if isinstance(e, ast.BinOp):
        return _contains_body(e.left) or _contains_body(e.right)
    if isinstance(e, ast.Cond):
        return any(_contains_body(x) for x in (e.test, e.then, e.orelse))
    if isinstance(e, ast.UnaryOp):
        return _contains_body(e.operand)
    if isinstance(e, ast.Call):
        return any(_contains_body(a.value) for a in e.args)
    return False


# --- the printer ------------------------------------------------------------------------------


class _Printer:
    """Writes lines; puts each comment back when the node after it is reached."""

    def __init__(self, comments: Iterable[ast.Comment]):
        ordered = list(comments)
        self.header = [c for c in ordered if generated(c.span)]
        self.comments = sorted((c for c in ordered if not generated(c.span)),
                               key=lambda c: _pos(c.span))
        self.keys = [_pos(c.span) for c in self.comments]
        self.next = 0  # the first comment not yet written
        self.lines: list[str] = []
        self.trailing_ok: list[bool] = []  # per written line: a comment may still follow it
        self.cur: str | None = None  # the line being written; None at the start of a line
        self.depth = 0
        self.deferred: list[ast.Comment] = []  # comments for the end of the current line
        self.last_line = 0  # the source line of what was written last (blank lines)
        self.fresh = True  # at the start of the file or of a body: no blank line here
        self.want_blank = False  # one blank line before the next line written

    # -- lines --

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)

    @property
    def col(self) -> int:
        return len(self.cur) if self.cur is not None else len(INDENT) * self.depth

    def write(self, text: str) -> None:
        if self.cur is None:
            self._blank_if_wanted()
            self.cur = INDENT * self.depth
            self.fresh = False
        self.cur += text

    def newline(self) -> None:
        assert self.cur is not None
        line, self.cur = self.cur, None
        ok = not line.endswith("\\")
        if ok and self.deferred:
            first, *rest = self.deferred
            self.deferred = []
            self.lines.append(_attach(line, first))
            self.trailing_ok.append(False)
            for c in rest:
                self._own_line(c)
            return
        self.lines.append(line)
        self.trailing_ok.append(ok)

    def continuation(self, col: int) -> None:
        """End the line with a backslash and go on at column `col`."""
        self.write(" \\")
        self.newline()
        self.cur = " " * col

    def wrap(self, col: int) -> None:
        """A new line at column `col` (inside parentheses, or before `else`)."""
        self.newline()
        self.cur = " " * col

    def _blank_if_wanted(self) -> None:
        if self.want_blank and not self.fresh and self.lines and self.lines[-1] != "":
            self.lines.append("")
            self.trailing_ok.append(False)
        self.want_blank = False

    def _own_line(self, c: ast.Comment) -> None:
        self.lines.append(INDENT * self.depth + c.text)
        self.trailing_ok.append(False)
        self.fresh = False

    # -- comments --

    def reach(self, pos: tuple[int, int], only: Callable[[ast.Comment], bool] | None = None
              ) -> None:
        """Write the comments before source position `pos` (those that pass `only`)."""
        while self.next < len(self.comments) and self.keys[self.next] < pos:
            c = self.comments[self.next]
            if only is not None and not only(c):
                return
            self.next += 1
            self.comment(c)

    def comment(self, c: ast.Comment) -> None:
        if self.cur is not None:
            self.deferred.append(c)
            return
        if not c.own_line and self.lines and self.trailing_ok[-1]:
            self.lines[-1] = _attach(self.lines[-1], c)
            self.trailing_ok[-1] = False
        else:
            self.gap(c.span.line)
            self._blank_if_wanted()
            self._own_line(c)
        self.last_line = c.span.end_line

    def gap(self, line: int) -> None:
        """A blank line before source line `line` if the source has one there."""
        if line > 0 and self.last_line > 0 and line - self.last_line >= 2:
            self.want_blank = True

    def start(self, span: Span) -> None:
        """A statement-level unit (statement, item, setting, rule) begins at the line start."""
        assert self.cur is None
        if generated(span):
            return
        self.reach(_pos(span))
        self.gap(span.line)

    def finish(self, span: Span) -> None:
        """The unit is written: comments inside it go to the end of its last line."""
        if not generated(span):
            self.reach(_end(span))
            self.last_line = span.end_line
        if self.cur is not None:
            self.newline()

    # -- the module --

    def module(self, m: ast.Module) -> None:
        for c in self.header:
            self._own_line(c)
        if self.header:
            self.want_blank = True
        previous: Item | None = None
        for item in _items(m):
            if previous is not None and not (isinstance(item, ast.Use)
                                             and isinstance(previous, ast.Use)):
                self.want_blank = True
            self.item(item)
            previous = item
        self.reach((10**12, 0))

    def item(self, item: Item) -> None:
        self.start(item.span)
        if isinstance(item, ast.Use):
            self.write(f"use {string(item.path)}")
        elif isinstance(item, ast.BlockDef):
            self.blockdef(item)
        else:
            self.se_section(item)
        self.finish(item.span)

    def blockdef(self, b: ast.BlockDef) -> None:
        self.write(f"{'network' if b.is_network else 'block'} {name(b.name)}")
        if b.params:
            self.write("(")
            self.listing([(p, _flat_param(p)) for p in b.params], reserve=3)
            self.write(")")
        if _inline_body(b) and not generated(b.span):
            body = _flat_body(b.body)
            if body is not None and self.col + 1 + len(body) <= WIDTH:
                self.write(" " + body)
                return
        self.write(" {")
        self.body(b.body, b.span)
        self.write("}")

    def se_section(self, s: ast.SeSection) -> None:
        items: list[SeItem] = _ordered(s.settings, s.rules)
        inner = not generated(s.span) and self.next < len(self.comments) \
            and self.keys[self.next] < _end(s.span)
        if not items and not inner:
            self.write("se {}")
            return
        self.write("se {")
        self.newline()
        self.depth += 1
        self.fresh = True
        for x in items:
            self.start(x.span)
            if isinstance(x, ast.Setting):
                self.setting(x)
            else:
                self.rule(x)
            self.finish(x.span)
        self.close(s.span)
        self.depth -= 1
        self.write("}")

    def setting(self, s: ast.Setting) -> None:
        self.write(f"{name(s.name)} = ")
        if _se_word(s.value):
            self.write("se")
        else:
            self.expr(s.value, EXPR)

    def rule(self, r: ast.Rule) -> None:
        flat = _flat_rule(r)
        expanded = r.settings and not generated(r.span) and not _one_line(r.span)
        if flat is not None and not expanded and self.col + len(flat) <= WIDTH:
            self.write(flat)
            return
        self.write(_rule_head(r))
        if not r.settings:
            return
        self.write(" {")
        self.newline()
        self.depth += 1
        self.fresh = True
        for s in r.settings:
            self.start(s.span)
            self.setting(s)
            self.finish(s.span)
        self.close(r.span)
        self.depth -= 1
        self.write("}")

    # -- bodies and statements --

    def body(self, stmts: Sequence[ast.Stmt], owner: Span, before: Span | None = None) -> None:
        """After `{`: the statements, one a line, then the comments before the `}` (the end of
        `owner`); the caller writes the `}`. When another body follows (`} else {`), `before`
        is where it starts, and the comments up to this body's `}` stay in it."""
        self.newline()
        self.depth += 1
        self.fresh = True
        pads = _pads(stmts, self.col, self.comments)
        for i, s in enumerate(stmts):
            self.statement(s, pads.get(i, 0))
        if before is None:
            self.close(owner)
        elif not generated(before):
            self.reach(_pos(before), _closes_body)
        self.depth -= 1

    def close(self, owner: Span) -> None:
        """The comments before a body's `}` (the end of `owner`)."""
        if not generated(owner):
            self.reach((owner.end_line, owner.end_col - 1))

    def statement(self, s: ast.Stmt, pad: int = 0) -> None:
        self.start(s.span)
        if isinstance(s, ast.Bind):
            self.write(f"{name(s.name).ljust(pad)} = {from_clause(s)}")
            self.expr(s.value, EXPR)
        elif isinstance(s, ast.Place):
            self.write(from_clause(s))
            self.expr(s.value, EXPR)
        elif isinstance(s, ast.Input):
            self.write("input " + "x".join(map(str, s.dims)))
        else:
            self.if_stmt(s)
        self.finish(s.span)

    def if_stmt(self, s: ast.If) -> None:
        clauses = _clauses(s)
        if _inline_clauses(s):
            flat = _flat_stmt(s)
            if flat is not None and self.col + len(flat) <= WIDTH:
                self.write(flat)
                return
            lines = []
            for i, (test, body, _) in enumerate(clauses):
                text, cond = _flat_body(body), "" if test is None else _flat_expr(test, TEST)
                if text is None or cond is None:
                    break
                word = "if" if i == 0 else "else if" if test is not None else "else"
                lines.append(f"{word} {cond} {text}" if test is not None else f"{word} {text}")
            if len(lines) == len(clauses) and all(self.col + len(x) <= WIDTH for x in lines):
                for i, line in enumerate(lines):
                    if i:
                        self.newline()
                    self.write(line)
                return
        for i, (test, body, _) in enumerate(clauses):
            if test is None:
                self.write(" else {")
            else:
                self.write("if " if i == 0 else " else if ")
                self.expr(test, TEST, reserve=2)
                self.write(" {")
            following = clauses[i + 1] if i + 1 < len(clauses) else None
            self.body(body, s.span, None if following is None else _start_of(following, s))
            self.write("}")

    # -- expressions --

    def expr(self, e: ast.Expr, least: int, reserve: int = 0) -> None:
        """Write `e` from the current column: on one line if it fits, else spread over lines."""
        flat = _flat_expr(e, least)
        if flat is not None and self.col + len(flat) + reserve <= WIDTH:
            self.write(flat)
            return
        got = _flat(e, force=True)
        assert got is not None
        if got[1] < least:
            self.write("(")
            self.expr(e, EXPR, reserve + 1)
            self.write(")")
            return
        if isinstance(e, ast.Seq):
            self.seq(e, reserve)
        elif isinstance(e, ast.Cond):
            self.cond(e, reserve)
        elif isinstance(e, ast.Call):
            self.write(f"{name(e.func)}(")
            self.listing([(a, _flat_arg(a)) for a in e.args], reserve + 1)
            self.write(")")
        elif isinstance(e, ast.BinOp):
            _, lmin, rmin = _binary(e.op)
            self.expr(e.left, lmin, len(e.op) + 2)
            self.write(f" {e.op} ")
            self.expr(e.right, rmin, reserve)
        elif isinstance(e, ast.UnaryOp):
            self.write("-" if e.op == "-" else "not ")
            self.expr(e.operand, FACTOR if e.op == "-" else NOT, reserve)
        elif isinstance(e, ast.Group):
            self.write("{")
            self.body(e.body, e.span)
            self.write("}")
        elif isinstance(e, ast.Parallel):
            self.write(f"parallel {name(e.merge)} {{")
            self.body(e.body, e.span)
            self.write("}")
        elif isinstance(e, ast.Residual):
            self.residual(e)
        else:
            self.write(got[0])

    def residual(self, e: ast.Residual) -> None:
        self.write("residual")
        if e.args:
            self.write("(")
            self.listing([(a, _flat_arg(a)) for a in e.args], reserve=3)
            self.write(")")
        self.write(" {")
        before = None if e.shortcut is None else \
            (e.shortcut[0].span if e.shortcut else _end_of(e.span))
        self.body(e.body, e.span, before)
        self.write("}")
        if e.shortcut is not None:
            self.write(" shortcut {")
            self.body(e.shortcut, e.span)
            self.write("}")

    def seq(self, e: ast.Seq, reserve: int) -> None:
        """A sequence too long for its line: one unit (a call and the names after it) a line,
        continued with backslashes; with bodies spread over lines, item after item."""
        if any(_contains_body(i) and _flat_expr(i, ATOM) is None for i in e.items):
            for i, item in enumerate(e.items):
                if i:
                    self.write(" ")
                self._seq_item(item, i, reserve)
            return
        units: list[list[int]] = []
        for i, item in enumerate(e.items):
            if not units or _starts_unit(item):
                units.append([])
            units[-1].append(i)
        col = self.col
        for k, unit in enumerate(units):
            if k:
                self.continuation(col)
            for j, i in enumerate(unit):
                if j:
                    self.write(" ")
                self._seq_item(e.items[i], i, reserve if k == len(units) - 1 else 2)

    def _seq_item(self, item: ast.Expr, index: int, reserve: int) -> None:
        if index == 0:
            self.expr(item, TEST, reserve)
        elif isinstance(item, ast.BinOp):  # a repeat: layer_term * factor
            self.expr(item.left, ATOM, 4)
            self.write(" * ")
            self.expr(item.right, FACTOR, reserve)
        else:
            self.expr(item, ATOM, reserve)

    def cond(self, e: ast.Cond, reserve: int) -> None:
        """`if a then b else if c then d else e` too long: line breaks before `else`s."""
        parts: list[tuple[str, ast.Expr | None, ast.Expr]] = []
        node: ast.Expr = e
        while isinstance(node, ast.Cond):
            parts.append(("if" if not parts else "else if", node.test, node.then))
            node = node.orelse
        parts.append(("else", None, node))
        col = self.col
        for k, (word, test, value) in enumerate(parts):
            room = reserve if k == len(parts) - 1 else 0
            t = "" if test is None else _flat_expr(test, OR)
            v = _flat_expr(value, TEST)
            piece = None if t is None or v is None else \
                f"{word} {t} then {v}" if test is not None else f"{word} {v}"
            if k:
                if piece is not None and self.col + 1 + len(piece) + room <= WIDTH:
                    self.write(" ")
                else:
                    self.wrap(col)
            if piece is not None and self.col + len(piece) + room <= WIDTH:
                self.write(piece)
                continue
            self.write(word + " ")
            if test is not None:
                self.expr(test, OR, 5)
                self.write(" then ")
            self.expr(value, TEST, room)

    def listing(self, entries: Sequence[tuple[ast.Arg | ast.Param, str | None]],
                reserve: int) -> None:
        """Arguments or parameters after `(`: as many a line as fit, lined up under the first;
        `reserve` columns stay free after the last."""
        col = self.col
        for k, (node, text) in enumerate(entries):
            tail = reserve if k == len(entries) - 1 else 1  # `)...` or `,`
            if k:
                if text is not None and self.col + 2 + len(text) + tail <= WIDTH:
                    self.write(", ")
                else:
                    self.write(",")
                    self.wrap(col)
            if text is not None and (self.col + len(text) + tail <= WIDTH or _atomic(node)):
                self.write(text)
            else:
                self._entry(node, tail)

    def choices(self, values: tuple[ast.Expr, ...], reserve: int) -> None:
        """`: "a" | "b" | ...`, as many a line as fit, lined up under the first."""
        self.write(": ")
        col = self.col
        for k, value in enumerate(values):
            text = _flat_expr(value, FACTOR, True) or ""
            if k:
                tail = reserve if k == len(values) - 1 else 2
                if self.col + 3 + len(text) + tail <= WIDTH:
                    self.write(" | ")
                else:
                    self.write(" |")
                    self.wrap(col)
            self.write(text)

    def _entry(self, node: ast.Arg | ast.Param, reserve: int) -> None:
        value = node.value if isinstance(node, ast.Arg) else node.default
        if node.name is not None:
            self.write(name(node.name))
            if isinstance(node, ast.Param) and node.choices:
                after = 0 if value is None else 3 + len(_flat_expr(value, EXPR) or "")
                self.choices(node.choices, after + reserve)
            self.write(" = " if value is not None else "")
        if value is not None:
            self.expr(value, EXPR, reserve)


def _atomic(node: ast.Arg | ast.Param) -> bool:
    if isinstance(node, ast.Param) and node.choices:
        return False  # its values wrap
    value = node.value if isinstance(node, ast.Arg) else node.default
    return value is None or not isinstance(value, ast.Call | ast.Seq | ast.Cond | ast.BinOp)


def _starts_unit(e: ast.Expr) -> bool:
    if isinstance(e, ast.BinOp):
        e = e.left
    return isinstance(e, ast.Call | ast.Group | ast.Residual | ast.Parallel)


def _start_of(clause: tuple[ast.Expr | None, tuple[ast.Stmt, ...], Span], s: ast.If) -> Span:
    """Where the clause after a body starts: its `if` (`else if`), or its first statement."""
    test, body, span = clause
    if test is not None:
        return span
    return body[0].span if body else _end_of(s.span)


def _end_of(span: Span) -> Span:
    return Span(span.file, span.end_line, span.end_col, span.end_line, span.end_col)


def _closes_body(c: ast.Comment) -> bool:
    """A comment that belongs to the body before `} else {` or `} shortcut {`: one at the end of
    a line of that body, or one on its own line right before its `}`."""
    return not c.own_line or c.closes


def _attach(line: str, c: ast.Comment) -> str:
    """`line` with comment `c` after it: at the comment's own column when that is past the
    code (aligned comments stay aligned), else two spaces after it."""
    col = c.span.col - 1
    if not generated(c.span) and col >= len(line.rstrip()) + 1:
        return line.rstrip().ljust(col) + c.text
    return f"{line.rstrip()}  {c.text}"


def _items(m: ast.Module) -> list[Item]:
    """The module's items in source order; those a program made after them: uses, the network,
    blocks, the se section."""
    return _ordered(m.uses, m.networks, m.blocks, m.se)


class _Placed(Protocol):
    @property
    def span(self) -> Span: ...


T = TypeVar("T", bound=_Placed)


def _ordered(*groups: Sequence[T]) -> list[T]:
    """Nodes read from a text in its order; then those a program made, group by group."""
    read: list[T] = sorted((x for g in groups for x in g if not generated(x.span)),
                           key=lambda x: _pos(x.span))
    return read + [x for g in groups for x in g if generated(x.span)]


def _pads(stmts: Sequence[ast.Stmt], col: int, comments: Sequence[ast.Comment]) -> dict[int, int]:
    """The width each binding's name is padded to. Alignment is the author's: consecutive
    bindings whose values the source starts in one column keep their `=` in one column, padded
    to the longest name (a run ends at any other statement, a blank or comment line, and a
    binding whose value opens a body over several lines)."""
    keys = [_pos(c.span) for c in comments if c.own_line]
    runs: list[list[int]] = []
    previous: ast.Stmt | None = None
    for i, s in enumerate(stmts):
        joined = previous is not None and isinstance(previous, ast.Bind) and \
            isinstance(s, ast.Bind) and not _separated(previous, s, keys)
        if isinstance(s, ast.Bind):
            if joined:
                runs[-1].append(i)
            else:
                runs.append([i])
        previous = s
    pads: dict[int, int] = {}
    todo = runs
    while todo:
        run = todo.pop()
        binds = [stmts[i] for i in run]
        assert all(isinstance(b, ast.Bind) for b in binds)
        width = max(len(b.name) for b in binds if isinstance(b, ast.Bind))
        bad = [k for k, b in enumerate(binds)
               if isinstance(b, ast.Bind) and not _alignable(b, width, col)]
        if not bad:
            if len(run) > 1:
                pads.update({i: width for i in run})
            continue
        cuts = [-1, *bad, len(run)]
        todo += [run[a + 1:b] for a, b in itertools.pairwise(cuts) if run[a + 1:b]]
    return pads


def _separated(a: ast.Bind, b: ast.Bind, own_line_comments: list[tuple[int, int]]) -> bool:
    va, vb = _value_span(a), _value_span(b)
    if generated(va) or generated(vb) or va.col != vb.col:
        return True
    if b.span.line - a.span.end_line >= 2:
        return True
    i = bisect.bisect_right(own_line_comments, _end(a.span))
    return i < len(own_line_comments) and own_line_comments[i] < _pos(b.span)


def _alignable(b: ast.Bind, width: int, col: int) -> bool:
    """The binding stays on its line, or wraps without opening a body there."""
    flat = _flat_expr(b.value, EXPR)
    if flat is None:
        return False
    return col + width + 3 + len(from_clause(b)) + len(flat) <= WIDTH or not _contains_body(b.value)
