"""`sedsl import` and `sedsl export`: torch models in, torch artifacts out()."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sedsl import extras
from sedsl.cli.app import (
    InputOption,
    SetOption,
    SpecArgument,
    _load,
    _spec_errors,
    _write_file,
    app,
    err,
    out,
    output_folder,
)
from sedsl.cli.cost import _g

if TYPE_CHECKING:
    pass


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
    from sedsl.pytorch.export import FORMATS

    if fmt not in FORMATS:
        raise typer.BadParameter(f"unknown format `{fmt}`; expected {', '.join(FORMATS)}",
                                 param_hint="--format")
    if fmt == "onnx":  # torch's dynamo exporter writes with both
        for module in ("onnxscript", "onnx"):
            extras.require(module, "onnx", "export --format onnx")
    if output is not None:
        output_folder(output, make=False)
    state = None
    if weights is not None:
        from sedsl.pytorch import saved

        state = saved.state_dict(weights)  # a bad file is refused before the compile
    with _spec_errors():
        net = _load(spec, sets, input_size)
    target = output or Path("build") / f"{net.name}{FORMATS[fmt]}"
    if target.is_dir():
        raise typer.BadParameter(f"{target} is a folder; -o names the file to write",
                                 param_hint="-o")
    output_folder(target)
    with err().status(f"exporting {net.name} ({fmt})", spinner="dots"):
        import torch

        from sedsl.pytorch.export import export

        model = net.to_torch(fused=fused, se=not no_se)
        if state is not None:
            from sedsl.pytorch.weights import transfer_weights

            transfer_weights(state, model)
        example = torch.randn(1, *net.ir.graph["input"])
        export(model, example, fmt, target)
    out().print(f"wrote {target}")


# --- import -------------------------------------------------------------------------------------


@app.command("import")
def import_model(
    source: Annotated[str, typer.Argument(help="torchvision:NAME, timm:NAME or "
                                          "module.path:factory.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="The .se file to write "
                                                "(default: print it).")] = None,
    input_size: InputOption = None,
) -> None:
    """Import a PyTorch model and write it back as a readable .se spec: exactly the model, or
    an error naming what no spec can state (and no file). The model's own attention blocks
    (SE, ECA, CBAM, ...) are written as `se` rules: `--no-se` builds the model without them."""
    from sedsl.api import from_torch, input_override
    from sedsl.pytorch.importer import load_model
    from sedsl.targets.spec import write_spec

    with _spec_errors():
        model, name = load_model(source)
        size = input_override(input_size) or (224,)
        shape = (3, *(size * 2 if len(size) == 1 else size))[-3:]
        net = from_torch(model, input=shape, name=name)
        written = write_spec(net.base_ir, se_graph=net.ir)
    for note in net.notes:
        err().print(f"note: {note}", highlight=False)
    if output is None:
        sys.stdout.write(written.text)
        return
    _write_file(output, written.text)
    c = net.cost()
    blocks = ", ".join(f"{n} {v}" for v, n in c.variants.items())
    se = f"; with its {blocks} attention blocks {c.se.params:,} params, {_g(c.se.flops)} " \
        "FLOPs" if blocks else ""
    out().print(f"wrote {output}: {name}, {len(written.text.splitlines())} lines, "
                f"{c.base.params:,} params, {_g(c.base.flops)} FLOPs (fvcore){se}")
