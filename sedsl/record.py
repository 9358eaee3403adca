"""Frozen value records made cheaply: what `@dataclass(frozen=True)` gives (a constructor from
the annotated fields, value equality and hashing, a repr, no assignment), without generating and
compiling six methods per class. Each frozen dataclass costs ~1 ms to create on a small VM, and a
command-line run of `sedsl cost` pays it for every class it imports; the 26 syntax-tree classes
(`sedsl.language.ast`) are Records for that reason. Type checkers see dataclasses (PEP 681)."""

from __future__ import annotations

import inspect
import sys
from dataclasses import FrozenInstanceError
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING or sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # Python 3.10: the marker only informs type checkers
    def dataclass_transform(**_: Any) -> Any:
        return lambda cls: cls

@dataclass_transform(eq_default=True, frozen_default=True)
class Record:
    """Subclass with annotated fields (and defaults, trailing) to get a frozen record."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = [n for n, t in inspect.get_annotations(cls).items()
               if not str(t).startswith(("ClassVar", "typing.ClassVar"))]
        cls._fields = (*cls._fields, *own)
        cls._defaults = {**cls._defaults,
                         **{n: cls.__dict__[n] for n in own if n in cls.__dict__}}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields, name = self._fields, type(self).__name__
        if len(args) > len(fields):
            raise TypeError(f"{name}() takes {len(fields)} arguments, got {len(args)}")
        values = dict(zip(fields, args, strict=False))
        if kwargs or len(args) < len(fields):
            for field in fields[len(args):]:
                if field in kwargs:
                    values[field] = kwargs.pop(field)
                elif field in self._defaults:
                    values[field] = self._defaults[field]
                else:
                    raise TypeError(f"{name}() missing argument {field!r}")
            if kwargs:
                raise TypeError(f"{name}() got an unexpected or repeated argument "
                                f"{next(iter(kwargs))!r}")
        object.__setattr__(self, "__dict__", values)

    def _values(self) -> tuple[Any, ...]:
        return tuple(self.__dict__[n] for n in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={self.__dict__[n]!r}" for n in self._fields)
        return f"{type(self).__name__}({inner})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


R = TypeVar("R", bound=Record)


def replace(rec: R, **changes: Any) -> R:
    """A copy of `rec` with some fields changed, as dataclasses.replace does for dataclasses."""
    unknown = set(changes) - set(rec._fields)
    if unknown:
        raise TypeError(f"{type(rec).__name__} has no field {sorted(unknown)[0]!r}")
    return type(rec)(**{**rec.__dict__, **changes})


def asdict(rec: Record) -> dict[str, Any]:
    """The fields of `rec` as a dict (one level: nested records stay records)."""
    return {n: rec.__dict__[n] for n in rec._fields}
