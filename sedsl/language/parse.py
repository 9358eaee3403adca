"""Text -> AST. Lark builds the tree; this module maps it 1:1 onto `sedsl.language.ast` and turns
every
lark error into a SpecError with a span.

The parser is lark's stand-alone LALR(1) parser for grammars/sedsl.lark, generated into
`sedsl/language/_lalr.py` (its tables and lark's run-time, no grammar compilation at start-up: a
command
line run starts ~80 ms sooner). After editing the grammar, regenerate it with
`python -m lark.tools.standalone -s start -s expr -l basic --propagate_positions
-o sedsl/language/_lalr.py grammars/sedsl.lark`; tests/test_parse.py fails until it is current."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any

from sedsl import limits
from sedsl.errors import Span, SpecError
from sedsl.language import ast, numbers, source
from sedsl.language._lalr import (
    Lark,
    Lark_StandAlone,
    Token,
    Transformer,
    Tree,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
    v_args,
)

# Words a line may start with to continue the statement on the line before.
_CONTINUATIONS = {"ELSE", "SHORTCUT"}


class _Layout:
    """Post-lexer: newlines end statements, except inside ( ) and before `else` / `shortcut`."""

    always_accept = ("_NL",)

    def __init__(self, final_newline: bool):
        self.final_newline = final_newline

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        brackets: list[str] = []
        held: Token | None = None  # a newline waiting to see what follows it
        last: Token | None = None
        for tok in stream:
            if tok.type == "_NL":
                if brackets[-1:] != ["("] and last is not None:
                    held = held or tok
                continue
            if held is not None and tok.type not in _CONTINUATIONS:
                yield held
            held = None
            if tok.type in ("LPAR", "LBRACE"):
                brackets.append("(" if tok.type == "LPAR" else "{")
            elif tok.type in ("RPAR", "RBRACE") and brackets:
                brackets.pop()
            yield tok
            last = tok
        if last is not None and self.final_newline:  # every file ends its last statement
            yield held or Token.new_borrow_pos("_NL", "\n", last)


@cache
def _parser(start: str) -> Lark:
    """The LALR parser (lexer "basic": the post-lexer looks ahead, which a contextual lexer
    cannot follow); one per start symbol, whose post-lexer ends the last line or not."""
    return Lark_StandAlone(postlex=_Layout(final_newline=start == "start"))


def parse(text: str, file: str = "<string>") -> ast.Module:
    """Parse one .se file."""
    text = source.line_ends(text)
    tree = _run(text, file, "start")
    items = _to_ast(tree, file)
    return ast.Module(
        file=file,
        uses=tuple(i for i in items if isinstance(i, ast.Use)),
        blocks=tuple(i for i in items if isinstance(i, ast.BlockDef) and not i.is_network),
        networks=tuple(i for i in items if isinstance(i, ast.BlockDef) and i.is_network),
        se=tuple(i for i in items if isinstance(i, ast.SeSection)),
        comments=comments(text, file),
    )


# A string or a comment: the lexer's STRING and COMMENT. In a file that lexes, a `#` outside a
# string starts a comment, and a `"` outside a comment starts a string that ends on its line.
_STRING_OR_COMMENT = re.compile(r'"[^"\n]*"|#[^\n]*')


def comments(text: str, file: str) -> tuple[ast.Comment, ...]:
    """The comments of a text that lexes, with their places (the lexer drops them)."""
    found = []
    for m in _STRING_OR_COMMENT.finditer(text):
        if m.group().startswith("#"):
            start = text.rfind("\n", 0, m.start()) + 1
            line = text.count("\n", 0, m.start()) + 1
            col = m.start() - start + 1
            body = m.group().rstrip()
            own_line = not text[start:m.start()].strip(" \t\f")
            after = _BLANKS_AND_COMMENTS.match(text, m.end())
            closes = after is not None and text.startswith("}", after.end())
            span = Span(file, line, col, line, col + len(body))
            found.append(ast.Comment(body, span, own_line, closes))
    return tuple(found)


_BLANKS_AND_COMMENTS = re.compile(r"(?:[ \t\f\r\n\\]|#[^\n]*)*")


def parse_expr(text: str, file: str = "<command line>") -> ast.Expr:
    """Parse one expression, e.g. the value of `--set ratio=8`."""
    tree = _run(text, file, "expr")
    result: ast.Expr = _to_ast(tree, file)
    return result


def _run(text: str, file: str, start: str) -> Tree[Any]:
    if len(text) > limits.current().spec_bytes:
        raise limits.exceeded(f"{file} is too large for a spec", "spec_bytes",
                              Span(file, 1, 1, 1, 2))
    source.check_text(text, file)
    text = source.line_ends(text)
    try:
        tree = _parser(start).parse(text, start=start)
    except UnexpectedInput as err:
        raise _syntax_error(err, text, file) from None
    _check_depth(tree, file)
    return tree


def _to_ast(tree: Tree[Any], file: str) -> Any:
    """The AST; a SpecError raised while building it (a number too large) comes out as is."""
    try:
        return _ToAst(file).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, SpecError):
            raise err.orig_exc from None
        raise


def _check_depth(tree: Tree[Any], file: str) -> None:
    """Refuse a syntax tree nested past the depth limit before anything recurses over it
    (`- - - - x`, `a + b + ... + z`, `{ { { ... } } }`); a stack instead of recursion here."""
    limit = limits.current().depth
    stack: list[tuple[Tree[Any], int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            meta = node.meta
            line, col = getattr(meta, "line", 1), getattr(meta, "column", 1)
            raise limits.exceeded("this is nested too deeply", "depth",
                                  Span(file, line, col, line, col + 1),
                                  "split it up: bind parts to names, or define a block")
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))


# --- lark errors -> SpecError ---------------------------------------------------------------

_DESCRIBE = {
    "NAME": "a name",
    "NUMBER": "a number",
    "SHAPE": "a shape like 3x224x224",
    "STRING": 'a string in "quotes"',
    "_NL": "the end of the line",
    "$END": "the end of the file",
    "COMPARE": "a comparison",
    "DIV_OP": "`/`, `//`, `%`",
}
_ENDS = {"_NL": "end of line", "$END": "end of file"}  # "unexpected end of line; expected ..."
_EXPRESSION_STARTS = {"NAME", "NUMBER", "SHAPE", "STRING", "LPAR", "LBRACE", "MINUS", "NOT",
                      "TRUE", "FALSE", "RESIDUAL", "PARALLEL", "IF"}


def _describe(terminal: str) -> str:
    if terminal in _DESCRIBE:
        return _DESCRIBE[terminal]
    pattern = _parser("start").get_terminal(terminal).pattern.value
    return f"`{pattern}`"


def _expected(names: set[str]) -> str:
    names = {n for n in names if not n.startswith("__")}
    words = []
    if len(names & _EXPRESSION_STARTS) >= 4:
        names -= _EXPRESSION_STARTS
        words.append("an expression")
    words += sorted(_describe(n) for n in names)
    if not words:
        return ""
    if len(words) > 6:
        return "; expected " + ", ".join(words[:6]) + ", ..."
    listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    return "; expected " + listed


def _syntax_error(err: UnexpectedInput, text: str, file: str) -> SpecError:
    line, col = max(err.line, 1), max(err.column, 1)
    if isinstance(err, UnexpectedCharacters):
        pos = err.pos_in_stream or 0
        char = text[pos] if pos < len(text) else "?"
        char = char if char.isprintable() else f"U+{ord(char):04X}"
        span = Span(file, line, col, line, col + 1)
        return SpecError(f"unexpected character `{char}`", span)
    if isinstance(err, UnexpectedToken):
        tok = err.token
        what = _ENDS.get(tok.type, f"`{tok.value}`")
        end = (tok.end_column or col + 1) if tok.type not in ("_NL", "$END") else col + 1
        span = Span(file, line, col, line, end)
        hint = _hint_for(tok, err.expected) or _open_paren(text, tok, err.expected)
        return SpecError(f"unexpected {what}" + _expected(set(err.expected)), span, hint)
    if isinstance(err, UnexpectedEOF):
        # lines as the lexer counts them (\f is no line break); the last, without its newline
        lines = (text[:-1] if text.endswith("\n") else text).split("\n")  # text: line_ends
        end = len(lines[-1].rstrip("\r")) + 1
        span = Span(file, len(lines), end, len(lines), end + 1)
        return SpecError("unexpected end of file" + _expected(set(err.expected)), span)
    return SpecError(str(err), Span(file, line, col, line, col + 1))


def _open_paren(text: str, tok: Token, expected: set[str]) -> str | None:
    """Where the `(` that a `)` was expected for was opened."""
    if "RPAR" not in expected or tok.type == "RPAR":
        return None
    opened: list[int] = []
    end = len(text) if tok.start_pos is None else tok.start_pos
    for i, ch in enumerate(text[:end]):
        if ch == "(":
            opened.append(i)
        elif ch == ")" and opened:
            opened.pop()
    if not opened:
        return None
    line = text.count("\n", 0, opened[-1]) + 1
    col = opened[-1] - (text.rfind("\n", 0, opened[-1]) + 1) + 1
    return f"the `(` at line {line}, column {col} is never closed"


def _hint_for(tok: Token, expected: set[str]) -> str | None:
    if tok.type == "LPAR" and "RPAR" not in expected:
        return "a call has no space before `(`, and a sequence cannot continue with `(`"
    if tok.type == "NUMBER" and "_NL" in expected:
        return "layers in a sequence are names or calls; numbers go inside `( )`"
    return None


# --- lark tree -> AST ----------------------------------------------------------------------


def _unquote(tok: Token) -> str:
    return str(tok)[1:-1]


def _check_use_path(path: str, span: Span) -> None:
    """A `use` path names a file: no control characters (a NUL cannot reach the OS), not empty,
    not longer than any file system allows."""
    bad = next((ch for ch in path if ord(ch) < 32 or ord(ch) == 127), None)
    if bad is not None:
        raise SpecError(f"a `use` path cannot hold the control character U+{ord(bad):04X}", span)
    if not path.strip():
        raise SpecError("a `use` path cannot be empty", span, 'e.g. use "lib/resnet.se"')
    if len(path) > limits.MAX_PATH or any(len(p.encode()) > 255 for p in path.split("/")):
        raise SpecError(f"this `use` path is too long (at most {limits.MAX_PATH} characters, "
                        "255 bytes a name)", span)


@v_args(meta=True)
class _ToAst(Transformer[Token, Any]):  # type: ignore[misc]  # lark's, generated
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _span(self, meta: Any) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.file, 1, 1, 1, 1)
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tok(self, tok: Token) -> Span:
        return Span(self.file, tok.line or 1, tok.column or 1,
                    tok.end_line or tok.line or 1, tok.end_column or (tok.column or 1) + 1)

    # items
    def start(self, meta: Any, items: list[Any]) -> list[Any]:
        return items

    def use(self, meta: Any, c: list[Token]) -> ast.Use:
        path = _unquote(c[0])
        _check_use_path(path, self._tok(c[0]))
        return ast.Use(path, self._span(meta))

    def block(self, meta: Any, c: list[Any]) -> ast.BlockDef:
        return ast.BlockDef(str(c[0]), c[1], c[2], self._span(meta))

    def network(self, meta: Any, c: list[Any]) -> ast.BlockDef:
        return ast.BlockDef(str(c[0]), c[1], c[2], self._span(meta), is_network=True)

    def params(self, meta: Any, c: list[ast.Param]) -> tuple[ast.Param, ...]:
        return tuple(c)

    def param(self, meta: Any, c: list[Any]) -> ast.Param:
        choices = c.pop(1) if len(c) > 1 and isinstance(c[1], tuple) else ()
        return ast.Param(str(c[0]), c[1] if len(c) > 1 else None, self._span(meta), choices)

    def choices(self, meta: Any, c: list[ast.Expr]) -> tuple[ast.Expr, ...]:
        return tuple(c)

    # statements
    def body(self, meta: Any, c: list[ast.Stmt]) -> tuple[ast.Stmt, ...]:
        return tuple(c)

    def bind(self, meta: Any, c: list[Any]) -> ast.Bind:
        source = c.pop(1) if isinstance(c[1], ast.From) else None
        return ast.Bind(str(c[0]), c[1], self._span(meta), self._tok(c[0]), source)

    def place(self, meta: Any, c: list[Any]) -> ast.Place:
        source = c.pop(0) if isinstance(c[0], ast.From) else None
        return ast.Place(c[0], self._span(meta), source)

    def sources(self, meta: Any, c: list[ast.Name]) -> ast.From:
        return ast.From(tuple(c), self._span(meta))

    def source(self, meta: Any, c: list[Token]) -> ast.Name:
        return ast.Name(str(c[0]), self._tok(c[0]))

    def input(self, meta: Any, c: list[Token]) -> ast.Input:
        return ast.Input(self._dims(c[0]), self._span(meta))

    def if_stmt(self, meta: Any, c: list[Any]) -> ast.If:
        orelse = c[2] if len(c) > 2 else ()
        if isinstance(orelse, ast.If):
            orelse = (orelse,)
        return ast.If(c[0], c[1], orelse, self._span(meta))

    # expressions
    def seq(self, meta: Any, c: list[ast.Expr]) -> ast.Seq:
        return ast.Seq(tuple(c), self._span(meta))

    def repeat(self, meta: Any, c: list[Any]) -> ast.BinOp:
        return ast.BinOp("*", c[0], c[2], self._span(meta))

    def name(self, meta: Any, c: list[Token]) -> ast.Name:
        return ast.Name(str(c[0]), self._tok(c[0]))

    def cond(self, meta: Any, c: list[ast.Expr]) -> ast.Cond:
        return ast.Cond(c[0], c[1], c[2], self._span(meta))

    def or_(self, meta: Any, c: list[ast.Expr]) -> ast.BinOp:
        return ast.BinOp("or", c[0], c[1], self._span(meta))

    def and_(self, meta: Any, c: list[ast.Expr]) -> ast.BinOp:
        return ast.BinOp("and", c[0], c[1], self._span(meta))

    def not_(self, meta: Any, c: list[ast.Expr]) -> ast.UnaryOp:
        return ast.UnaryOp("not", c[0], self._span(meta))

    def neg(self, meta: Any, c: list[Any]) -> ast.UnaryOp:
        return ast.UnaryOp("-", c[1], self._span(meta))

    def compare(self, meta: Any, c: list[Any]) -> ast.BinOp:
        return ast.BinOp(str(c[1]), c[0], c[2], self._span(meta))

    def binop(self, meta: Any, c: list[Any]) -> ast.BinOp:
        return ast.BinOp(str(c[1]), c[0], c[2], self._span(meta))

    def number(self, meta: Any, c: list[Token]) -> ast.Number:
        span = self._tok(c[0])
        return ast.Number(numbers.literal(str(c[0]), span), span, str(c[0]))

    def shape(self, meta: Any, c: list[Token]) -> ast.ShapeLit:
        return ast.ShapeLit(self._dims(c[0]), self._tok(c[0]))

    def _dims(self, tok: Token) -> tuple[int, ...]:
        return tuple(numbers.dimension(d, self._tok(tok)) for d in str(tok).split("x"))

    def string(self, meta: Any, c: list[Token]) -> ast.String:
        return ast.String(_unquote(c[0]), self._tok(c[0]))

    def true(self, meta: Any, c: list[Any]) -> ast.Bool:
        return ast.Bool(True, self._span(meta))

    def false(self, meta: Any, c: list[Any]) -> ast.Bool:
        return ast.Bool(False, self._span(meta))

    def call(self, meta: Any, c: list[Any]) -> ast.Call:
        return ast.Call(str(c[0]), tuple(c[1:]), self._span(meta), self._tok(c[0]))

    def positional(self, meta: Any, c: list[Any]) -> ast.Arg:
        return ast.Arg(None, c[0], self._span(meta))

    def keyword(self, meta: Any, c: list[Any]) -> ast.Arg:
        return ast.Arg(str(c[0]), c[1], self._span(meta))

    def call_args(self, meta: Any, c: list[ast.Arg]) -> list[ast.Arg]:
        return c  # a list, where bodies are tuples

    def group(self, meta: Any, c: list[Any]) -> ast.Group:
        return ast.Group(c[0], self._span(meta))

    def residual(self, meta: Any, c: list[Any]) -> ast.Residual:
        args = tuple(c.pop(0)) if isinstance(c[0], list) else ()
        shortcut = c[1] if len(c) > 1 else None
        end = self._span(meta)
        return ast.Residual(args, c[0], shortcut, end, end if shortcut is not None else None)

    def parallel(self, meta: Any, c: list[Any]) -> ast.Parallel:
        return ast.Parallel(str(c[0]), c[1], self._span(meta), self._tok(c[0]))

    # the se section
    def se(self, meta: Any, c: list[Any]) -> ast.SeSection:
        body = c[0]
        settings = tuple(s for s in body if isinstance(s, ast.Setting))
        rules = tuple(r for r in body if isinstance(r, ast.Rule))
        return ast.SeSection(settings, rules, self._span(meta))

    def se_body(self, meta: Any, c: list[Any]) -> list[Any]:
        return c

    def setting(self, meta: Any, c: list[Any]) -> ast.Setting:
        return ast.Setting(str(c[0]), c[1], self._span(meta))

    def se_word(self, meta: Any, c: list[Any]) -> ast.Name:
        return ast.Name("se", self._span(meta))

    def at_rule(self, meta: Any, c: list[Any]) -> ast.Rule:
        return self._rule("at", meta, c)

    def after_rule(self, meta: Any, c: list[Any]) -> ast.Rule:
        return self._rule("after", meta, c)

    def _rule(self, where: str, meta: Any, c: list[Any]) -> ast.Rule:
        target, (ranges, kinds) = c[0], c[1]
        settings = c[2] if len(c) > 2 else ()
        return ast.Rule(where, target[0], ranges, kinds, settings, self._span(meta))

    def selection(self, meta: Any,
                  c: list[Any]) -> tuple[tuple[ast.PathRange, ...], tuple[str, ...]]:
        ranges = tuple(x for x in c if isinstance(x, ast.PathRange))
        kinds = tuple(str(x) for x in c if isinstance(x, Token))
        return ranges, kinds

    def range(self, meta: Any, c: list[Any]) -> ast.PathRange:
        return ast.PathRange(c[0][0], c[1][0] if len(c) > 1 else None, self._span(meta))

    def path(self, meta: Any, c: list[Token]) -> tuple[str, Span]:
        return "".join(str(t) for t in c), self._span(meta)

    def rule_settings(self, meta: Any, c: list[ast.Setting]) -> tuple[ast.Setting, ...]:
        return tuple(c)
