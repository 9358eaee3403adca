"""`sedsl cost`: parameters and FLOPs of the base and SE networks, sweeps, tables, plots."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from sedsl import extras, files
from sedsl.cli.app import (
    InputOption,
    SetOption,
    _check_option_value,
    _load,
    _spec_errors,
    app,
    err,
    out,
    output_folder,
)
from sedsl.errors import SedslError, UsageError

if TYPE_CHECKING:
    from sedsl.api import Network
    from sedsl.targets.cost import Cost

T = TypeVar("T")

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
                                    help="Group rows by stage, block, op or layer (a table of "
                                    "module paths with activations and training memory).")
    ] = "stage",
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
        "(needs matplotlib: pip install 'sedsl\\[plot]').")] = None,
) -> None:
    """Parameter and FLOP overhead of the SE blocks: base vs SE network, and where it comes from."""
    from sedsl.targets.cost import CONVENTIONS

    if plot is not None:  # before the work: what the plot needs, and where it goes
        extras.require("matplotlib", "plot", "--plot")
        output_folder(plot, "--plot", make=False)
    with _spec_errors():
        if convention not in CONVENTIONS:
            raise typer.BadParameter(f"unknown convention `{convention}`; expected "
                                     f"{', '.join(CONVENTIONS)}",
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

    yield from track(items, description="compiling", console=err(), transient=True)


def _batches(text: str) -> list[int]:
    from sedsl.targets.report import parse_batches

    try:
        return parse_batches(text)
    except ValueError as e:
        raise UsageError(f"--batch: {e}", "e.g. --batch 1,32,256") from None


def _ratios(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise UsageError("--ratio takes a list like 2,4,8,16,32", f"not `{text}`")
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
            raise UsageError(f"--sweep takes NAME=V1,V2,..., got `{item}`",
                             "e.g. --sweep where=pre,standard,post,identity")
        if name in dict(axes):
            raise UsageError(f"`{name}` is swept twice", "give each name one --sweep")
        axes.append((name, _values(f"--sweep {name}", text, "avg,max")))
    points: list[dict[str, str]] = [{}]
    for name, values in axes:
        points = [{**p, name: v} for p in points for v in values]
    return points


def _values(option: str, text: str, example: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise UsageError(f"{option} takes a list like {example}", f"not `{text}`")
    return values


def _swept(docs: list[dict[str, Any]]) -> list[str]:
    """The swept names other than ratio (which keeps its own column), in sweep order."""
    names = dict.fromkeys(k for d in docs for k in d.get("sweep", {}) if k != "ratio")
    return list(names)


def _verify(reports: list[tuple[Path, dict[str, str], Network, Cost]], quiet: bool) -> bool:
    """Run fvcore on the plain-torch lowering of each network, and on the fused lowering with
    its SE blocks traced as the fused op (counted by sedsl's fvcore handles); True if any count
    disagrees with the analytic one."""
    failed = False
    for spec, _, net, c in reports:
        analytic = c if c.convention == "fvcore" else net.cost("fvcore")
        for label, se, fused, total in (("base", False, False, analytic.base.flops),
                                        ("se", True, False, analytic.se.flops),
                                        ("se fused", True, True, analytic.se.flops)):
            with err().status(f"fvcore: tracing {net.name} ({label})", spinner="dots"):
                measured = _fvcore_count(net, se, fused)
            same = measured == total
            failed |= not same
            line = (f"{spec} {label}: analytic {total:,}  fvcore {measured:,}  "
                    f"{'equal' if same else 'DIFFERENT'}")
            (err() if quiet else out()).print(line)
    return failed


def _fvcore_count(net: Network, se: bool, fused: bool) -> int:
    """fvcore's count of a lowering; the fused one with its SE blocks traced as sedsl's op."""
    from sedsl.pytorch.flops import fvcore_flops, fvcore_handles

    shape = net.ir.graph["input"]
    if not fused:
        return fvcore_flops(net.to_torch(fused=False, se=se), shape)
    from sedsl.pytorch.export import trace_fused_op

    with trace_fused_op():
        return fvcore_flops(net.to_torch(fused=True, se=se), shape, fvcore_handles())


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
    out().print(head)
    rows = Table(title=f"where the SE cost comes from (by {by})")
    for col in (by, "SE blocks", "base params", "SE params", "share", "SE FLOPs", "passes/U"):
        rows.add_column(col, justify="left" if col == by else "right")
    for r in c.rows(by):
        rows.add_row(r.key, str(r.se_blocks), f"{r.base_params:,}", f"{r.se_params:,}",
                     _pct(r.se_params, o.params), f"{r.se_flops:,}", f"{r.se_passes:.2f}")
    out().print(rows)
    est = round(float(e.params))
    other = o.params - est - e.bias - e.rounding
    out().print(f"closed form (2/r)·Σ N_s·C_s² = {est:,}; exact SE params {o.params:,}; "
                f"difference {o.params - est:+,} = FC biases {e.bias:,} + rounding "
                f"{e.rounding:+,}" + (f" + other layers {other:+,}" if other else ""))


def _print_sweep(docs: list[dict[str, Any]]) -> None:
    from rich.table import Table

    t = Table(title=f"SE overhead, convention {docs[0]['convention']}")
    swept = _swept(docs)
    for col in ("spec", "ratio", *swept, "params", "+params", "FLOPs", "+FLOPs", "passes/U"):
        t.add_column(col, justify="left" if col == "spec" or col in swept else "right")
    for d in docs:
        o = d["overhead"]
        t.add_row(d["spec"], str(d.get("ratio", "")),
                  *(str(d.get("sweep", {}).get(n, "")) for n in swept), f"{d['se']['params']:,}",
                  f"+{o['params_pct']:.2f}%", _g(d["se"]["flops"]), f"+{o['flops_pct']:.3f}%",
                  f"{d['se_passes']:.1f}")
    out().print(t)


def _print_summary(c: Cost, no_se: bool) -> None:
    if no_se:
        out().print(f"{c.network} (base): {c.base.params:,} params, {_g(c.base.flops)} FLOPs "
                  f"({c.convention})")
        return
    _print_report(c, "stage")


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "-"


# --- per-layer tables and sweep plots (sedsl/targets/report.py, sedsl/targets/plot.py)
# ---------------------------


def _layer_docs(reports: list[tuple[Path, dict[str, str], Network, Cost]], depth: int,
                batches: list[int]) -> list[dict[str, Any]]:
    from sedsl.record import asdict
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
        out().print(table)
        out().print(note)


def _plot(reports: list[tuple[Path, dict[str, str], Network, Cost]], target: Path) -> None:
    """Params and FLOPs per stage against the swept setting, written to `target`."""
    from sedsl.targets.plot import sweep_plot

    def label(spec: Path, point: dict[str, str]) -> str:
        swept = ", ".join(f"{k}={v}" for k, v in point.items())
        several = len({s for s, *_ in reports}) > 1
        return f"{spec.stem} {swept}".strip() if several or not swept else swept

    points = [(label(spec, p), c) for spec, p, _, c in reports]
    swept = sorted({k for _, p, *_ in reports for k in p})
    output_folder(target, "--plot")
    try:
        sweep_plot(points, target, setting=", ".join(swept) or "spec")
    except OSError as e:
        raise SedslError(f"cannot write {files.shown(target)}: {files.reason(e)}") from None
    err().print(f"wrote {target}")


