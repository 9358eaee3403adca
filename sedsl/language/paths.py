"""Where the packaged grammar and block library live: inside the wheel, or in the source tree."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # sedsl/


def packaged(relative: str) -> Path:
    """`grammars/sedsl.lark` or `specs`: the copy in the wheel if installed, else the repo's."""
    inside = _PACKAGE / relative
    return inside if inside.exists() else _PACKAGE.parent / relative


GRAMMAR = packaged("grammars/sedsl.lark")
# The spec root that holds `lib/`: a spec anywhere can `use "lib/resnet.se"`.
LIBRARY_ROOT = packaged("specs")
