"""The `sedsl` command. torch and fvcore are imported only by the options that need them."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

import sedsl
from sedsl import ir, limits
from sedsl.api import Network
from sedsl.cost import CONVENTIONS, Cost
from sedsl.errors import NOWHERE, Span, SpecError

# Exit statuses: 0 done, 1 a mistake in the spec or its values, 2 a usage error (click's),
# 3 a bug in sedsl, 130 interrupted.
SPEC_ERROR, USAGE_ERROR, INTERNAL_ERROR, INTERRUPTED = 1, 2, 3, 130
BUG_REPORTS = "the sedsl issue tracker"


class _Guarded(TyperGroup):
    """Runs every command so that no user mistake ends in a traceback: a SpecError prints as
    file:line:col and exits 1; anything unexpected is reported as a bug in sedsl and exits 3."""

    def invoke(self, ctx: Any) -> Any:  # a click Context (vendored by typer or not)
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except SpecError as e:
            sys.stderr.write(f"{e}\n")
            raise typer.Exit(SPEC_ERROR) from None
        except KeyboardInterrupt:
            sys.stderr.write("sedsl: interrupted\n")
            raise typer.Exit(INTERRUPTED) from None
        except BrokenPipeError:  # `sedsl graph spec | head`: the reader has gone
            with suppress(OSError, ValueError):  # and Python's final flush must not complain
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(SPEC_ERROR) from None
        except Exception as e:
            if type(e).__module__.startswith(("click.", "typer.")):
                raise  # click's usage errors: it prints them and exits 2
            _report_bug(e)
            raise typer.Exit(INTERNAL_ERROR) from None


def _report_bug(e: BaseException) -> None:
    """What went wrong, that it is sedsl's fault, and where the details are for a report."""
    details = "".join(traceback.format_exception(e))
    where = ""
    try:
        fd, name = tempfile.mkstemp(prefix="sedsl-bug-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"sedsl {sedsl.__version__}, argv {sys.argv!r}\n{details}")
        where = f"; the details are in {name}"
    except OSError:
        pass
    sys.stderr.write(
        f"sedsl: internal error: {type(e).__name__}: {e}\n"
        f"This is a bug in sedsl, not a mistake in your spec. Please report it to {BUG_REPORTS} "
        f"with the command and the spec{where}.\n")
    if os.environ.get("SEDSL_DEBUG"):
        sys.stderr.write(details)


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  cls=_Guarded, help="A compiler for Squeeze-and-Excitation networks.")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

SetOption = Annotated[list[str] | None, typer.Option(
    "--set", metavar="NAME=VALUE", help="Override a top-level parameter or SE setting.")]
InputOption = Annotated[str | None, typer.Option(
    "--input", metavar="SHAPE", help="Input size: 224, 320x320 or 3x320x320.")]


@contextmanager
def _spec_errors() -> Iterator[None]:
    """Spec mistakes print as file:line:col, the line, a caret and a hint; exit status 1."""
    try:
        yield
    except SpecError as e:
        sys.stderr.write(f"{e}\n")
        raise typer.Exit(SPEC_ERROR) from None


