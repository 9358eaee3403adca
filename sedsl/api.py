"""The Python interface: `sedsl.load(path, **overrides)` -> Network."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from sedsl import ast, limits, passes
from sedsl.elaborate import Library, Value, elaborate
from sedsl.errors import NOWHERE, Span, SpecError
from sedsl.parse import parse
from sedsl.paths import LIBRARY_ROOT
from sedsl.se import SeConfig

if TYPE_CHECKING:
    from torch import nn

    from sedsl.cost import Cost


@dataclass(frozen=True)
class Network:
    """A compiled spec: the SE network's graph, the base network's graph, and the sources."""

    graph: nx.DiGraph  # the SE network: what the spec describes
    base: nx.DiGraph  # the same spec with SE switched off
    se: SeConfig
    sources: Mapping[str, str]  # file -> text of every file the spec read

    @property
    def name(self) -> str:
        return str(self.graph.graph["name"])

    def to_torch(self, fused: bool = True, se: bool = True, device: str | None = None,
                 check_memory: bool = True) -> nn.Module:
        """A torch.nn.Module mirroring the spec; `fused` runs each SE block as one op.

        `device="meta"` builds any size without allocating. Otherwise the parameters' memory is
        estimated first, and a network that would not fit is refused unless `check_memory` is
        False."""
        import torch

        from sedsl.lower import build_module

        cost = self.cost()
        params = cost.se.params if se else cost.base.params
        limits.check_parameter_memory(self.name, params, device, check_memory)
        with torch.device(device) if device is not None else _no_device():
            return build_module(self.graph if se else self.base, fused=fused)

    def source(self, fused: bool = False, se: bool = True) -> str:
        """Standalone PyTorch source defining `class Model(nn.Module)` (the build's model.py)."""
        from sedsl.lower import generate

        return generate(self.graph if se else self.base, fused=fused)

    def cost(self, convention: str = "fvcore") -> Cost:
        """Parameters and FLOPs of the base and SE networks, per node (see docs/cost_model.md)."""
        from sedsl.cost import analyse

        return analyse(self.base, self.graph, convention)


def load(path: str | Path, *, input: tuple[int, ...] | str | None = None,
         search_path: list[str | Path] | None = None, **overrides: Any) -> Network:
    """Compile the spec at `path`; keyword arguments override top-level parameters."""
    path = Path(path)
    text = limits.read_spec(path)  # a regular UTF-8 file of bounded size, or a SpecError
    return loads(text, path=str(path), input=input, search_path=search_path, **overrides)


def loads(text: str, *, path: str = "<string>", input: tuple[int, ...] | str | None = None,
          search_path: list[str | Path] | None = None, **overrides: Any) -> Network:
    """Compile spec text; `path` names it in errors and anchors its relative imports."""
    sources: dict[str, str] = {path: text}
    try:
        module = parse(text, path)
        roots = [Path(path).parent if path != "<string>" else Path.cwd(),
                 *map(Path, search_path or []), LIBRARY_ROOT]
        library = Library(_blocks(module, roots, sources, [Path(path).resolve()]))
        values = {k: to_value(v, k) for k, v in overrides.items()}
        if input is not None:
            values["input"] = to_value(input, "input")
        shape = values.pop("input", None)
        if isinstance(shape, Fraction) and shape.denominator == 1:
            shape = (int(shape),)  # a square input size
        if shape is not None and not isinstance(shape, tuple):
            raise SpecError("input takes 224, 320x240 or 3x320x240", NOWHERE)
        done = elaborate(module, library, values, shape)
        graph = passes.run(done.graph, passes.PIPELINE)
        base = passes.verify(done.graph)
    except SpecError as err:
        raise err.attach(sources) from None
    return Network(graph, base, done.se, sources)


def to_value(value: Any, name: str) -> Value:
    """A Python or command-line value as a spec value: numbers are exact, `3x224x224` a shape."""
    if isinstance(value, bool):
        return value
    if isinstance(value, tuple):
        return tuple(limits.dimension(str(d), NOWHERE) for d in value)
    if isinstance(value, int | float):
        return limits.python_number(value, NOWHERE)
    if isinstance(value, str):
        text = value.strip()
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if all(part.isdigit() for part in lowered.split("x")) and "x" in lowered:
            return tuple(limits.dimension(p, NOWHERE) for p in lowered.split("x"))
        number = limits.number_value(text, NOWHERE)
        return text if number is None else number
    raise SpecError(f"cannot use {value!r} as the value of `{name}`", NOWHERE)


def _blocks(module: ast.Module, roots: list[Path], sources: dict[str, str],
            stack: list[Path]) -> dict[str, ast.BlockDef]:
    """The module's blocks and those of everything it `use`s, transitively."""
    blocks: dict[str, ast.BlockDef] = {}
    for use in module.uses:
        target = _resolve(use, roots)
        if target in stack:
            chain = " -> ".join(p.name for p in [*stack, target])
            raise SpecError(f"import cycle: {chain}", use.span, "remove one of the `use` lines")
        name = _display(target)
        if name in sources:
            continue  # already loaded through another `use`
        limits.use_depth(len(stack), use.span)
        sources[name] = text = limits.read_spec(target, use.span)
        imported = parse(text, name)
        if imported.networks or imported.se:
            raise SpecError(f"{use.path} is a spec, not a block library", use.span,
                            "a file that is `use`d may define blocks only")
        nested = _blocks(imported, [target.parent, *roots[1:]], sources, [*stack, target])
        for b in nested.values():
            _define(blocks, b)
    for b in module.blocks:
        _define(blocks, b)
    return blocks


@contextmanager
def _no_device() -> Iterator[None]:
    yield


def _display(path: Path) -> str:
    """A path as errors show it: relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _define(blocks: dict[str, ast.BlockDef], block: ast.BlockDef) -> None:
    if block.name in blocks and blocks[block.name] is not block:
        first = blocks[block.name].span
        raise SpecError(f"block `{block.name}` is defined twice (first at {first})", block.span)
    blocks[block.name] = block


def _resolve(use: ast.Use, roots: list[Path]) -> Path:
    if Path(use.path).is_absolute():
        raise SpecError("imports are relative to the spec search path", use.span,
                        f'e.g. use "lib/{Path(use.path).name}"')
    for root in roots:
        candidate = (root / use.path).resolve()
        if not any(candidate.is_relative_to(r.resolve()) for r in roots):
            raise SpecError(f"`{use.path}` leaves the spec search path", use.span,
                            "imports may not reach outside the spec's folder and the library")
        if limits.is_file(candidate):
            return candidate
    searched = [_display(r) if r != LIBRARY_ROOT else "sedsl's block library" for r in roots]
    raise SpecError(f"cannot find `{use.path}`", use.span, "searched " + ", ".join(searched))


__all__ = ["Network", "Span", "load", "loads"]
