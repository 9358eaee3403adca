"""The printer (sedsl.language.printer): parse(unparse(parse(s))) == parse(s) with spans aside, on
every shipped spec, the error corpus's files that parse and fuzzed specs; `fmt` is idempotent and
keeps every comment; minimal parentheses and exact numbers. `sedsl fmt`: tests/test_fmt.py."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

import sedsl
from sedsl.errors import SpecError
from sedsl.language import ast
from sedsl.language.ast import GENERATED
from sedsl.language.parse import parse, parse_expr
from sedsl.language.printer import (
    KEYWORDS,
    WIDTH,
    Unprintable,
    number_text,
    skeleton,
    unparse,
    unparse_expr,
)
from tests.conftest import ROOT, SPECS

SHIPPED = sorted(SPECS.rglob("*.se"))
CORPUS = sorted((ROOT / "tests" / "errors").rglob("*.se"))


def fmt(text: str, file: str = "<string>") -> str:
    return unparse(parse(text, file))


def assert_round_trip(text: str, file: str = "<string>") -> str:
    """The formatted text means the same, formats to itself, and keeps every comment."""
    module = parse(text, file)
    once = unparse(module)
    again = parse(once, file)
    assert skeleton(again) == skeleton(module)
    assert unparse(again) == once
    assert [c.text for c in again.comments] == [c.text for c in module.comments]
    return once


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(SPECS)) for p in SHIPPED])
def test_shipped_specs_round_trip(path: Path) -> None:
    text = path.read_text()
    assert assert_round_trip(text, str(path)) == text  # and they are formatted already


def parses(path: Path) -> bool:
    try:
        parse(path.read_text(encoding="utf-8-sig"), str(path))
    except (SpecError, UnicodeDecodeError):
        return False
    return True


VALID = [p for p in CORPUS if parses(p)]


@pytest.mark.parametrize("path", VALID, ids=[p.name for p in VALID])
def test_the_error_corpus_round_trips(path: Path) -> None:
    assert_round_trip(path.read_text(encoding="utf-8-sig"), str(path))


def test_fuzzed_specs_round_trip() -> None:
    """Seeded grammar walks and mutated specs (bench/fuzz.py), those that parse."""
    from bench.fuzz import generate

    done = 0
    for seed in range(1500):
        text, path, _ = generate(seed)
        if not isinstance(text, str):  # bytes for a file, or a file attack: no text to print
            continue
        try:
            parse(text, path)
        except SpecError:
            continue
        assert_round_trip(text, path)
        done += 1
    assert done > 300


# --- comments and layout -------------------------------------------------------------------------

COMMENTED = """\
# a header
# on two lines

use "lib/resnet.se"  # the library

# a block
block b(c_out, stride = 1) {   # aligned
  conv(c_out, 3, stride = stride) bn relu   # after a statement
  # before the residual unit
  residual {
    conv(c_out, 3) bn
    # the end of the residual branch
  } shortcut {
    project(c_out, stride)
  }

  relu  # last
  # before the brace
}

network n(classes = 10) {
  input 3x32x32
  stem  = { conv(16, 3) bn relu }
  stage = b(32, stride = 2) * 2
  if classes > 10 { fc = linear(classes) } else { fc = linear(10) }  # either way
}

