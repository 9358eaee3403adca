"""One document compiled by the compiler's own stages (parse, library, elaborate, passes), off
the event loop and cancellable, with what the editor features need to map lines to nodes: which
top-level statement and which call placed which nodes.

`analyse` runs in the server's worker thread. It checks a cancel flag before each stage and at
every node the elaborator places (the elaborator's node budget is where a large network spends
its time), so a superseded compile stops within a node. Parsed library files are kept, keyed by
path, modification time, size and inode (or by the text of an open editor buffer), so an edit
re-parses and re-elaborates the edited document only."""

from __future__ import annotations

import logging
import os
import stat
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sedsl import limits
from sedsl.compile import passes
from sedsl.compile.elaborate import Elaborator, Scope, Tensor, elaborate
from sedsl.errors import NOWHERE, Span, SpecError
from sedsl.ir.graph import Graph
from sedsl.ir.se import SeConfig
from sedsl.language import ast, numbers
from sedsl.language.evaluate import BlockCall, Env, Value, to_value
from sedsl.language.library import Library, load_library, read_file, search_path
from sedsl.language.parse import parse
from sedsl.record import Record

log = logging.getLogger("sedsl.lsp")


class Settings(Record):
    """What the editor configures (docs/editors.md, "Settings")."""

    overrides: tuple[tuple[str, str], ...] = ()  # `sedsl.set`: as `--set NAME=VALUE`
    search_path: tuple[str, ...] = ()  # `sedsl.searchPath`: folders `use` also looks in
    convention: str = "fvcore"  # `sedsl.convention`: how FLOPs are counted
    debounce_ms: int = 100  # `sedsl.debounceMs`: quiet time after an edit before compiling


class Snapshot(Record):
    """A document as one compile sees it."""

    uri: str
    path: str  # the name spans give it: its file path (or the URI when it has none)
    version: int
    text: str
    settings: Settings
    overlays: Mapping[str, str]  # resolved path -> text of every open document


class Cancelled(Exception):
    """A newer version of the document superseded this compile."""


class Statement(Record):
    """A top-level statement of the network and the base-graph nodes it placed."""

    stmt: ast.Bind | ast.Place
    start: int  # index of its first node in the base graph's node order
    end: int  # one past its last
    output: str  # the node whose tensor it outputs


@dataclass
class Network:
    """The compiled network, as `sedsl.loads` would make it, plus the maps back to the text."""

    base: Graph
    se_graph: Graph
    config: SeConfig
    statements: list[Statement]
    calls: dict[Span, list[tuple[int, int]]]  # block call span -> node index ranges it placed
    params: dict[str, Value]  # the network's parameters, overrides applied


@dataclass
class Analysis:
    snapshot: Snapshot
    module: ast.Module | None = None  # None: the text does not parse
    library: Library | None = None  # None: a `use` failed
    sources: dict[str, str] = field(default_factory=dict)  # file name -> text, as errors name them
    origins: dict[str, Span] = field(default_factory=dict)  # library file -> the `use` here
    error: SpecError | None = None
    context: ast.Bind | ast.Place | None = None  # the statement being placed at the error
    network: Network | None = None
    bug: str | None = None  # a traceback: sedsl itself failed

    @property
    def version(self) -> int:
        return self.snapshot.version


# --- libraries --------------------------------------------------------------------------------


class LibraryCache:
    """Parsed `use`d files, kept across compiles (the worker thread is their only user)."""

    SIZE = 64

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple[Any, ...], tuple[str, ast.Module]] = OrderedDict()
        self.hits = self.misses = 0

    def reader(self, overlays: Mapping[str, str], origins: dict[str, Span],
               doc: str) -> Callable[[Path, str, Span], tuple[str, ast.Module]]:
        """A `sedsl.language.library.Reader` that reads open buffers first and remembers, per
        file, the `use` line of `doc` it was reached through."""
        def read(path: Path, name: str, span: Span) -> tuple[str, ast.Module]:
            origins.setdefault(name, span if span.file == doc else origins.get(span.file, span))
            return self.read(path, name, span, overlays)
        return read

    def read(self, path: Path, name: str, span: Span,
             overlays: Mapping[str, str]) -> tuple[str, ast.Module]:
        overlay = overlays.get(str(path))
        key = self._key(path, name, overlay)
        if key is None:
            return read_file(path, name, span)  # not a regular file: its own error
        if key in self.entries:
            self.hits += 1
            self.entries.move_to_end(key)
            return self.entries[key]
        self.misses += 1
        found = (overlay, parse(overlay, name)) if overlay is not None \
            else read_file(path, name, span)
        if overlay is not None:  # keep one version of an edited buffer, not every keystroke's
            for old in [k for k in self.entries if k[:2] == ("buffer", str(path))]:
                del self.entries[old]
        self.entries[key] = found
        if len(self.entries) > self.SIZE:
            self.entries.popitem(last=False)
        return found

    @staticmethod
    def _key(path: Path, name: str, overlay: str | None) -> tuple[Any, ...] | None:
        if overlay is not None:
            return ("buffer", str(path), name, overlay)
        try:
            info = os.stat(path)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        return ("file", str(path), name, info.st_mtime_ns, info.st_size, info.st_ino)


