"""The size estimate before elaboration (sedsl.compile.estimate): a lower bound on what the
elaborator counts, so that a network past the node limit is refused from its syntax, at the
repeat that multiplies it, and no network the elaborator would build is refused.
bench/fuzz.py checks the bound on every input that compiles; bench/estimate.py times it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import sedsl
from sedsl import limits
from sedsl.compile import estimate
from sedsl.compile.elaborate import Elaborator, elaborate
from sedsl.language import source
from sedsl.language.library import load_library, search_path
from sedsl.language.parse import parse
from tests.conftest import SPECS

SHIPPED = sorted(p for p in SPECS.rglob("*.se") if "lib" not in p.parts)


def counted(text: str, path: str = "<string>", **overrides: object) -> tuple[int, int]:
    """(what the elaborator counted, the estimate) for a spec that compiles."""
    module = parse(text, path)
    library = load_library(module, search_path(path, None), {path: text})
    made: list[Elaborator] = []

    def elaborator(lib: object) -> Elaborator:
        made.append(Elaborator(library))
        return made[-1]

    elaborate(module, library, overrides, None, elaborator)  # type: ignore[arg-type]
    el = made[0]
    net = module.networks[0]
    bound = estimate.least(net, el.evaluator.parameters(net, overrides), el.evaluator)
    assert bound is not None
    return el.budget.steps, bound.nodes


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(SPECS)) for p in SHIPPED])
def test_a_lower_bound_on_every_shipped_spec(path: Path) -> None:
    steps, least = counted(source.read_spec(path), str(path))
    assert least <= steps
    assert least >= steps // 2  # and close enough to matter


@pytest.mark.parametrize(("spec", "overrides"), [
    ("efficientnet.se", {"size": "b7"}), ("regnet_y.se", {"size": "128gf"}),
    ("se_resnet50.se", {"layout": "timm"}), ("ecaresnet50d.se", {"layout": "b"})])
def test_a_lower_bound_whatever_the_parameters(spec: str, overrides: dict[str, str]) -> None:
    steps, least = counted(source.read_spec(SPECS / spec), str(SPECS / spec), **overrides)
    assert least <= steps


@pytest.mark.parametrize("body", [
    "b(4) * (c_in // 2)",  # a count known only where it is placed: 1
    "if c_in > 8 { b(4) * 5 } else { bn }",  # a condition known only when placed: the smaller
    "x = if c_in > 1 then 3 else 1\n  bn * x",
    "b(4, stride = 2) * 3",  # copies after the first reset the stride (first_copy_only)
    "s = parallel concat { l = b(2) * 2; r = { bn relu } }",
    "residual(scale = 0.5) { b(4) * 2 } shortcut { identity }",
    "act * 3",  # a layer bound to a parameter
])
def test_what_the_syntax_does_not_give_counts_least(body: str) -> None:
    text = ("block b(c, stride = 1) {\n  if stride == 1 { conv(c, 3) bn relu * 2 } else { bn }\n"
            f"}}\nblock outer(act) {{\n  {body}\n}}\n"
            "network n(act = relu) {\n  input 4x8x8\n  o = outer(act) * 2\n}\n")
    steps, least = counted(text)
    assert 1 <= least <= steps


ISSUE = """block l0 { conv(8, 3) bn relu }
block l1 { l0 * 10 }
block l2 { l1 * 10 }
block l3 { l2 * 10 }
block l4 { l3 * 100 }
network n {
  input 8x8x8
  l4 * 10
}
"""


def test_a_repeat_that_multiplies_past_the_limit_is_refused_where_it_stands() -> None:
    """Issue 21's spec (`* 100` where `* 10` was meant) was refused after elaborating ~10^5
    nodes; now before elaborating any, at the largest count, naming every factor."""
    start = time.perf_counter()
    with pytest.raises(sedsl.SpecError) as caught:
        sedsl.loads(ISSUE, path="issue.se")
    assert time.perf_counter() - start < 2.0  # bench/estimate.py: a few ms
    e = caught.value
    assert e.span is not None and (e.span.line, e.span.col) == (5, 12)  # `l3 * 100`
    assert e.message == ("this repeat would give the network at least 5,222,021 nodes "
                         "(the limit is 1,000,000)")
    assert e.hint is not None and e.hint.startswith(
        "the repeats that multiply it, outermost first: * 10 at issue.se:8:3, * 100 at "
        "issue.se:5:12, * 10 at issue.se:4:12")


def test_a_million_nodes_by_nested_repeats_is_refused_at_once() -> None:
    text = "network n {\n  input 3x8x8\n  { { bn relu * 100 } * 100 } * 100\n}\n"
    start = time.process_time()
    with pytest.raises(sedsl.SpecError, match="at least 1,040,201 nodes"):
        sedsl.loads(text)
    assert time.process_time() - start < 1.0


def test_the_limit_is_unchanged() -> None:
    """The estimate refuses only above the limit the elaborator enforces, and a raised limit
    lets the same network through."""
    text = "block b { bn relu }\nnetwork n {\n  input 3x8x8\n  s = b * 40\n}\n"
    assert counted(text) == (161, 161)  # the repeat, and per copy the block, its sequence, 2 ops
    with limits.raised(nodes=161):
        assert sedsl.loads(text).ir.number_of_nodes() == 81
    with limits.raised(nodes=160), pytest.raises(sedsl.SpecError, match="at least 161 nodes"):
        sedsl.loads(text)


def test_many_layers_without_a_repeat() -> None:
    with limits.raised(nodes=50), pytest.raises(sedsl.SpecError) as caught:
        sedsl.loads("network n {\n  input 3x8x8\n  " + "bn " * 60 + "\n}\n")
    assert caught.value.message == "the network would have at least 61 nodes (the limit is 50)"
