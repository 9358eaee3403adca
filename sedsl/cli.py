"""The `sedsl` command. torch and fvcore are imported only by the options that need them."""

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
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

import sedsl
from sedsl import ir
from sedsl.api import Network
from sedsl.cost import CONVENTIONS, Cost
from sedsl.errors import NOWHERE, SpecError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="A compiler for Squeeze-and-Excitation networks.")
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
            raise SpecError(f"unknown format `{fmt}`", NOWHERE, "json, graphml or dot")
    if output:
        _write_atomically(output.parent if str(output.parent) else Path("."), {output.name: text})
    else:
        sys.stdout.write(text)


# --- cost ---------------------------------------------------------------------------------------


@app.command()
def cost(
    specs: Annotated[list[Path], typer.Argument(help="One or more .se specs, side by side.")],
    convention: Annotated[str, typer.Option(help="fvcore, paper or flops.")] = "fvcore",
    ratio: Annotated[str | None, typer.Option(help="A sweep of ratios: 2,4,8,16.")] = None,
    sweeps: Annotated[list[str] | None, typer.Option(
        "--sweep", metavar="NAME=V1,V2,...", help="Sweep any parameter or SE setting, e.g. "
        "where=pre,standard,post; several --sweep multiply.")] = None,
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
            raise SpecError(f"unknown convention `{convention}`", NOWHERE,
                            f"one of {', '.join(CONVENTIONS)}")
        if by not in ("stage", "block", "op"):
            raise SpecError(f"--by takes stage, block or op, not `{by}`", NOWHERE)
        points = _sweep_points(ratio, sweeps)
        runs = [(spec, point, _load(spec, sets, input_size, **point))
                for spec in specs for point in points]
        reports = [(spec, point, net, net.cost(convention)) for spec, point, net in runs]
    failed = verify and _verify(reports, quiet=as_json or as_csv or as_markdown)
    docs = [{"spec": str(spec), **({"ratio": p["ratio"]} if "ratio" in p else {}),
             **({"sweep": p} if p else {}), **c.to_json(by)} for spec, p, _, c in reports]
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


def _sweep_points(ratio: str | None, sweeps: list[str] | None) -> list[dict[str, str]]:
    """Every combination of the swept values, the first sweep varying slowest:
    `--ratio 4,8 --sweep squeeze=avg,max` -> ratio=4 avg, 4 max, 8 avg, 8 max."""
    axes: list[tuple[str, list[str]]] = []
    if ratio is not None:
        axes.append(("ratio", _values("--ratio", ratio, "2,4,8,16,32")))
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


if __name__ == "__main__":
    app()
