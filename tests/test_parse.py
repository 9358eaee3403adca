"""The grammar and the parser: conflict-free LALR, the tree maps onto the AST, layout rules."""

from __future__ import annotations

import hashlib
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from lark import Lark

from sedsl.errors import SpecError
from sedsl.language import ast
from sedsl.language.parse import _parser, parse, parse_expr

ROOT = Path(__file__).resolve().parents[1]
GRAMMAR = ROOT / "grammars" / "sedsl.lark"


def test_grammar_is_conflict_free() -> None:
    for start in ("start", "expr"):  # raises on any shift/reduce conflict or terminal collision
        Lark(GRAMMAR.read_text(), parser="lalr", lexer="basic", strict=True, start=start)


def test_the_generated_parser_is_current() -> None:
    """sedsl/language/_lalr.py was generated from the grammar as it is now."""
    first = (ROOT / "sedsl" / "language" / "_lalr.py").read_text().split("\n", 1)[0]
    digest = hashlib.sha256(GRAMMAR.read_text().encode()).hexdigest()
    assert f"sha256 {digest}" in first, \
        "grammars/sedsl.lark changed: run `python grammars/generate_parser.py`"


def test_the_generated_parser_stands_alone() -> None:
    """No relative import is left in it (lark's `from .lexer import Token` would reach
    sedsl.language.lexer, the Pygments lexer): its errors build their tokens from its own
    classes."""
    from sedsl.language import _lalr

    source = (ROOT / "sedsl" / "language" / "_lalr.py").read_text()
    assert not re.search(r"^\s*from \.", source, re.M)
    assert isinstance(_lalr.UnexpectedEOF(["NAME"]).token, _lalr.Token)


def test_the_generated_parser_gives_lark_s_trees() -> None:
    """The stand-alone parser and lark's own, built from the grammar, agree on every spec and
    error-corpus file in the repository (trees, and where each one fails)."""
    from sedsl.language.parse import _Layout

    specs = sorted([*ROOT.glob("specs/**/*.se"), *ROOT.glob("tests/errors/*.se")])
    assert len(specs) > 30
    for start in ("start", "expr"):
        lark = Lark(GRAMMAR.read_text(), parser="lalr", lexer="basic", start=start,
                    propagate_positions=True, maybe_placeholders=False,
                    postlex=_Layout(final_newline=start == "start"))
        texts = [p.read_text() for p in specs] if start == "start" else \
            ["1 + 2 * x", "f(a, b = 2) if c else -d", "3x224x224", "(1, 2", "not"]
        ours = _parser(start)
        for text in texts:
            assert _outcome(lark.parse, text) == \
                _outcome(lambda t, ours=ours, start=start: ours.parse(t, start=start), text)


def _outcome(parse_text: Any, text: str) -> Any:
    """The tree as plain data (rule, token type, value, line, column), or where it failed."""
    def plain(node: Any) -> Any:
        if hasattr(node, "children"):
            children = [plain(c) for c in node.children]
            return str(node.data), node.meta.line, node.meta.column, children
        return node.type, str(node), node.line, node.column

    try:
        return plain(parse_text(text))
    except Exception as err:  # the two parsers raise their own (equal) classes
        return type(err).__name__, getattr(err, "line", None), getattr(err, "column", None)


def body(text: str) -> tuple[ast.Stmt, ...]:
    return parse(f"block b {{\n{text}\n}}").blocks[0].body


def test_sequence_of_calls_and_names() -> None:
    (stmt,) = body("conv(64, 3, stride = 2) bn relu")
    assert isinstance(stmt, ast.Place) and isinstance(stmt.value, ast.Seq)
    conv, bn, relu = stmt.value.items
    assert isinstance(conv, ast.Call) and conv.func == "conv"
    assert [a.name for a in conv.args] == [None, None, "stride"]
    assert isinstance(bn, ast.Name) and bn.id == "bn" and isinstance(relu, ast.Name)


def test_arithmetic_precedence_and_exact_numbers() -> None:
    e = parse_expr("planes * base_width / 64 * groups + 1")
    assert isinstance(e, ast.BinOp) and e.op == "+"
    left = e.left
    assert isinstance(left, ast.BinOp) and left.op == "*"
    assert parse_expr("0.17") == ast.Number(Fraction(17, 100), parse_expr("0.17").span)
    neg = parse_expr("-2 * 3")
    assert isinstance(neg, ast.BinOp) and isinstance(neg.left, ast.UnaryOp)


def test_repetition_binds_to_its_term() -> None:
    (stmt,) = body("conv(8, 3) bn * 2 relu")
    assert isinstance(stmt, ast.Place) and isinstance(stmt.value, ast.Seq)
    items = stmt.value.items
    assert len(items) == 3 and isinstance(items[1], ast.BinOp) and items[1].op == "*"


def test_layout_rules() -> None:
    stmts = body("""
conv(64,
     3)   # arguments span lines
if x { a }
else { b }
residual { c }
shortcut { d }
e; f = g""")
    kinds = [type(s).__name__ for s in stmts]
    assert kinds == ["Place", "If", "Place", "Place", "Bind"]
    res = stmts[2]
    assert isinstance(res, ast.Place) and isinstance(res.value, ast.Residual)
    assert res.value.shortcut is not None


def test_se_section() -> None:
    module = parse("""se {
  ratio = 16
  at residual.end in conv2..conv5, head of bottleneck { ratio = 8, bias = false }
  after relu2 in conv4.block1..block3
}""")
    (section,) = module.se
    assert [s.name for s in section.settings] == ["ratio"]
    at, after = section.rules
    assert (at.where, at.target, at.kinds) == ("at", "residual.end", ("bottleneck",))
    assert [(r.first, r.last) for r in at.ranges] == [("conv2", "conv5"), ("head", None)]
    assert [s.name for s in at.settings] == ["ratio", "bias"]
    assert (after.where, after.target) == ("after", "relu2")


def test_spans_point_at_the_source() -> None:
    (stmt,) = body("  conv(64, 3) bnn")
    assert isinstance(stmt, ast.Place) and isinstance(stmt.value, ast.Seq)
    bnn = stmt.value.items[1]
    assert (bnn.span.line, bnn.span.col, bnn.span.end_col) == (2, 15, 18)


@pytest.mark.parametrize(("text", "line", "col", "message"), [
    ("network n {\n  conv(64, 3\n}", 3, 1, "unexpected `}`; expected `)` or `,`"),
    ("network n {\n  a = = 3\n}", 2, 7, "unexpected `=`"),
    ("block b { x }}", 1, 14, "unexpected `}`"),
    ("network n { @ }", 1, 13, "unexpected character `@`"),
    ('use lib/resnet.se', 1, 5, "unexpected `lib`"),
])
def test_syntax_errors(text: str, line: int, col: int, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse(text, "t.se")
    span = caught.value.span
    assert span is not None and (span.line, span.col) == (line, col)
    assert caught.value.message.startswith(message)
