"""`use`: the blocks a spec can call, found on the spec search path and parsed once each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

from sedsl import files, limits
from sedsl.errors import Span, SpecError
from sedsl.language import ast, source
from sedsl.language.parse import parse
from sedsl.language.paths import LIBRARY_ROOT
from sedsl.record import Record


class Library(Record):
    """The blocks a spec can call: its own and those of the files it `use`s."""

    blocks: dict[str, ast.BlockDef]


def search_path(path: str, extra: list[str | Path] | None) -> list[Path]:
    """Where a spec's `use` looks: its own folder, the caller's folders, sedsl's block library."""
    own = Path(path).parent if path != "<string>" else Path.cwd()
    return [own, *map(Path, extra or []), LIBRARY_ROOT]


# Reads a `use`d file: (its path, the name errors give it, the `use` line) -> (text, tree).
Reader: TypeAlias = Callable[[Path, str, Span], tuple[str, ast.Module]]


def read_file(path: Path, name: str, span: Span) -> tuple[str, ast.Module]:
    """The text of a `use`d file, and its syntax tree: read and parsed afresh (the language
    server passes a reader that keeps them)."""
    text = source.read_spec(path, span)
    return text, parse(text, name)


def load_library(module: ast.Module, roots: list[Path], sources: dict[str, str],
                 read: Reader = read_file) -> Library:
    """The module's blocks and those of everything it `use`s; read texts land in `sources`."""
    try:
        roots = [files.resolve(r) for r in roots]
        stack = [files.resolve(Path(module.file))]
    except files.Unusable as err:
        raise SpecError(f"cannot look up the spec search path: {err.reason}",
                        Span(module.file, 1, 1, 1, 1)) from None
    return Library(_blocks(module, roots, sources, stack, read))


def _blocks(module: ast.Module, roots: list[Path], sources: dict[str, str],
            stack: list[Path], read: Reader) -> dict[str, ast.BlockDef]:
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
        sources[name], imported = read(target, name, use.span)
        if imported.networks or imported.se:
            raise SpecError(f"{use.path} is a spec, not a block library", use.span,
                            "a file that is `use`d may define blocks only")
        nested = _blocks(imported, [target.parent, *roots[1:]], sources, [*stack, target], read)
        for b in nested.values():
            _define(blocks, b)
    for b in module.blocks:
        _define(blocks, b)
    return blocks


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
    """The file a `use` names: the first root (resolved already) that holds it, followed through
    its symlinks, which must not lead out of the roots."""
    if Path(use.path).is_absolute():
        raise SpecError("imports are relative to the spec search path", use.span,
                        f'e.g. use "lib/{Path(use.path).name}"')
    for root in roots:
        try:
            candidate = files.resolve(root / use.path)
        except files.Unusable as err:
            raise SpecError(f"cannot use `{use.path}`: {err.reason}", use.span) from None
        if not any(candidate.is_relative_to(r) for r in roots):
            raise SpecError(f"`{use.path}` leaves the spec search path", use.span,
                            "imports may not reach outside the spec's folder and the library")
        if files.is_file(candidate):
            return candidate
    searched = [_display(r) if r != LIBRARY_ROOT.resolve() else "sedsl's block library"
                for r in roots]
    raise SpecError(f"cannot find `{use.path}`", use.span, "searched " + ", ".join(searched))
