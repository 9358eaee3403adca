"""The `sedsl` command. torch and fvcore are imported only by the options that need them;
networkx, lark and rich only by the commands that use them (start-up time: docs/benchmarks.md)."""

from __future__ import annotations

import gc
import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from sedsl import limits
from sedsl._lazy import LazyConsole, lazy
from sedsl.errors import NOWHERE, Span, SpecError

if TYPE_CHECKING:
    import sedsl
    from sedsl.api import Network
    from sedsl.ir import node as ir
    from sedsl.targets import cost as cost_model
    from sedsl.targets.cost import Cost
else:
    sedsl = lazy("sedsl")
    ir = lazy("sedsl.ir.node")
    cost_model = lazy("sedsl.targets.cost")

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
            _show(e)
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
    import tempfile  # this module imports what only some commands use where they use it:
    import traceback  # start-up time (docs/benchmarks.md)

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


def _typer() -> typer.Typer:
    return typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, cls=_Guarded,
                       help="A compiler for Squeeze-and-Excitation networks.")


app = _typer()
T = TypeVar("T")
out = LazyConsole()
err = LazyConsole(stderr=True)

SetOption = Annotated[list[str] | None, typer.Option(
    "--set", metavar="NAME=VALUE", help="Override a top-level parameter or SE setting.")]
SpecArgument = Annotated[Path, typer.Argument(metavar="SPEC", help="The .se spec.")]
InputOption = Annotated[str | None, typer.Option(
    "--input", metavar="SHAPE", help="Input size: 224, 320x320 or 3x320x320.")]


@contextmanager
def _spec_errors() -> Iterator[None]:
    """Spec mistakes print as file:line:col, the line, a caret and a hint; exit status 1."""
    try:
        yield
    except SpecError as e:
        _show(e)
        raise typer.Exit(SPEC_ERROR) from None


def _show(e: SpecError) -> None:
    """The error on stderr; on a terminal (unless NO_COLOR is set) with the spec line
    highlighted."""
    text = str(e)
    if sys.stderr.isatty() and not os.environ.get("NO_COLOR"):
        from sedsl.language.lexer import highlight_error

        text = highlight_error(text)
    sys.stderr.write(f"{text}\n")


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
    if output is not None:
        _check_build_target(output)  # before the work, not after
    with _spec_errors(), err.status("compiling", spinner="dots"):
        net = _load(spec, sets, input_size)
        graph = net.base_ir if no_se else net.ir
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
    return {"spec": str(spec), "se": not no_se, "nodes": (net.base_ir if no_se else net.ir)
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
    import shutil
    import tempfile

    parent = folder.parent
    staging: Path | None = None
    try:
        with _uninterrupted():  # a Ctrl-C between making the folder and owning it would leak it
            parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp",
                                            dir=parent))
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp made it private
        with _locked(parent), _uninterrupted():
            _check_build_target(folder)  # again: another build may have run meanwhile
            _rename_into_place(staging, folder)
    except OSError as e:
        raise SpecError(f"cannot write {folder}: {e.strerror}") from None
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


