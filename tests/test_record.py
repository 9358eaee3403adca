"""sedsl.record.Record behaves as @dataclass(frozen=True): the same constructor, equality,
hash, repr and immutability, checked against Python's own dataclasses on the same fields."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from sedsl.language import ast
from sedsl.record import Record


class Point(Record):
    x: int
    y: str
    kind: ClassVar[str] = "point"  # not a field
    z: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class PointDC:
    x: int
    y: str
    kind: ClassVar[str] = "point"
    z: tuple[int, ...] = ()


CASES = [((1, "a"), {}), ((1,), {"y": "a"}), ((), {"x": 1, "y": "a", "z": (2,)}),
         ((1, "a", (3, 4)), {})]


@pytest.mark.parametrize(("args", "kwargs"), CASES)
def test_the_same_as_a_frozen_dataclass(args: tuple, kwargs: dict) -> None:
    ours, theirs = Point(*args, **kwargs), PointDC(*args, **kwargs)
    assert [getattr(ours, f.name) for f in dataclasses.fields(theirs)] == \
        [getattr(theirs, f.name) for f in dataclasses.fields(theirs)]
    assert repr(ours).replace("Point(", "") == repr(theirs).replace("PointDC(", "")
    assert hash(ours) == hash(theirs)  # both hash the tuple of field values
    assert ours == Point(*args, **kwargs) and ours != PointDC(*args, **kwargs)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ours.x = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del ours.y  # type: ignore[misc]


@pytest.mark.parametrize(("args", "kwargs"), [((), {}), ((1,), {}), ((1, "a", (), 4), {}),
                                              ((1, "a"), {"x": 2}), ((1, "a"), {"w": 0})])
def test_bad_calls_fail_as_they_do_for_a_dataclass(args: tuple, kwargs: dict) -> None:
    with pytest.raises(TypeError):
        PointDC(*args, **kwargs)
    with pytest.raises(TypeError):
        Point(*args, **kwargs)


def test_syntax_nodes_compare_by_value_and_type() -> None:
    span = ast.Span("f.se", 1, 1, 1, 2)
    assert ast.Name("x", span) == ast.Name(id="x", span=span)
    assert ast.Name("x", span) != ast.String("x", span)  # same fields, other node
    assert len({ast.Name("x", span), ast.Name("x", span)}) == 1
    assert ast.BlockDef("b", (), (), span).is_network is False
