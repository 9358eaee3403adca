"""`sedsl build`, `check` and `graph`: compile a spec and write what it compiles to."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sedsl import extras, files
from sedsl.cli.app import (
    InputOption,
    SetOption,
    SpecArgument,
    _load,
    _spec_errors,
    _umask,
    _write_file,
    app,
    err,
    out,
)
from sedsl.cli.cost import _print_summary
from sedsl.errors import SedslError, UsageError

if TYPE_CHECKING:
    from sedsl.api import Network
    from sedsl.targets.cost import Cost


# --- build / check / graph ----------------------------------------------------------------------


@app.command()
def build(
    spec: Annotated[Path, typer.Argument(metavar="SPEC", help="The .se spec to compile.")],
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", metavar="DIR", help="Output folder (default: build/<network>).")] = None,
    sets: SetOption = None,
    input_size: InputOption = None,
    no_se: Annotated[bool, typer.Option(
        "--no-se", metavar="", help="Build the base network.")] = False,
    no_fuse: Annotated[bool, typer.Option(
        "--no-fuse", metavar="", help="Plain-torch SE blocks in model.py instead of the fused op.")
    ] = False,
) -> None:
    """Compile SPEC: write model.py, graph.json and summary.json, print the summary."""
    from sedsl.ir import serialize

    if output is not None:
        _check_build_target(output)  # before the work, not after
    with _spec_errors(), err().status("compiling", spinner="dots"):
        net = _load(spec, sets, input_size)
        graph = net.base_ir if no_se else net.ir
        cost = net.cost()
        written = {
            "model.py": net.source(fused=not no_fuse, se=not no_se),
            "graph.json": serialize.dumps(graph) + "\n",
            "summary.json": json.dumps(_summary(net, cost, spec, no_se), indent=1) + "\n",
        }
        folder = output or Path("build") / net.name
        _write_build(folder, written)
    _print_summary(cost, no_se)
    out().print(f"wrote {', '.join(str(folder / f) for f in written)}")


def _summary(net: Network, cost: Cost, spec: Path, no_se: bool) -> dict[str, Any]:
    doc = cost.to_json("stage")
    return {"spec": str(spec), "se": not no_se, "nodes": (net.base_ir if no_se else net.ir)
            .number_of_nodes(), **doc}


# What a build folder may hold for a new build to replace it: an earlier build's files, and
# the bytecode Python leaves beside a model.py it imported.
BUILD_FILES = frozenset({"model.py", "graph.json", "summary.json", "__pycache__"})


def _check_build_target(folder: Path) -> None:
    """-o must be absent, empty, or an earlier build: sedsl never deletes anything else; the
    folders above it must be folders (or not yet exist)."""
    try:
        files.check_folders(folder)
    except files.Unusable as err:
        raise typer.BadParameter(f"{files.shown(folder)}: {err.reason}", param_hint="-o") \
            from None
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise typer.BadParameter(f"{folder} exists and is not a folder", param_hint="-o")
    if folder.is_dir():
        others = sorted(p.name for p in folder.iterdir() if p.name not in BUILD_FILES)
        if others:
            raise typer.BadParameter(
                f"{folder} holds files that are not a sedsl build ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}); choose an empty or new folder",
                param_hint="-o")


def _write_build(folder: Path, written: dict[str, str]) -> None:
    """The build folder appears whole, or not at all, and an earlier build stays whole until
    the new one replaces it: the files are written into a temporary folder beside the target,
    which is then renamed into place (under a lock, so concurrent builds take turns)."""
    import shutil
    import tempfile

    parent = folder.parent
    staging: Path | None = None
    _check_build_target(folder)  # the default build/<network> too
    try:
        with _uninterrupted():  # a Ctrl-C between making the folder and owning it would leak it
            parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp",
                                            dir=parent))
        for name, text in written.items():
            (staging / name).write_text(text, encoding="utf-8")
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp made it private
        with _locked(parent), _uninterrupted():
            _check_build_target(folder)  # again: another build may have run meanwhile
            _rename_into_place(staging, folder)
    except OSError as e:
        raise SedslError(f"cannot write {files.shown(folder)}: {files.reason(e)}") from None
    finally:
        if staging is not None:  # gone already when the build succeeded
            with _uninterrupted():
                shutil.rmtree(staging, ignore_errors=True)


def _rename_into_place(staging: Path, folder: Path) -> None:
    """Move `staging` to `folder`; an earlier build there is moved aside first, and back if
    the new one cannot take its place."""
    import shutil
    import tempfile

    if not folder.exists():
        os.rename(staging, folder)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
    os.rename(folder, old)  # onto an empty folder: allowed, and atomic
    try:
        os.rename(staging, folder)
    except OSError:
        os.rename(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder` (POSIX flock on the directory itself: no lock file)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the renames alone
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def _uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C (and SIGTERM) back across a step that must not be cut (making or removing
    the staging folder, the renames); they are delivered afterwards."""
    import signal

    held = {signal.SIGINT, signal.SIGTERM}
    try:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError, OSError):  # no sigmask here (Windows)
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@app.command()
def check(spec: SpecArgument, sets: SetOption = None, input_size: InputOption = None) -> None:
    """Validate SPEC: parse, elaborate, infer every shape, apply the SE rules."""
    with _spec_errors():
        net = _load(spec, sets, input_size)
    from sedsl.ir import node

    blocks = {r.block for _, r in node.records(net.ir) if r.role == "se"}
    out().print(f"ok: {net.name}, {net.ir.number_of_nodes()} nodes, {len(blocks)} SE blocks, "
              f"output {'x'.join(map(str, node.record(net.ir, net.ir.graph['output']).shape))}")