def _write_file(path: Path, text: str) -> None:
    """One file, whole or not at all: written beside it, then renamed over it."""
    import tempfile

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
def check(spec: SpecArgument, sets: SetOption = None, input_size: InputOption = None) -> None:
    """Validate SPEC: parse, elaborate, infer every shape, apply the SE rules."""
    with _spec_errors():
        net = _load(spec, sets, input_size)
    blocks = {r.block for _, r in ir.records(net.ir) if r.role == "se"}
    out.print(f"ok: {net.name}, {net.ir.number_of_nodes()} nodes, {len(blocks)} SE blocks, "
              f"output {'x'.join(map(str, ir.record(net.ir, net.ir.graph['output']).shape))}")


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
    with _spec_errors():
        net = _load(spec, sets)
        g = net.after(after or "apply_se")
        g = net.base_ir if no_se else g  # no SE blocks: every pass leaves the base graph as it is
        if fmt == "json":
            text = ir.dumps(g) + "\n"
        elif fmt == "dot":
            text = ir.to_dot(g)
        elif fmt == "graphml":
            import networkx as nx

            text = "\n".join(nx.generate_graphml(ir.flat(g))) + "\n"
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
        raise SpecError("--depth takes a number of name parts, 1 or more", NOWHERE)
    svg = to_svg(g, depth)
    if fmt == "png":
        if output is None:
            raise SpecError("--format png needs -o FILE.png", NOWHERE)
        try:
            data = to_png(svg)
        except ImportError:
            raise SpecError("--format png needs resvg", NOWHERE, "pip install 'sedsl[png]'"
                            " or draw --format svg") from None
        tmp = output.with_name(f".{output.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, output)
    return svg


@app.command("export")
def export_model(
    spec: SpecArgument,
    fmt: Annotated[str, typer.Option(
        "--format", metavar="FORMAT", help="onnx, torchscript or exported-program.")] = "onnx",
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", metavar="FILE", help="Default: build/<network>.onnx|.pt|.pt2.")] = None,
    fused: Annotated[bool, typer.Option(
        "--fused/--plain", help="SE blocks as the fused module (decomposed into ATen ops in "
        "the file) or as plain modules; the state-dict keys follow.")] = True,
    weights: Annotated[Path | None, typer.Option(
        metavar="FILE", help="A state dict (torch.save) to load first, e.g. from timm.")] = None,
    sets: SetOption = None,
    input_size: InputOption = None,
    no_se: Annotated[bool, typer.Option("--no-se", metavar="", help="The base network.")] = False,
) -> None:
    """Export SPEC's model to ONNX, TorchScript or torch.export; the file runs without sedsl."""
    with _spec_errors():
        from sedsl.pytorch.export import FORMATS

        if fmt not in FORMATS:
            raise SpecError(f"unknown format `{fmt}`", NOWHERE, ", ".join(FORMATS))
        net = _load(spec, sets, input_size)
    with err.status(f"exporting {net.name} ({fmt})", spinner="dots"):
        import torch

        from sedsl.pytorch.export import export

        model = net.to_torch(fused=fused, se=not no_se)
        if weights is not None:
            sedsl.transfer_weights(torch.load(weights, map_location="cpu"), model)
        target = output or Path("build") / f"{net.name}{FORMATS[fmt]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        example = torch.randn(1, *net.ir.graph["input"])
        export(model, example, fmt, target)
    out.print(f"wrote {target}")


# --- cost ---------------------------------------------------------------------------------------


@app.command()
def cost(
    specs: Annotated[list[Path], typer.Argument(metavar="SPEC",
                                                help="One or more .se specs, side by side.")],
    convention: Annotated[str, typer.Option(
        metavar="NAME", help="fvcore, paper or flops.")] = "fvcore",
    ratio: Annotated[str | None, typer.Option(metavar="R,R,...",
                                              help="A sweep of ratios: 2,4,8,16.")] = None,
    sweeps: Annotated[list[str] | None, typer.Option(
        "--sweep", metavar="NAME=V1,V2,...", help="Sweep any parameter or SE setting, e.g. "
        "where=pre,standard,post; several --sweep multiply.")] = None,
    input_size: InputOption = None,
    sets: SetOption = None,
    by: Annotated[str, typer.Option(metavar="GROUP",
                                    help="Group rows by stage, block or op.")] = "stage",
    verify: Annotated[bool, typer.Option(
        metavar="", help="Also run fvcore on the lowered module.")] = False,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="One JSON document.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", metavar="", help="CSV rows.")] = False,
    as_markdown: Annotated[bool, typer.Option(
        "--markdown", metavar="", help="A Markdown table.")] = False,
    depth: Annotated[int, typer.Option(
        metavar="N", help="--by layer: module paths of at most N parts (1 stage, 2 block).")] = 2,
    batch: Annotated[str, typer.Option(
        metavar="N,N,...", help="--by layer: batch sizes for the training-memory estimate.")
    ] = "1,32,256",
    plot: Annotated[Path | None, typer.Option(
        metavar="FILE.svg", help="Plot params and FLOPs per stage against the sweep "
        "(needs matplotlib: pip install 'sedsl[plot]').")] = None,
) -> None:
    """Parameter and FLOP overhead of the SE blocks: base vs SE network, and where it comes from."""
    with _spec_errors():
        if convention not in cost_model.CONVENTIONS:
            raise typer.BadParameter(f"unknown convention `{convention}`; expected "
                                     f"{', '.join(cost_model.CONVENTIONS)}",
                                     param_hint="--convention")
        if by not in ("stage", "block", "op", "layer"):
            raise typer.BadParameter(f"expected stage, block, op or layer, not `{by}`",
                                     param_hint="--by")
        batches = _batches(batch)
        points = _sweep_points(ratio, sweeps)
        runs = [(spec, point, _load(spec, sets, input_size, **point))
                for spec, point in _progress([(s, p) for s in specs for p in points])]
        reports = [(spec, point, net, net.cost(convention)) for spec, point, net in runs]
    failed = verify and _verify(reports, quiet=as_json or as_csv or as_markdown)
    docs = [{"spec": str(spec), **({"ratio": p["ratio"]} if "ratio" in p else {}),
             **({"sweep": p} if p else {}), **c.to_json("stage" if by == "layer" else by)}
            for spec, p, _, c in reports]
    if by == "layer":
        _print_layers(reports, depth, batches, as_json, as_csv, as_markdown)
    elif as_json:
        sys.stdout.write(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2) + "\n")
    elif as_csv:
        sys.stdout.write(_csv(docs))
    elif as_markdown:
        sys.stdout.write(_markdown(docs))
    elif len(reports) == 1:
        _print_report(reports[0][3], by)
    else:
        _print_sweep(docs)
    if plot is not None:
        _plot(reports, plot)
    if failed:
        raise typer.Exit(1)


