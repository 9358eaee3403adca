"""Rewrite the word lists of editors/sedsl.tmLanguage.json from sedsl's own tables: the ops a
spec can call (the op table, through sedsl.language.lexer) and the built-in functions. Run it
after adding an op or an activation; tests/test_lexer.py fails until the grammar is current.

    python editors/update_words.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sedsl.language import lexer  # noqa: E402  (the checkout's sedsl, not an installed one)

GRAMMAR = ROOT / "editors" / "sedsl.tmLanguage.json"
LISTS = {"support.function.op.sedsl": lexer.OPS, "support.function.builtin.sedsl": lexer.FUNCTIONS}


def main() -> None:
    text = GRAMMAR.read_text()  # edited as text, so that the file keeps its layout
    for scope, words in LISTS.items():
        pattern = re.compile(r'("name": "' + re.escape(scope) + r'",\s*"match": "\\\\b\()'
                             r"[a-z0-9_|]+(\))")
        joined = "|".join(sorted(words))
        text, n = pattern.subn(lambda m, w=joined: m.group(1) + w + m.group(2), text)
        assert n == 1, f"no word list for {scope} in {GRAMMAR}"
    json.loads(text)  # still JSON
    GRAMMAR.write_text(text)
    print(f"wrote {GRAMMAR.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