def _overrides(sets: list[str] | None, input_size: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in sets or []:
        name, eq, value = item.partition("=")
        if not eq or not name.strip().isidentifier():
            raise SpecError(f"--set takes NAME=VALUE, got `{item}`", NOWHERE,
                            "e.g. --set ratio=8")
        _check_option_value("--set", item, len(name) + 1, value)
        values[name.strip()] = value
    if input_size is not None:
        _check_option_value("--input", input_size, 0, input_size)
        values["input"] = input_size  # sedsl.load parses 224, 320x240 and 3x320x240
    return values


def _check_option_value(option: str, text: str, start: int, value: str) -> None:
    """Numbers in an option's value are read as a spec's are, with the same errors, pointing
    into the option's text: `--set:1:7: error: the number `1e999` is too large`."""
    span = Span(option, 1, start + 1, 1, start + len(value) + 1)
    try:
        parts = value.strip().lower().split("x")
        if len(parts) > 1 and all(p.isdigit() for p in parts):
            for part in parts:
                limits.dimension(part, span)
        else:
            limits.number_value(value, span)
    except SpecError as e:
        raise e.attach({option: text}) from None


def _load(spec: Path, sets: list[str] | None, input_size: str | None = None,
          **extra: Any) -> Network:
    return sedsl.load(spec, **{**_overrides(sets, input_size), **extra})


# --- build / check / graph ----------------------------------------------------------------------


@app.command()
def build(
    spec: Annotated[Path, typer.Argument(help="The .se spec to compile.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output folder "
                                                "(default: build/<network>).")] = None,
    sets: SetOption = None,
    input_size: InputOption = None,
    no_se: Annotated[bool, typer.Option("--no-se", help="Build the base network.")] = False,
    no_fuse: Annotated[bool, typer.Option("--no-fuse", help="Plain-torch SE blocks in model.py "
                                          "instead of the fused op.")] = False,
) -> None:
    """Compile SPEC: write model.py, graph.json and summary.json, print the summary."""
    if output is not None:
        _check_build_target(output)  # before the work, not after
    with _spec_errors(), err.status("compiling", spinner="dots"):
        net = _load(spec, sets, input_size)
        graph = net.base if no_se else net.graph
        cost = net.cost()
        files = {
            "model.py": net.source(fused=not no_fuse, se=not no_se),
            "graph.json": ir.dumps(graph) + "\n",
            "summary.json": json.dumps(_summary(net, cost, spec, no_se), indent=1) + "\n",
        }
        folder = output or Path("build") / net.name
        _write_build(folder, files)
    _print_summary(cost, no_se)
    out.print(f"wrote {', '.join(str(folder / f) for f in files)}")


def _summary(net: Network, cost: Cost, spec: Path, no_se: bool) -> dict[str, Any]:
    doc = cost.to_json("stage")
    return {"spec": str(spec), "se": not no_se, "nodes": (net.base if no_se else net.graph)
            .number_of_nodes(), **doc}


# What a build folder may hold for a new build to replace it: an earlier build's files, and
# the bytecode Python leaves beside a model.py it imported.
BUILD_FILES = frozenset({"model.py", "graph.json", "summary.json", "__pycache__"})


def _check_build_target(folder: Path) -> None:
    """-o must be absent, empty, or an earlier build: sedsl never deletes anything else."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise typer.BadParameter(f"{folder} exists and is not a folder", param_hint="-o")
    if folder.is_dir():
        others = sorted(p.name for p in folder.iterdir() if p.name not in BUILD_FILES)
        if others:
            raise typer.BadParameter(
                f"{folder} holds files that are not a sedsl build ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}); choose an empty or new folder",
                param_hint="-o")


def _write_build(folder: Path, files: dict[str, str]) -> None:
    """The build folder appears whole, or not at all, and an earlier build stays whole until
    the new one replaces it: the files are written into a temporary folder beside the target,
    which is then renamed into place (under a lock, so concurrent builds take turns)."""
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=parent))
    except OSError as e:
        raise SpecError(f"cannot write {folder}: {e.strerror}") from None
    try:
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp made it private
        with _locked(parent), _uninterrupted():
            _check_build_target(folder)  # again: another build may have run meanwhile
            _rename_into_place(staging, folder)
    except OSError as e:
        raise SpecError(f"cannot write {folder}: {e.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when the build succeeded


def _rename_into_place(staging: Path, folder: Path) -> None:
    """Move `staging` to `folder`; an earlier build there is moved aside first, and back if
    the new one cannot take its place."""
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
    """Hold Ctrl-C (and SIGTERM) back across the renames; they are delivered afterwards."""
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


def _write_file(path: Path, text: str) -> None:
    """One file, whole or not at all: written beside it, then renamed over it."""
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a folder; -o names the file to write",
                                 param_hint="-o")
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        raise SpecError(f"cannot write {path}: {e.strerror}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@app.command()
def check(spec: Path, sets: SetOption = None, input_size: InputOption = None) -> None:
    """Validate SPEC: parse, elaborate, infer every shape, apply the SE rules."""
    with _spec_errors():
        net = _load(spec, sets, input_size)
    blocks = {r.block for _, r in ir.records(net.graph) if r.role == "se"}
    out.print(f"ok: {net.name}, {net.graph.number_of_nodes()} nodes, {len(blocks)} SE blocks, "
              f"output {'x'.join(map(str, ir.record(net.graph, net.graph.graph['output']).shape))}")


@app.command()
def graph(
    spec: Path,
    fmt: Annotated[str, typer.Option("--format", help="json, graphml or dot.")] = "json",
    output: Annotated[Path | None, typer.Option("-o", "--output")] = None,
    sets: SetOption = None,
    no_se: Annotated[bool, typer.Option("--no-se")] = False,
) -> None:
    """Export the graph IR of SPEC (node-link JSON, GraphML or Graphviz DOT)."""
    with _spec_errors():
        net = _load(spec, sets)
        g = net.base if no_se else net.graph
        if fmt == "json":
            text = ir.dumps(g) + "\n"
        elif fmt == "dot":
            text = ir.to_dot(g)
        elif fmt == "graphml":
            import networkx as nx

            text = "\n".join(nx.generate_graphml(ir.flat(g))) + "\n"
        else:
            raise typer.BadParameter(f"unknown format `{fmt}`; expected json, graphml or dot",
                                     param_hint="--format")
    if output:
        _write_file(output, text)
    else:
        sys.stdout.write(text)


# --- cost ---------------------------------------------------------------------------------------


@app.command()
def cost(
    specs: Annotated[list[Path], typer.Argument(help="One or more .se specs, side by side.")],
    convention: Annotated[str, typer.Option(help="fvcore, paper or flops.")] = "fvcore",
    ratio: Annotated[str | None, typer.Option(help="A sweep of ratios: 2,4,8,16.")] = None,
    input_size: InputOption = None,
    sets: SetOption = None,
    by: Annotated[str, typer.Option(help="Group rows by stage, block or op.")] = "stage",
    verify: Annotated[bool, typer.Option(help="Also run fvcore on the lowered module.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV rows.")] = False,
    as_markdown: Annotated[bool, typer.Option("--markdown", help="A Markdown table.")] = False,
) -> None:
    """Parameter and FLOP overhead of the SE blocks: base vs SE network, and where it comes from."""
    with _spec_errors():
        if convention not in CONVENTIONS:
            raise typer.BadParameter(f"unknown convention `{convention}`; expected "
                                     f"{', '.join(CONVENTIONS)}", param_hint="--convention")
        if by not in ("stage", "block", "op"):
            raise typer.BadParameter(f"expected stage, block or op, not `{by}`",
                                     param_hint="--by")
        runs = [(spec, r, _load(spec, sets, input_size, **({"ratio": r} if r else {})))
                for spec in specs for r in _ratios(ratio)]
        reports = [(spec, r, net, net.cost(convention)) for spec, r, net in runs]
    failed = verify and _verify(reports, quiet=as_json or as_csv or as_markdown)
    docs = [{"spec": str(spec), **({"ratio": r} if r else {}), **c.to_json(by)}
            for spec, r, _, c in reports]
    if as_json:
        sys.stdout.write(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2) + "\n")
    elif as_csv:
        sys.stdout.write(_csv(docs))
    elif as_markdown:
        sys.stdout.write(_markdown(docs))
    elif len(reports) == 1:
        _print_report(reports[0][3], by)
    else:
        _print_sweep(docs)
    if failed:
        raise typer.Exit(1)


def _ratios(text: str | None) -> list[str | None]:
    if text is None:
        return [None]
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise SpecError("--ratio takes a list like 2,4,8,16,32", NOWHERE)
    start = 0
    for value in text.split(","):  # each value checked as a spec's number, pointing into it
        _check_option_value("--ratio", text, start, value)
        start += len(value) + 1
    return list(values)


def _verify(reports: list[tuple[Path, str | None, Network, Cost]], quiet: bool) -> bool:
    """Run fvcore on the plain-torch lowering of each network; True if any count disagrees."""
    from sedsl.crosscheck import fvcore_flops

    failed = False
    for spec, _, net, c in reports:
        analytic = c if c.convention == "fvcore" else net.cost("fvcore")
        for label, se, total in (("base", False, analytic.base.flops),
                                 ("se", True, analytic.se.flops)):
            with err.status(f"fvcore: tracing {net.name} ({label})", spinner="dots"):
                measured = fvcore_flops(net.to_torch(fused=False, se=se), net.graph.graph["input"])
            same = measured == total
            failed |= not same
            line = (f"{spec} {label}: analytic {total:,}  fvcore {measured:,}  "
                    f"{'equal' if same else 'DIFFERENT'}")
            (err if quiet else out).print(line)
    return failed


def _csv(docs: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    fields = ["spec", "ratio", "convention", "key", "base_params", "se_params", "base_flops",
              "se_flops", "se_blocks"]
    w = csv.DictWriter(buf, fields, extrasaction="ignore")
    w.writeheader()
    for d in docs:
        for row in [*d["rows"], {"key": "total", "base_params": d["base"]["params"],
                                  "se_params": d["overhead"]["params"],
                                  "base_flops": d["base"]["flops"],
                                  "se_flops": d["overhead"]["flops"]}]:
            w.writerow({"spec": d["spec"], "ratio": d.get("ratio", ""),
                        "convention": d["convention"], **row})
    return buf.getvalue()


def _markdown(docs: list[dict[str, Any]]) -> str:
    lines = ["| spec | ratio | params (base) | params (SE) | overhead | FLOPs (base) | FLOPs (SE) "
             "| overhead |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for d in docs:
        o = d["overhead"]
        lines.append(
            f"| {d['spec']} | {d.get('ratio', '')} | {d['base']['params']:,} | "
            f"{d['se']['params']:,} | +{o['params_pct']:.2f}% | {_g(d['base']['flops'])} | "
            f"{_g(d['se']['flops'])} | +{o['flops_pct']:.2f}% |")
    return "\n".join(lines) + "\n"


def _g(flops: int) -> str:
    return f"{flops / 1e9:.3f} G"


def _print_report(c: Cost, by: str) -> None:
    o, e = c.overhead, c.estimate
    head = Table(title=f"{c.network} — {'x'.join(map(str, c.input))}, convention {c.convention}")
    for col in ("", "params", "FLOPs"):
        head.add_column(col, justify="right" if col else "left")
    head.add_row("base", f"{c.base.params:,}", _g(c.base.flops))
    head.add_row("SE", f"{c.se.params:,}", _g(c.se.flops))
    head.add_row("overhead", f"+{o.params:,} (+{_pct(o.params, c.base.params)})",
                 f"+{o.flops:,} (+{_pct(o.flops, c.base.flops)})")
    out.print(head)
    rows = Table(title=f"where the SE cost comes from (by {by})")
    for col in (by, "SE blocks", "base params", "SE params", "share", "SE FLOPs"):
        rows.add_column(col, justify="left" if col == by else "right")
    for r in c.rows(by):
        rows.add_row(r.key, str(r.se_blocks), f"{r.base_params:,}", f"{r.se_params:,}",
                     _pct(r.se_params, o.params), f"{r.se_flops:,}")
    out.print(rows)
    est = round(float(e.params))
    out.print(f"closed form (2/r)·Σ N_s·C_s² = {est:,}; exact SE params {o.params:,}; "
              f"difference {o.params - est:+,} = FC biases {e.bias:,} + rounding {e.rounding:+,}")


def _print_sweep(docs: list[dict[str, Any]]) -> None:
    t = Table(title=f"SE overhead, convention {docs[0]['convention']}")
    for col in ("spec", "ratio", "params", "+params", "FLOPs", "+FLOPs"):
        t.add_column(col, justify="left" if col == "spec" else "right")
    for d in docs:
        o = d["overhead"]
        t.add_row(d["spec"], str(d.get("ratio", "")), f"{d['se']['params']:,}",
                  f"+{o['params_pct']:.2f}%", _g(d["se"]["flops"]), f"+{o['flops_pct']:.3f}%")
    out.print(t)


def _print_summary(c: Cost, no_se: bool) -> None:
    if no_se:
        out.print(f"{c.network} (base): {c.base.params:,} params, {_g(c.base.flops)} FLOPs "
                  f"({c.convention})")
        return
    _print_report(c, "stage")


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "-"


if __name__ == "__main__":
    app()
