"""The Pygments lexer and the TextMate grammar for `.se`: word lists equal to the grammar's
keywords, the op table and the built-in functions; every spec lexes without errors; the entry
point is declared."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pygments import lex
from pygments.token import Error, Keyword, Name, Number, Operator, Token

from sedsl.ir.ops import OPS
from sedsl.language import lexer
from sedsl.language.evaluate import BUILTINS
from tests.conftest import ROOT, SPECS

GRAMMAR_WORDS = set(re.findall(r'"([a-z]+)"', (ROOT / "grammars/sedsl.lark").read_text()))
TEXTMATE = json.loads((ROOT / "editors/sedsl.tmLanguage.json").read_text())


def test_word_lists_follow_the_grammar_and_op_table() -> None:
    assert set(lexer.KEYWORDS) | set(lexer.WORD_OPERATORS) | set(lexer.CONSTANTS) | {"se"} == \
        GRAMMAR_WORDS
    assert set(lexer.OPS) == {name for name, op in OPS.items() if op.user}
    assert set(lexer.FUNCTIONS) == set(BUILTINS)


def _tokens(text: str) -> list[tuple[object, str]]:
    return [(t, v) for t, v in lex(text, lexer.SedslLexer()) if v.strip()]


def test_every_spec_lexes_without_errors() -> None:
    for path in [*SPECS.glob("*.se"), *SPECS.glob("lib/*.se")]:
        text = path.read_text()
        tokens = list(lex(text, lexer.SedslLexer()))
        assert not [v for t, v in tokens if t in Error], path
        assert "".join(v for _, v in tokens) == text  # nothing dropped or invented


def test_tokens() -> None:
    text = ('use "lib/resnet.se"\nnetwork net(ceil = true) {\n  input 3x224x224\n'
            "  conv(64, 7, stride = 2) bn relu\n  x = max(ceil, 2.5e-1) // 2\n}\n"
            "se {\n  at residual.end in conv2..conv5 of bottleneck\n}\n")
    tokens = _tokens(text)
    assert (Keyword.Declaration, "network") in tokens and (Name.Function, "net") in tokens
    assert (Name, "ceil") in tokens  # a parameter that shares a built-in's name
    assert (Name.Builtin, "max") in tokens and (Name.Builtin, "relu") in tokens
    assert (Number.Integer, "3x224x224") in tokens and (Number.Float, "2.5e-1") in tokens
    assert (Keyword.Declaration, "se") in tokens and (Keyword, "residual") in tokens
    assert (Operator, "//") in tokens and (Operator, "..") in tokens
    assert (Token.Literal.String.Double, '"lib/resnet.se"') in tokens


def _textmate_words(key: str) -> set[str]:
    found: set[str] = set()
    for rule in TEXTMATE["repository"][key].get("patterns", [TEXTMATE["repository"][key]]):
        m = re.match(r"\\b\(([a-z0-9_|]+)\)", rule["match"])
        if m:
            found |= set(m.group(1).split("|"))
    return found


def test_textmate_grammar_matches_the_lexer() -> None:
    """The editor grammar lists the tables' words (`python editors/update_words.py` rewrites it)."""
    assert TEXTMATE["scopeName"] == "source.sedsl" and "se" in TEXTMATE["fileTypes"]
    assert _textmate_words("keyword") == set(lexer.KEYWORDS) - {"block", "network"} | set(
        lexer.WORD_OPERATORS)
    assert _textmate_words("builtin") == set(lexer.OPS) | set(lexer.FUNCTIONS) | {"parallel"}
    assert _textmate_words("constant") == set(lexer.CONSTANTS)
    for rule in TEXTMATE["repository"].values():  # every pattern is a valid regex
        for r in rule.get("patterns", [rule]):
            re.compile(r["match"], re.MULTILINE)


def test_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pyproject's entry point, as an installed distribution would publish it, makes Pygments
    pick the lexer for `*.se` and the name `sedsl`."""
    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib needs Python 3.11)
    section = pyproject.split('[project.entry-points."pygments.lexers"]\n', 1)[1].split("\n\n")[0]
    declared = dict(re.findall(r'^(\w+) = "([\w.:]+)"$', section, re.MULTILINE))
    assert declared == {"sedsl": "sedsl.language.lexer:SedslLexer"}
    dist = tmp_path / "sedsl_probe-0.dist-info"  # what pip writes for the entry point
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sedsl-probe\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(
        "[pygments.lexers]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items()))
    monkeypatch.syspath_prepend(str(tmp_path))
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename

    assert isinstance(get_lexer_for_filename("specs/se_resnet50.se"), lexer.SedslLexer)
    assert isinstance(get_lexer_by_name("sedsl"), lexer.SedslLexer)


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_errors_are_highlighted_without_changing_their_text() -> None:
    """On a terminal the CLI shows errors through highlight_error: every error of the corpus
    keeps its text exactly once the escapes are gone, and its spec line is coloured."""
    rendered = [p.read_text().rstrip("\n") for p in sorted((ROOT / "tests/errors").glob("*.err"))]
    assert len(rendered) > 30
    coloured = 0
    for text in rendered:
        shown = lexer.highlight_error(text)
        assert ANSI.sub("", shown) == text
        source = [line for line in shown.split("\n")[1:] if re.match(r"\d+ \| ", line)]
        coloured += bool(source and ANSI.search(source[0]))
    assert coloured > len(rendered) // 2