@app.command()
def graph(
    spec: SpecArgument,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT",
                                     help="json, graphml, dot, svg or png.")] = "json",
    output: Annotated[Path | None, typer.Option("-o", "--output", metavar="FILE")] = None,
    sets: SetOption = None,
    no_se: Annotated[bool, typer.Option("--no-se", metavar="", help="The base network.")] = False,
    after: Annotated[str | None, typer.Option(
        "--after", metavar="PASS",
        help="The graph as this pass left it: elaborate, apply_se or fuse_se.")] = None,
    depth: Annotated[int | None, typer.Option(
        metavar="N", help="svg/png: one box per module path of N parts (1 stage, 2 block).")
    ] = None,
) -> None:
    """Export the graph IR of SPEC (node-link JSON, GraphML, Graphviz DOT) or draw it (SVG, PNG)."""
    from sedsl.ir import serialize

    with _spec_errors():
        net = _load(spec, sets)
        g = net.after(after or "apply_se")
        g = net.base_ir if no_se else g  # no SE blocks: every pass leaves the base graph as it is
        if fmt == "json":
            text = serialize.dumps(g) + "\n"
        elif fmt == "dot":
            text = serialize.to_dot(g)
        elif fmt == "graphml":
            import networkx as nx

            text = "\n".join(nx.generate_graphml(serialize.flat(g))) + "\n"
        elif fmt in ("svg", "png"):
            text = _draw(g, fmt, depth, output)
        else:
            raise typer.BadParameter(f"unknown format `{fmt}`; expected json, graphml, dot, "
                                     "svg or png", param_hint="--format")
    if fmt == "png":
        return
    if output:
        _write_file(output, text)
    else:
        sys.stdout.write(text)


def _draw(g: Any, fmt: str, depth: int | None, output: Path | None) -> str:
    """The SVG picture; for png, also rendered and written to `output` (required)."""
    from sedsl.targets.draw import to_png, to_svg

    if depth is not None and depth < 1:
        raise UsageError("--depth takes a number of name parts, 1 or more")
    if fmt == "png":
        if output is None:
            raise UsageError("--format png needs -o FILE.png")
        extras.require("resvg_py", "png", "--format png")
    svg = to_svg(g, depth)
    if fmt == "png":
        assert output is not None
        _write_file(output, to_png(svg))
    return svg