def _progress(items: list[T]) -> Iterator[T]:
    """`items`, with a rich progress bar on stderr for several of them when it is a terminal."""
    if len(items) < 2 or not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import track

    yield from track(items, description="compiling", console=err._get(), transient=True)


def _batches(text: str) -> list[int]:
    from sedsl.targets.report import parse_batches

    try:
        return parse_batches(text)
    except ValueError as e:
        raise SpecError(str(e), NOWHERE, "e.g. --batch 1,32,256") from None


def _ratios(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise SpecError("--ratio takes a list like 2,4,8,16,32", NOWHERE)
    start = 0
    for value in text.split(","):  # each value checked as a spec's number, pointing into it
        _check_option_value("--ratio", text, start, value)
        start += len(value) + 1
    return list(values)


def _sweep_points(ratio: str | None, sweeps: list[str] | None) -> list[dict[str, str]]:
    """Every combination of the swept values, the first sweep varying slowest:
    `--ratio 4,8 --sweep squeeze=avg,max` -> ratio=4 avg, 4 max, 8 avg, 8 max."""
    axes: list[tuple[str, list[str]]] = []
    if ratio is not None:
        axes.append(("ratio", _ratios(ratio)))
    for item in sweeps or []:
        name, eq, text = item.partition("=")
        name = name.strip()
        if not eq or not name.isidentifier():
            raise SpecError(f"--sweep takes NAME=V1,V2,..., got `{item}`", NOWHERE,
                            "e.g. --sweep where=pre,standard,post,identity")
        if name in dict(axes):
            raise SpecError(f"`{name}` is swept twice", NOWHERE, "give each name one --sweep")
        axes.append((name, _values(f"--sweep {name}", text, "avg,max")))
    points: list[dict[str, str]] = [{}]
    for name, values in axes:
        points = [{**p, name: v} for p in points for v in values]
    return points


def _values(option: str, text: str, example: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise SpecError(f"{option} takes a list like {example}", NOWHERE)
    return values


def _swept(docs: list[dict[str, Any]]) -> list[str]:
    """The swept names other than ratio (which keeps its own column), in sweep order."""
    names = dict.fromkeys(k for d in docs for k in d.get("sweep", {}) if k != "ratio")
    return list(names)


def _verify(reports: list[tuple[Path, dict[str, str], Network, Cost]], quiet: bool) -> bool:
    """Run fvcore on the plain-torch lowering of each network; True if any count disagrees."""
    from sedsl.pytorch.flops import fvcore_flops

    failed = False
    for spec, _, net, c in reports:
        analytic = c if c.convention == "fvcore" else net.cost("fvcore")
        for label, se, total in (("base", False, analytic.base.flops),
                                 ("se", True, analytic.se.flops)):
            with err.status(f"fvcore: tracing {net.name} ({label})", spinner="dots"):
                measured = fvcore_flops(net.to_torch(fused=False, se=se), net.ir.graph["input"])
            same = measured == total
            failed |= not same
            line = (f"{spec} {label}: analytic {total:,}  fvcore {measured:,}  "
                    f"{'equal' if same else 'DIFFERENT'}")
            (err if quiet else out).print(line)
    return failed


def _csv(docs: list[dict[str, Any]]) -> str:
    import csv

    buf = io.StringIO()
    fields = ["spec", "ratio", *_swept(docs), "convention", "key", "base_params", "se_params",
              "base_flops", "se_flops", "se_blocks"]
    w = csv.DictWriter(buf, fields, extrasaction="ignore")
    w.writeheader()
    for d in docs:
        for row in [*d["rows"], {"key": "total", "base_params": d["base"]["params"],
                                  "se_params": d["overhead"]["params"],
                                  "base_flops": d["base"]["flops"],
                                  "se_flops": d["overhead"]["flops"]}]:
            w.writerow({"spec": d["spec"], "ratio": d.get("ratio", ""), **d.get("sweep", {}),
                        "convention": d["convention"], **row})
    return buf.getvalue()


def _markdown(docs: list[dict[str, Any]]) -> str:
    swept = _swept(docs)
    lines = ["| spec | ratio | " + "".join(f"{n} | " for n in swept) + "params (base) | "
             "params (SE) | overhead | FLOPs (base) | FLOPs (SE) | overhead |",
             "|---|---|" + "---|" * len(swept) + "---:|---:|---:|---:|---:|---:|"]
    for d in docs:
        o = d["overhead"]
        values = "".join(f"{d.get('sweep', {}).get(n, '')} | " for n in swept)
        lines.append(
            f"| {d['spec']} | {d.get('ratio', '')} | {values}{d['base']['params']:,} | "
            f"{d['se']['params']:,} | +{o['params_pct']:.2f}% | {_g(d['base']['flops'])} | "
            f"{_g(d['se']['flops'])} | +{o['flops_pct']:.2f}% |")
    return "\n".join(lines) + "\n"


def _g(flops: int) -> str:
    return f"{flops / 1e9:.3f} G"


def _print_report(c: Cost, by: str) -> None:
    from rich.table import Table

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
    from rich.table import Table

    t = Table(title=f"SE overhead, convention {docs[0]['convention']}")
    swept = _swept(docs)
    for col in ("spec", "ratio", *swept, "params", "+params", "FLOPs", "+FLOPs"):
        t.add_column(col, justify="left" if col == "spec" or col in swept else "right")
    for d in docs:
        o = d["overhead"]
        t.add_row(d["spec"], str(d.get("ratio", "")),
                  *(str(d.get("sweep", {}).get(n, "")) for n in swept), f"{d['se']['params']:,}",
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


# --- per-layer tables and sweep plots (sedsl/targets/report.py, sedsl/targets/plot.py) ---------------------------


def _layer_docs(reports: list[tuple[Path, dict[str, str], Network, Cost]], depth: int,
                batches: list[int]) -> list[dict[str, Any]]:
    from dataclasses import asdict

    from sedsl.targets import report

    docs = []
    for spec, r, net, c in reports:
        rows = report.layers(net.ir, c.convention, depth)
        docs.append({
            "spec": str(spec), **({"sweep": r} if r else {}), "network": c.network,
            "input": list(c.input), "convention": c.convention, "depth": depth,
            "total": {"params": c.se.params, "flops": c.se.flops,
                      "activations": report.total_activations(net.ir)},
            "training_memory_bytes": {
                str(b): report.training_memory(net.ir, c.se.params, b) for b in batches},
            "layers": [{**asdict(row), "shape": list(row.shape)} for row in rows],
        })
    return docs


def _print_layers(reports: list[tuple[Path, dict[str, str], Network, Cost]], depth: int,
                  batches: list[int], as_json: bool, as_csv: bool, as_markdown: bool) -> None:
    """`sedsl cost --by layer`: fvcore's flop_count_table / torchinfo's summary, per spec."""
    from sedsl.targets.report import gib, human, shape_text

    docs = _layer_docs(reports, depth, batches)
    if as_json:
        sys.stdout.write(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2) + "\n")
        return
    if as_csv:
        import csv

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["spec", "module", "depth", "op", "output", "params", "flops", "activations",
                    "se"])
        for d in docs:
            for row in d["layers"]:
                w.writerow([d["spec"], row["name"], row["depth"], row["op"],
                            shape_text(row["shape"]), row["params"], row["flops"],
                            row["activations"], row["se"]])
        sys.stdout.write(buf.getvalue())
        return
    for d in docs:
        t = d["total"]
        head = ["module", "op", "output", "#params", "#flops", "#activations"]
        body = [[d["network"], "", shape_text(d["input"]), human(t["params"]),
                 human(t["flops"]), human(t["activations"])]]
        body += [[" " * row["depth"] + row["name"], row["op"], shape_text(row["shape"]),
                  human(row["params"]), human(row["flops"]) if row["flops"] else "",
                  human(row["activations"]) if row["activations"] else ""]
                 for row in d["layers"]]
        memory = ", ".join(f"batch {b}: {gib(v)}" for b, v in d["training_memory_bytes"].items())
        note = (f"training memory, estimated (fp32, Adam; weights, gradients, 2 states and "
                f"saved outputs): {memory}\n"
                f"{d['convention']} FLOPs; activations as fvcore's ActivationCountAnalysis "
                "(conv and linear outputs)")
        if as_markdown:
            lines = ["| " + " | ".join(head) + " |", "|:---|:---|:---|---:|---:|---:|"]
            lines += ["| " + " | ".join(cells) + " |" for cells in body]
            sys.stdout.write("\n".join(lines) + "\n\n" + note + "\n")
            continue
        from rich.table import Table

        table = Table(title=f"{d['spec']} by layer, depth {d['depth']}")
        for col in head:
            table.add_column(col, justify="right" if col.startswith("#") else "left")
        for cells, row in zip(body, [None, *d["layers"]], strict=True):
            table.add_row(*cells, style="dark_orange" if row and row["se"] else None)
        out.print(table)
        out.print(note)


def _plot(reports: list[tuple[Path, dict[str, str], Network, Cost]], target: Path) -> None:
    """Params and FLOPs per stage against the swept setting, written to `target`."""
    try:
        from sedsl.targets.plot import sweep_plot
    except ImportError:
        raise SpecError("--plot needs matplotlib", NOWHERE, "pip install 'sedsl[plot]'") from None

    def label(spec: Path, point: dict[str, str]) -> str:
        swept = ", ".join(f"{k}={v}" for k, v in point.items())
        several = len({s for s, *_ in reports}) > 1
        return f"{spec.stem} {swept}".strip() if several or not swept else swept

    points = [(label(spec, p), c) for spec, p, _, c in reports]
    swept = sorted({k for _, p, *_ in reports for k in p})
    sweep_plot(points, target, setting=", ".join(swept) or "spec")
    err.print(f"wrote {target}")


# --- import -------------------------------------------------------------------------------------


@app.command("import")
def import_model(
    source: Annotated[str, typer.Argument(help="torchvision:NAME, timm:NAME or "
                                          "module.path:factory.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="The .se file to write "
                                                "(default: print it).")] = None,
    input_size: InputOption = None,
) -> None:
    """Import a PyTorch model and write it back as a readable .se spec."""
    from sedsl.api import input_override
    from sedsl.pytorch.importer import from_torch, load_model
    from sedsl.targets.spec import write_spec

    with _spec_errors():
        model, name = load_model(source)
        size = input_override(input_size) or (224,)
        shape = (3, *(size * 2 if len(size) == 1 else size))[-3:]
        net = from_torch(model, input=shape, name=name)
        written = write_spec(net.base_ir)
    for note in written.notes:
        err.print(f"no spec form: {note}")
    if output is None:
        sys.stdout.write(written.text)
        return
    _write_file(output, written.text)
    c = net.cost()
    out.print(f"wrote {output}: {name}, {len(written.text.splitlines())} lines, "
              f"{c.base.params:,} params, {_g(c.base.flops)} FLOPs (fvcore)")


# --- train / excite (sedsl.analysis; torch and the optional extras load inside) ----------------

DataOption = Annotated[str, typer.Option(
    "--data", help="sklearn:digits, or a folder of class folders (optionally train/ and val/).")]
ResizeOption = Annotated[int | None, typer.Option(
    help="Resize the shorter image side to this before the centre crop (default: crop/0.875).")]
NormOption = Annotated[str | None, typer.Option(
    metavar="A,B,C", help="Per-channel normalisation (default: ImageNet's).")]


def _prep(resize: int | None, mean: str | None, std: str | None) -> Any:
    from sedsl.analysis.data import IMAGENET_MEAN, IMAGENET_STD, Prep

    def floats(text: str | None, default: tuple[float, ...]) -> tuple[float, ...]:
        try:
            return default if text is None else tuple(float(v) for v in text.split(","))
        except ValueError:
            raise SpecError(f"`{text}` is not a list of numbers", NOWHERE, "e.g. 0.5,0.5,0.5") \
                from None

    return Prep(resize, floats(mean, IMAGENET_MEAN), floats(std, IMAGENET_STD))


@app.command()
def train(
    spec: Annotated[Path, typer.Argument(help="The .se spec to train.")],
    data: DataOption,
    output: Annotated[Path, typer.Option("-o", "--output", help="Run folder: checkpoint.pt, "
                                         "model.pt, metrics.csv.")] = Path("runs/train"),
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    batch: Annotated[int, typer.Option(min=1, help="Global batch size.")] = 64,
    optimizer: Annotated[str, typer.Option(help="sgd or adamw.")] = "sgd",
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default: 0.1 for "
                                             "sgd, 1e-3 for adamw).")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Default: 5e-4 sgd, 0.05 adamw.")]
    = None,
    label_smoothing: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.1,
    seed: int = 0,
    resume: Annotated[bool, typer.Option(help="Continue from the folder's checkpoint.")] = False,
    compare_base: Annotated[bool, typer.Option(
        "--compare-base", help="Also train the --no-se network (same seed, same data order) "
        "and compare accuracy and cost.")] = False,
    no_se: Annotated[bool, typer.Option("--no-se", help="Train the base network.")] = False,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="auto (the GPU when there is "
                                        "one), cpu, cuda or cuda:N.")] = "auto",
    sets: SetOption = None,
    input_size: InputOption = None,
    resize: ResizeOption = None,
    mean: NormOption = None,
    std: NormOption = None,
) -> None:
    """Train SPEC on a dataset (runs under torchrun with DDP too)."""
    from sedsl.analysis.commands import run_train
    from sedsl.analysis.train import TrainConfig

    with _spec_errors():
        net = _load(spec, sets, input_size)
        cfg = TrainConfig(epochs, batch, optimizer, lr, weight_decay, label_smoothing, seed)
        run_train(net, data, output, cfg, _prep(resize, mean, std), se=not no_se,
                  resume=resume, compare_base=compare_base, device=device)


