"""`sedsl compare`: a sweep x seeds grid trained alike, accuracy over seeds beside exact cost
(sedsl.analysis.compare; torch, Ray and matplotlib load inside)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from sedsl.cli.analysis import (
    BatchOption,
    DataOption,
    DecayOption,
    DeviceOption,
    EpochsOption,
    LrOption,
    NormOption,
    OptimizerOption,
    ResizeOption,
    SmoothingOption,
    _prep,
    _train_config,
)
from sedsl.cli.app import InputOption, SetOption, _overrides, _spec_errors, app, err
from sedsl.cli.cost import _sweep_points
from sedsl.errors import UsageError


@app.command()
def compare(
    spec: Annotated[Path, typer.Argument(help="The .se spec to train at every point.")],
    data: DataOption,
    sweeps: Annotated[list[str] | None, typer.Option(
        "--sweep", metavar="NAME=V1,V2,...", help="Sweep any parameter or SE setting; "
        "variant=none is the base network; several --sweep multiply. The first point is the "
        "reference for the paired differences.")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds 0..K-1 per point.")] = 5,
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder: compare.json/.csv/"
                                         ".svg and trials/<point>/seed<k>/.")]
    = Path("runs/compare"),
    epochs: EpochsOption = 10,
    batch: BatchOption = 64,
    optimizer: OptimizerOption = "sgd",
    lr: LrOption = None,
    weight_decay: DecayOption = None,
    label_smoothing: SmoothingOption = 0.1,
    jobs: Annotated[int, typer.Option(min=1, help="Trials at a time on this machine, one "
                                      "process each.")] = 1,
    ray: Annotated[str | None, typer.Option(
        metavar="auto|ADDRESS", help="Run the trials as Ray tasks: `auto` joins a running "
        "cluster (RAY_ADDRESS, or `ray start` here) or starts one here; or a cluster's "
        "address (pip install 'sedsl\\[ray]').")] = None,
    cpus_per_trial: Annotated[float, typer.Option(min=0.0, help="Ray: CPUs a trial "
                                                  "reserves.")] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(min=0.0, help="Ray: GPUs a trial "
                                                  "reserves.")] = 0.0,
    nproc_per_trial: Annotated[int, typer.Option(min=1, help="Each trial as a torchrun job "
                                                 "of this many processes (DDP).")] = 1,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print compare.json instead of the "
                                          "table.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print compare.csv instead of the "
                                         "table.")] = False,
    limit_batches: Annotated[int | None, typer.Option(min=1, hidden=True)] = None,
    sets: SetOption = None,
    input_size: InputOption = None,
    resize: ResizeOption = None,
    mean: NormOption = None,
    std: NormOption = None,
) -> None:
    """Train every sweep point with K seeds alike; mean ± std val top-1, the paired difference
    to the first point with a 95% interval, exact params and FLOPs, training time."""
    from sedsl.analysis import compare as cmp

    if as_json and as_csv:
        raise UsageError("--json and --csv both print to stdout: choose one")
    if ray is not None and jobs > 1:
        raise UsageError("--jobs is for trials on this machine; with --ray the cluster's free "
                         "CPUs and GPUs decide", "give --cpus-per-trial / --gpus-per-trial "
                         "instead")
    cfg = _train_config(epochs, batch, optimizer, lr, weight_decay, label_smoothing,
                        limit_batches=limit_batches)
    with _spec_errors():
        overrides = _overrides(sets, input_size)
        points = _sweep_points(None, sweeps)
        clash = sorted(set(overrides) & {k for p in points for k in p})
        if clash:
            raise UsageError(f"`{clash[0]}` is both --set and swept", "give it once")
        opts = cmp.Options(
            data=data, prep=_prep(resize, mean, std), cfg=cfg,
            seeds=cmp.seeds_of(seeds), device=device, nproc=nproc_per_trial, jobs=jobs,
            ray=ray, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial)

        def say(line: str) -> None:
            err().print(line, soft_wrap=True, markup=False)

        doc = cmp.compare(spec, overrides, points, opts, output, say)
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
    elif as_csv:
        sys.stdout.write(cmp.to_csv(doc))
    else:
        from rich.console import Console

        # as wide as it needs when piped (a table of five seeds and an interval is ~150 wide)
        wide = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
        wide.print(cmp.table(doc))
    from sedsl.analysis.figures import available

    figure = "compare.svg/.png" if available() else \
        "no figure: pip install 'sedsl[analysis]' for matplotlib"
    err().print(f"wrote {output}/compare.json, compare.csv, {figure}", markup=False)
