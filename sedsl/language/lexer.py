"""A Pygments lexer for `.se` specs, registered as the `pygments.lexers` entry point `sedsl`, so
rich, Sphinx and mkdocs highlight specs (```sedsl fences, `*.se` files). Imports Pygments and
the op table (no torch, no lark); tests/test_lexer.py keeps its word lists equal to the grammar's
keywords and the built-ins."""

from __future__ import annotations

from typing import ClassVar

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Text,
    Whitespace,
)

from sedsl.ir.ops import MERGES as _MERGES
from sedsl.ir.ops import OPS as _OPS

# The grammar's keywords (grammars/sedsl.lark); `se` is one only before its section's `{`.
KEYWORDS = ("use", "block", "network", "input", "from", "if", "then", "else", "residual",
            "shortcut", "parallel", "at", "after", "in", "of")
WORD_OPERATORS = ("and", "or", "not")
CONSTANTS = ("true", "false")
# The ops a spec may call, from the op table (torch-free and light: a new op or activation of the
# vocabulary is highlighted without an edit here); the numeric built-ins (tests/test_lexer.py
# keeps them equal to sedsl.language.evaluate's); the merges `parallel` takes.
OPS = tuple(sorted(name for name, op in _OPS.items() if op.user))
FUNCTIONS = ("abs", "ceil", "floor", "make_divisible", "max", "min", "round")
MERGES = tuple(_MERGES)


class SedslLexer(RegexLexer):  # type: ignore[misc]  # pygments ships no types
    """Lexer for sedsl specs (.se): blocks, networks, layers and the se section."""

    name = "sedsl"
    aliases: ClassVar[list[str]] = ["sedsl", "se"]  # docs fence specs as ```se
    filenames: ClassVar[list[str]] = ["*.se"]
    mimetypes: ClassVar[list[str]] = ["text/x-sedsl"]
    url = "https://github.com/sedsl/sedsl"

    tokens: ClassVar[dict[str, list[object]]] = {
        "root": [
            (r"[\t \f]+", Whitespace),
            (r"\r?\n|\r", Whitespace),
            (r"\\[\t \f]*\r?\n", Text),  # a backslash continues the line
            (r"#[^\n]*", Comment.Single),
            (r'"[^"\n]*"', String.Double),
            (r"\b(block|network)(\s+)([A-Za-z_]\w*)",
             bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            (r"\b(parallel)(\s+)(concat|add)\b", bygroups(Keyword, Whitespace, Name.Builtin)),
            (r"\bse(?=\s*\{)", Keyword.Declaration),
            (words(KEYWORDS, prefix=r"\b", suffix=r"\b"), Keyword),
            (words(WORD_OPERATORS, prefix=r"\b", suffix=r"\b"), Operator.Word),
            (words(CONSTANTS, prefix=r"\b", suffix=r"\b"), Keyword.Constant),
            (words(OPS, prefix=r"\b", suffix=r"\b(?!\s*=[^=])"), Name.Builtin),  # not `relu = ..`
            (words(FUNCTIONS, prefix=r"\b", suffix=r"(?=\()"), Name.Builtin),  # only when called
            (r"[0-9]+(x[0-9]+)+\b", Number.Integer),  # a shape: 3x224x224
            (r"[0-9]+\.[0-9]+([eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+", Number.Float),
            (r"[0-9]+", Number.Integer),
            (r"[A-Za-z_]\w*", Name),
            (r"==|!=|<=|>=|//|\.\.|[<>+\-*/%=]", Operator),
            (r"[(){},;.:|]", Punctuation),
        ],
    }


# --- errors on a terminal -----------------------------------------------------------------------

_RED, _BOLD, _CYAN, _RESET = "\x1b[31m", "\x1b[1m", "\x1b[36m", "\x1b[0m"


def highlight_error(rendered: str) -> str:
    """A rendered SpecError for a terminal: the header in bold, the spec line highlighted as
    sedsl, the caret in red, the hint in cyan. Without the escapes it is `rendered` exactly."""
    from pygments import highlight
    from pygments.formatters import TerminalFormatter

    out = []
    for i, line in enumerate(rendered.split("\n")):
        gutter, bar, code = line.partition(" | ")
        if i == 0:
            out.append(f"{_BOLD}{line}{_RESET}")
        elif bar and gutter.strip().isdigit():
            code = highlight(code, SedslLexer(), TerminalFormatter()).rstrip("\n")
            out.append(f"{gutter}{bar}{code}")
        elif bar and not gutter.strip() and set(code.strip()) == {"^"}:
            out.append(f"{gutter}{bar}{_RED}{code}{_RESET}")
        elif line.startswith("hint: "):
            out.append(f"{_CYAN}{line}{_RESET}")
        else:
            out.append(line)
    return "\n".join(out)
