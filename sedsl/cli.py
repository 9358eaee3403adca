"""The `sedsl` command. torch and fvcore are imported only by the options that need them;
networkx, lark and rich only by the commands that use them (start-up time: docs/benchmarks.md)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from sedsl._lazy import LazyConsole, lazy
from sedsl.errors import NOWHERE, SpecError

if TYPE_CHECKING:
    import sedsl
    from sedsl import cost as cost_model
    from sedsl import ir
    from sedsl.api import Network
    from sedsl.cost import Cost
else:
    sedsl = lazy("sedsl")
    ir = lazy("sedsl.ir")
    cost_model = lazy("sedsl.cost")

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="A compiler for Squeeze-and-Excitation networks.")
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
        sys.stderr.write(f"{e}\n")
        raise typer.Exit(1) from None


def _overrides(sets: list[str] | None, input_size: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in sets or []:
        name, eq, value = item.partition("=")
        if not eq or not name.strip().isidentifier():
            raise SpecError(f"--set takes NAME=VALUE, got `{item}`", NOWHERE,
                            "e.g. --set ratio=8")
        values[name.strip()] = value
    if input_size is not None:
        values["input"] = input_size  # sedsl.load parses 224, 320x240 and 3x320x240
    return values


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
        _write_atomically(folder, files)
    _print_summary(cost, no_se)
    out.print(f"wrote {', '.join(str(folder / f) for f in files)}")


def _summary(net: Network, cost: Cost, spec: Path, no_se: bool) -> dict[str, Any]:
    doc = cost.to_json("stage")
    return {"spec": str(spec), "se": not no_se, "nodes": (net.base if no_se else net.graph)
            .number_of_nodes(), **doc}


def _write_atomically(folder: Path, files: dict[str, str]) -> None:
    """Every file appears whole or not at all: written beside, then renamed into place."""
    folder.mkdir(parents=True, exist_ok=True)
    staged = []
    try:
        for name, text in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o666 & ~_umask())
            staged.append((tmp, folder / name))
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@app.command()
def check(spec: SpecArgument, sets: SetOption = None, input_size: InputOption = None) -> None:
    """Validate SPEC: parse, elaborate, infer every shape, apply the SE rules."""
    with _spec_errors():
        net = _load(spec, sets, input_size)
    blocks = {r.block for _, r in ir.records(net.graph) if r.role == "se"}
    out.print(f"ok: {net.name}, {net.graph.number_of_nodes()} nodes, {len(blocks)} SE blocks, "
              f"output {'x'.join(map(str, ir.record(net.graph, net.graph.graph['output']).shape))}")


@app.command()
def graph(
    spec: SpecArgument,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT",
                                     help="json, graphml, dot, svg or png.")] = "json",
    output: Annotated[Path | None, typer.Option("-o", "--output", metavar="FILE")] = None,
    sets: SetOption = None,
    no_se: Annotated[bool, typer.Option("--no-se", metavar="", help="The base network.")] = False,
    depth: Annotated[int | None, typer.Option(
        metavar="N", help="svg/png: one box per module path of N parts (1 stage, 2 block).")
    ] = None,
) -> None:
    """Export the graph IR of SPEC (node-link JSON, GraphML, Graphviz DOT) or draw it (SVG, PNG)."""
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
        elif fmt in ("svg", "png"):
            text = _draw(g, fmt, depth, output)
        else:
            raise SpecError(f"unknown format `{fmt}`", NOWHERE, "json, graphml, dot, svg or png")
    if fmt == "png":
        return
    if output:
        _write_atomically(output.parent if str(output.parent) else Path("."), {output.name: text})
    else:
        sys.stdout.write(text)


def _draw(g: Any, fmt: str, depth: int | None, output: Path | None) -> str:
    """The SVG picture; for png, also rendered and written to `output` (required)."""
    from sedsl.draw import to_png, to_svg

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
        from sedsl.export import FORMATS

        if fmt not in FORMATS:
            raise SpecError(f"unknown format `{fmt}`", NOWHERE, ", ".join(FORMATS))
        net = _load(spec, sets, input_size)
    with err.status(f"exporting {net.name} ({fmt})", spinner="dots"):
        import torch

        from sedsl.export import export

        model = net.to_torch(fused=fused, se=not no_se)
        if weights is not None:
            sedsl.transfer_weights(torch.load(weights, map_location="cpu"), model)
        target = output or Path("build") / f"{net.name}{FORMATS[fmt]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        example = torch.randn(1, *net.graph.graph["input"])
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
            raise SpecError(f"unknown convention `{convention}`", NOWHERE,
                            f"one of {', '.join(cost_model.CONVENTIONS)}")
        if by not in ("stage", "block", "op", "layer"):
            raise SpecError(f"--by takes stage, block, op or layer, not `{by}`", NOWHERE)
        batches = _batches(batch)
        runs = [(spec, r, _load(spec, sets, input_size, **({"ratio": r} if r else {})))
                for spec, r in _progress([(s, r) for s in specs for r in _ratios(ratio)])]
        reports = [(spec, r, net, net.cost(convention)) for spec, r, net in runs]
    failed = verify and _verify(reports, quiet=as_json or as_csv or as_markdown)
    docs = [{"spec": str(spec), **({"ratio": r} if r else {}),
             **c.to_json("stage" if by == "layer" else by)}
            for spec, r, _, c in reports]
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
    from sedsl.report import parse_batches

    try:
        return parse_batches(text)
    except ValueError as e:
        raise SpecError(str(e), NOWHERE, "e.g. --batch 1,32,256") from None


def _ratios(text: str | None) -> list[str | None]:
    if text is None:
        return [None]
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise SpecError("--ratio takes a list like 2,4,8,16,32", NOWHERE)
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


# --- per-layer tables and sweep plots (sedsl/report.py, sedsl/plot.py) ---------------------------


def _layer_docs(reports: list[tuple[Path, str | None, Network, Cost]], depth: int,
                batches: list[int]) -> list[dict[str, Any]]:
    from dataclasses import asdict

    from sedsl import report

    docs = []
    for spec, r, net, c in reports:
        rows = report.layers(net.graph, c.convention, depth)
        docs.append({
            "spec": str(spec), **({"ratio": r} if r else {}), "network": c.network,
            "input": list(c.input), "convention": c.convention, "depth": depth,
            "total": {"params": c.se.params, "flops": c.se.flops,
                      "activations": report.total_activations(net.graph)},
            "training_memory_bytes": {
                str(b): report.training_memory(net.graph, c.se.params, b) for b in batches},
            "layers": [{**asdict(row), "shape": list(row.shape)} for row in rows],
        })
    return docs


def _print_layers(reports: list[tuple[Path, str | None, Network, Cost]], depth: int,
                  batches: list[int], as_json: bool, as_csv: bool, as_markdown: bool) -> None:
    """`sedsl cost --by layer`: fvcore's flop_count_table / torchinfo's summary, per spec."""
    from sedsl.report import gib, human, shape_text

    docs = _layer_docs(reports, depth, batches)
    if as_json:
        sys.stdout.write(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2) + "\n")
        return
    if as_csv:
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


def _plot(reports: list[tuple[Path, str | None, Network, Cost]], target: Path) -> None:
    """Params and FLOPs per stage against the swept setting, written to `target`."""
    try:
        from sedsl.plot import sweep_plot
    except ImportError:
        raise SpecError("--plot needs matplotlib", NOWHERE, "pip install 'sedsl[plot]'") from None
    several_specs = len({spec for spec, *_ in reports}) > 1
    points = [(f"{spec.stem} r={r}" if several_specs else str(r or spec.stem), c)
              for spec, r, _, c in reports]
    sweep_plot(points, target, setting="ratio" if any(r for _, r, *_ in reports) else "spec")
    err.print(f"wrote {target}")


if __name__ == "__main__":
    app()
