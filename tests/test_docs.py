"""Every ```se example in docs/ compiles (and every spec in specs/ does, see test_specs)."""

import re
from pathlib import Path

import pytest

import sedsl

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [
    (doc.name, i, block)
    for doc in sorted((ROOT / "docs").glob("*.md"))
    for i, block in enumerate(re.findall(r"```se\n(.*?)```", doc.read_text(), re.S))
]


@pytest.mark.parametrize(("doc", "index", "text"), EXAMPLES,
                         ids=[f"{d}#{i}" for d, i, _ in EXAMPLES])
def test_example_compiles(doc: str, index: int, text: str) -> None:
    if "network" not in text:  # a block library fragment: give it a network to live in
        text += "\nnetwork probe { input 3x32x32\n conv(8, 3) }\n"
    net = sedsl.loads(text, path=str(ROOT / "specs" / f"{doc}-{index}.se"))
    assert net.graph.number_of_nodes() > 1