@app.command()
def excite(
    spec: Annotated[Path, typer.Argument(help="The .se spec the weights belong to.")],
    weights: Annotated[Path, typer.Option(help="A state dict (.pt, .pth, .safetensors) or "
                                          "a sedsl train checkpoint.")],
    data: DataOption,
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for excite.json and "
                                         "the figures.")] = Path("excite"),
    per_class: Annotated[int | None, typer.Option(min=1, help="Samples per class (the paper: "
                                                  "50; default: all).")] = None,
    classes: Annotated[str | None, typer.Option(metavar="A,B,...", help="Classes to analyse "
                                                "(default: all).")] = None,
    blocks: Annotated[str | None, typer.Option(metavar="A,B,...", help="SE blocks, block "
                                               "instances or stages (default: all).")] = None,
    split: Annotated[str, typer.Option(help="train, val or all.")] = "val",
    ablate: Annotated[str | None, typer.Option(help="`stage`: top-1 without each stage's SE "
                                               "blocks, and what that saves.")] = None,
    epsilon: Annotated[float, typer.Option(help="Saturation: a gate within this of its "
                                           "bound.")] = 0.05,
    no_fuse: Annotated[bool, typer.Option("--no-fuse", help="Run the plain-torch lowering "
                                          "instead of the fused SE op.")] = False,
    sets: SetOption = None,
    input_size: InputOption = None,
    resize: ResizeOption = None,
    mean: NormOption = None,
    std: NormOption = None,
) -> None:
    """The SE paper's excitation analysis: per-class gates of every SE block, by depth."""
    from sedsl.analysis.commands import run_excite

    def names(text: str | None) -> list[str] | None:
        return [v.strip() for v in text.split(",") if v.strip()] if text else None

    with _spec_errors():
        if ablate not in (None, "stage"):
            raise SpecError(f"--ablate takes `stage`, not `{ablate}`", NOWHERE)
        net = _load(spec, sets, input_size)
        run_excite(net, spec, weights, data, output, _prep(resize, mean, std), split=split,
                   per_class=per_class, classes=names(classes), blocks=names(blocks),
                   fused=not no_fuse, ablate=ablate is not None, epsilon=epsilon,
                   overrides=_overrides(sets, input_size))