# --- the elaborator, recording ----------------------------------------------------------------


class _Budget(limits.Budget):
    """The node budget, which also stops the compile once it is superseded."""

    def __init__(self, cancel: threading.Event):
        super().__init__()
        self.cancel = cancel

    def step(self, span: Span) -> None:
        if self.cancel.is_set():
            raise Cancelled
        super().step(span)


class Recorder(Elaborator):
    """The compiler's elaborator, noting which statement and which block call placed which
    nodes (by their index in the graph's insertion order)."""

    def __init__(self, library: Library, cancel: threading.Event):
        super().__init__(library)
        self.budget = _Budget(cancel)
        self.statements: list[Statement] = []
        self.calls: dict[Span, list[tuple[int, int]]] = {}
        self.current: ast.Bind | ast.Place | None = None
        self.params: dict[str, Value] = {}

    def network(self, net: ast.BlockDef, overrides: Mapping[str, Value],
                input_shape: tuple[int, ...] | None) -> tuple[Graph, Env]:
        graph, env = super().network(net, overrides, input_shape)
        self.params = dict(env.values)
        return graph, env

    def statement(self, stmt: ast.Stmt, env: Env, x: Tensor, scope: Scope) -> Tensor:
        if scope.path or scope.calls or not isinstance(stmt, ast.Bind | ast.Place):
            return super().statement(stmt, env, x, scope)
        start, outer = len(self.graph), self.current
        self.current = stmt
        out = super().statement(stmt, env, x, scope)
        self.current = outer
        self.statements.append(Statement(stmt, start, len(self.graph), out.node))
        return out

    def _place_block(self, call: BlockCall, x: Tensor, scope: Scope) -> Tensor:
        start = len(self.graph)
        out = super()._place_block(call, x, scope)
        self.calls.setdefault(call.span, []).append((start, len(self.graph)))
        return out


# --- the compile --------------------------------------------------------------------------------


def analyse(snap: Snapshot, cache: LibraryCache, cancel: threading.Event,
            on_syntax: Callable[[Analysis], None] = lambda a: None) -> Analysis:
    """Compile a snapshot. Spec errors land in `.error`, a failure of sedsl itself in `.bug`;
    raises Cancelled only."""
    a = Analysis(snap, sources={snap.path: snap.text})
    recorder: list[Recorder] = []
    try:
        _syntax(a, cache, cancel)
        on_syntax(a)
        if a.module is not None and a.library is not None and _is_spec(a.module):
            a.network = _network(a, a.module, a.library, cancel, recorder)
    except Cancelled:
        raise
    except SpecError as err:
        a.error = err
        a.context = recorder[0].current if recorder else None
    except Exception:  # RecursionError and MemoryError too
        a.bug = traceback.format_exc()
        log.error("sedsl failed on %s (version %s):\n%s", snap.uri, snap.version, a.bug)
    if a.module is None or a.library is None:
        on_syntax(a)  # what there is, for the features that need the syntax only
    return a


def _syntax(a: Analysis, cache: LibraryCache, cancel: threading.Event) -> None:
    if cancel.is_set():
        raise Cancelled
    snap = a.snapshot
    a.module = parse(snap.text, snap.path)
    roots = search_path(snap.path, list(snap.settings.search_path))
    read = cache.reader(snap.overlays, a.origins, snap.path)
    a.library = load_library(a.module, roots, a.sources, read)


def _is_spec(module: ast.Module) -> bool:
    """A file with a network (or an se section) is a spec; one with blocks only, a library."""
    return bool(module.networks or module.se or not module.blocks)


def _network(a: Analysis, module: ast.Module, library: Library, cancel: threading.Event,
             recorder: list[Recorder]) -> Network:
    if cancel.is_set():
        raise Cancelled
    overrides = dict(a.snapshot.settings.overrides)
    shape = input_shape(overrides.pop("input", None))
    values = {k: to_value(v, k) for k, v in overrides.items()}

    def make(lib: Library) -> Recorder:
        recorder.append(Recorder(lib, cancel))
        return recorder[0]

    done = elaborate(module, library, values, shape, elaborator=make)
    if cancel.is_set():
        raise Cancelled
    graph = passes.run(done.graph, passes.pipeline(done.se))
    base = passes.verify(done.graph, "elaborate")
    rec = recorder[0]
    return Network(base, graph, done.se, rec.statements, rec.calls, rec.params)


def input_shape(text: str | None) -> tuple[int, ...] | None:
    """`input` as `sedsl.set` gives it: 224 (square), 320x240 or 3x320x240 (as `--input`)."""
    if text is None:
        return None
    parts = text.strip().lower().split("x")
    if 1 <= len(parts) <= 3 and all(p.isdigit() for p in parts):
        dims = tuple(numbers.dimension(p, NOWHERE) for p in parts)
        if min(dims) >= 1:
            return dims
    raise SpecError(f"input takes 224, 320x240 or 3x320x240, not {text}", NOWHERE)