se {
  ratio = 4  # small
  at residual.end in stage { ratio = 8, bias = false }
  # the last word
}
# the end
"""


def test_comments_stay_in_place() -> None:
    assert assert_round_trip(COMMENTED) == COMMENTED


def test_comments_inside_expressions_go_to_the_end_of_the_statement() -> None:
    text = "network n {\n  input 3x8x8\n  conv(8,  # channels\n       3)  # kernel\n}\n"
    assert assert_round_trip(text) == \
        "network n {\n  input 3x8x8\n  conv(8, 3)  # channels\n  # kernel\n}\n"


def test_canonical_spacing_and_statements() -> None:
    text = "network n(a=1,b = 2) { input 3x8x8; x=a*(b+1)\n conv( 8,3 ,stride=2)bn relu }\n"
    assert fmt(text) == ("network n(a = 1, b = 2) {\n  input 3x8x8\n  x = a * (b + 1)\n"
                         "  conv(8, 3, stride = 2) bn relu\n}\n")


def test_long_lines_wrap_as_the_shipped_specs_do() -> None:
    calls = " ".join(f"conv(c{i}, 3, padding = 1, bias = bias) bn relu" for i in range(3))
    args = ", ".join(f"argument{i} = {i}" for i in range(12))
    cond = " else ".join(f'if size == "b{i}" then {i}.5' for i in range(8)) + " else 9"
    text = f"network n {{\n  input 3x8x8\n  x = {calls}\n  y = f({args})\n  z = {cond}\n}}\n"
    out = assert_round_trip(text)
    assert all(len(line) <= WIDTH for line in out.splitlines())
    lines = out.splitlines()
    assert lines[2].endswith("bn relu \\") and lines[3] == " " * 6 + "conv(c1, 3, padding = 1, " \
        "bias = bias) bn relu \\"
    assert lines[5].startswith("  y = f(argument0 = 0,") and lines[6].startswith(" " * 8 + "arg")
    assert any(line.startswith(" " * 6 + "else if") for line in lines)


def test_allowed_values_print_and_wrap() -> None:
    """`name: a | b = default`: spaced, and a long list wraps under its first value."""
    text = 'network n(a:"x"|"y"="x", b: 1|-2|(3+1), c: 3x3 | 1x7) { input 3x8x8 }\n'
    assert fmt(text) == ('network n(a: "x" | "y" = "x", b: 1 | -2 | (3 + 1), c: 3x3 | 1x7) '
                         "{ input 3x8x8 }\n")
    sizes = " | ".join(f'"size{i}"' for i in range(14))
    out = assert_round_trip(f"network n(classes = 10, size: {sizes} = \"size0\") {{\n"
                            "  input 3x8x8\n}\n")
    lines = out.splitlines()
    assert all(len(line) <= WIDTH for line in lines) and lines[1].endswith("|")
    assert lines[2].startswith(" " * lines[1].index('"size0"') + '"size')


def test_one_line_bodies_stay_on_one_line_and_others_do_not() -> None:
    text = ("block a { conv(8, 3) bn }\n\nblock b {\n  conv(8, 3) bn\n}\n\nnetwork n {\n"
            "  input 3x8x8\n  x = residual { a }\n  y = residual {\n    b\n  }\n"
            "  if true { a } else { b }\n}\n")
    assert assert_round_trip(text) == text


def test_alignment_is_kept_where_the_author_aligned() -> None:
    text = ("network n {\n  input 3x8x8\n  a = 1\n  stem  = conv(8, 3)\n  conv2 = conv(8, 3)\n"
            "  head = linear(10)\n}\n")
    assert assert_round_trip(text) == text
    ragged = text.replace("stem  =", "stem   =").replace("conv2 =", "conv2  =")
    assert fmt(ragged) == text


def test_blank_lines_are_kept_once() -> None:
    text = "network n {\n  input 3x8x8\n\n\n\n  conv(8, 3)\n}\nblock b { relu }\n"
    assert fmt(text) == "network n {\n  input 3x8x8\n\n  conv(8, 3)\n}\n\nblock b { relu }\n"


# --- expressions ---------------------------------------------------------------------------------

EXPRESSIONS = [
    "a + b * c", "(a + b) * c", "a - (b - c)", "a - b - c", "-(a + b)", "--a", "-a * b",
    "not (a and b)", "not a and b", "a or b and c", "(a or b) and c", "(a == b) == c",
    "a == b + 1", "if a then b else if c then d else e", "if (if a then b else c) then d else e",
    "(if a then b else c) + 1", "f(a b, x = c d)", "(a b) c", "conv(8, 3) bn * 2 relu",
    "bn * (n + 1)", "x // 2 % 3", "a * (b / c)", "{ a; b = c }", "residual(scale = 0.17) { a }",
    "residual { a } shortcut { b }", "parallel concat { a; b }", "{}", "1e-3", "1.0", "0.5",
    '"lib/resnet.se"', "3x224x224", "true", "a * -b",
]


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_expressions_print_as_written(text: str) -> None:
    assert unparse_expr(parse_expr(text)) == text


def n(value: int | Fraction) -> ast.Number:
    return ast.Number(Fraction(value), GENERATED)


def nm(x: str) -> ast.Name:
    return ast.Name(x, GENERATED)


def binop(op: str, left: ast.Expr, right: ast.Expr) -> ast.BinOp:
    return ast.BinOp(op, left, right, GENERATED)


@pytest.mark.parametrize(("tree", "text"), [
    (binop("*", binop("+", nm("a"), nm("b")), nm("c")), "(a + b) * c"),
    (binop("-", nm("a"), binop("-", nm("b"), nm("c"))), "a - (b - c)"),
    (binop("-", binop("-", nm("a"), nm("b")), nm("c")), "a - b - c"),
    (binop("*", nm("a"), n(-2)), "a * -2"),
    (binop("**" if False else "//", n(Fraction(1, 3)), nm("b")), "1 / 3 // b"),
    (binop("*", nm("a"), n(Fraction(1, 3))), "a * (1 / 3)"),
    (ast.UnaryOp("-", n(Fraction(-5, 2)), GENERATED), "--2.5"),
])
def test_trees_a_program_made_get_the_parentheses_they_need(tree: ast.Expr, text: str) -> None:
    assert unparse_expr(tree) == text
    assert skeleton(parse_expr(text)) == skeleton(parse_expr(unparse_expr(parse_expr(text))))


@pytest.mark.parametrize("value", [Fraction(0), Fraction(7), Fraction(1, 1000), Fraction(17, 100),
                                   Fraction(1, 3), Fraction(-2, 7), Fraction(25, 10**7),
                                   Fraction(123456789, 1000), Fraction(10**14 - 1)])
def test_numbers_print_exactly(value: Fraction) -> None:
    text, _ = number_text(value)
    net = sedsl.loads(f"network n(v = {text}) {{ input 3x8x8\n conv(8, 1) }}")
    assert net is not None
    e = parse_expr(text)
    assert _value(e) == value


def _value(e: ast.Expr) -> Fraction:
    if isinstance(e, ast.Number):
        return e.value
    if isinstance(e, ast.UnaryOp):
        return -_value(e.operand)
    assert isinstance(e, ast.BinOp) and e.op == "/"
    return _value(e.left) / _value(e.right)


def test_numbers_keep_their_spelling() -> None:
    assert fmt("network n(a = 1.0, b = 1e-3, c = 0.100) { input 3x8x8 }\n") == \
        "network n(a = 1.0, b = 1e-3, c = 0.100) { input 3x8x8 }\n"


def test_what_the_language_cannot_say_is_refused() -> None:
    for tree in (nm("if"), nm("a-b"), ast.String('say "hi"', GENERATED),
                 ast.Seq((nm("a"), n(2)), GENERATED)):
        with pytest.raises(Unprintable):
            unparse_expr(tree)


def test_a_module_a_program_made() -> None:
    conv = ast.Call("conv", (ast.Arg(None, n(8), GENERATED), ast.Arg(None, n(3), GENERATED),
                             ast.Arg("stride", n(2), GENERATED)), GENERATED, GENERATED)
    unit = ast.Residual((), (ast.Place(ast.Seq((conv, nm("bn")), GENERATED), GENERATED),), None,
                        GENERATED, None)
    net = ast.BlockDef("n", (), (ast.Input((3, 8, 8), GENERATED),
                                 ast.Bind("x", unit, GENERATED, GENERATED)), GENERATED, True)
    module = ast.Module("<made>", (), (), (net,), (),
                        (ast.Comment("# made by a test", GENERATED),))
    text = unparse(module)
    assert text == ("# made by a test\n\nnetwork n {\n  input 3x8x8\n  x = residual {\n"
                    "    conv(8, 3, stride = 2) bn\n  }\n}\n")
    assert skeleton(parse(text).networks) == skeleton(module.networks)


def test_the_se_variant_word() -> None:
    text = "se {\n  variant = se\n  at residual.end { variant = se, ratio = 8 }\n}\n"
    assert assert_round_trip(text) == text


def test_the_keywords_are_the_grammars() -> None:
    """No NAME can be one of the grammar's words; the printer refuses them as names."""
    import re

    grammar = (ROOT / "grammars" / "sedsl.lark").read_text()
    assert set(re.findall(r'"([a-z_]+)"', grammar)) == KEYWORDS