def main() -> None:
    """The `sedsl` command. Typer turns every command's signature into click options as it
    starts (~35 ms for all of them), so a run that names a command builds only that one."""
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    chosen = [c for c in app.registered_commands
              if (c.name or c.callback.__name__.replace("_", "-")) == name]  # type: ignore[union-attr]
    runner = app
    if name in ("check", "cost", "graph"):
        # A one-shot compile makes ~10^5 objects that live to the end and leaves almost no
        # cycles: the cyclic collector's passes over them are ~5% of the run, for nothing.
        gc.disable()
    if chosen:
        runner = _typer()
        runner.registered_commands = chosen
        runner.callback()(lambda: None)  # a callback keeps it a group: `sedsl NAME ...` as always
    try:
        runner()
    except SystemExit as done:
        _exit(done.code)


def _exit(code: Any) -> None:
    """Leave as sys.exit would. A run that never loaded torch holds nothing that needs
    Python's teardown, which frees every object one by one (~80 ms after compiling
    SE-ResNeXt-101, a fifth of `sedsl cost`): it flushes its output and ends at once."""
    status = 0 if code is None else code if isinstance(code, int) else 1
    if not isinstance(code, int | None):
        sys.stderr.write(f"{code}\n")
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: sys.exit's teardown would fail the same way
        raise SystemExit(status) from None
    if "torch" in sys.modules:
        raise SystemExit(status)
    os._exit(status)


if __name__ == "__main__":
    main()
