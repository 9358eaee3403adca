"""How numbers, shapes and lists of blocks read in hovers, inlay hints and code lenses."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sedsl.ir.ops import Arg
from sedsl.lsp.facts import Cost
from sedsl.targets.report import human

_COPY = re.compile(r"(.*)\.block([0-9]+)$")


def shape(dims: Sequence[int] | None) -> str:
    return "x".join(map(str, dims)) if dims else "?"


def exact(n: int) -> str:
    """7891328 -> '7,891,328 (7.89M)'."""
    return f"{n:,}" + (f" ({human(n)})" if abs(n) >= 1000 else "")


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:+.2f}%" if whole else "n/a"


def overhead(extra: Cost, base: Cost, convention: str) -> str:
    """'+2.53M params (+9.90%), +2.51M FLOPs (+0.06%)': what SE blocks add to the base."""
    return (f"+{human(extra.se_params)} params ({pct(extra.se_params, base.params)}), "
            f"+{human(extra.se_flops)} FLOPs ({pct(extra.se_flops, base.flops)}, {convention})")


def blocks(n: int) -> str:
    return f"{n} SE block{'' if n == 1 else 's'}"


def compress(names: Sequence[str]) -> str:
    """conv2.block1, conv2.block2, conv2.block3, conv3.block1 -> 'conv2.block1..block3,
    conv3.block1'."""
    out: list[str] = []
    run: tuple[str, int, int] | None = None
    for name in [*names, ""]:
        m = _COPY.match(name)
        if m and run and m.group(1) == run[0] and int(m.group(2)) == run[2] + 1:
            run = (run[0], run[1], int(m.group(2)))
            continue
        if run:
            first = f"{run[0]}.block{run[1]}"
            out.append(first if run[1] == run[2] else f"{first}..block{run[2]}")
            run = None
        if m:
            run = (m.group(1), int(m.group(2)), int(m.group(2)))
        elif name:
            out.append(name)
    return ", ".join(out)


def arg_text(a: Arg) -> str:
    """An op argument as its signature shows it: `stride = 1`, `c_out`."""
    if a.derived:
        return f"{a.name} = (derived)"
    if a.default is None:
        return a.name
    value: Any = a.default
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, tuple):
        value = value[0] if len(set(value)) == 1 else "x".join(map(str, value))
    return f"{a.name} = {value}"
