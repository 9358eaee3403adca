"""`sedsl train` and `sedsl excite` (sedsl.analysis; torch and the optional extras load inside)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sedsl.cli.app import (
    InputOption,
    SetOption,
    _load,
    _overrides,
    _spec_errors,
    app,
    output_folder,
)
from sedsl.errors import UsageError

if TYPE_CHECKING:
    pass


# --- train / excite (sedsl.analysis; torch and the optional extras load inside) ----------------

DataOption = Annotated[str, typer.Option(
    "--data", help="sklearn:digits, mnist5k (5,000 real 28x28 MNIST digits), or a folder of "
    "class folders (optionally train/ and val/).")]
ResizeOption = Annotated[int | None, typer.Option(
    help="Resize the shorter image side to this before the centre crop (default: crop/0.875).")]
NormOption = Annotated[str | None, typer.Option(
    metavar="A,B,C", help="Per-channel normalisation (default: ImageNet's).")]
# The training options `train` and `compare` share (sedsl.analysis.train.TrainConfig).
EpochsOption = Annotated[int, typer.Option(min=1)]
BatchOption = Annotated[int, typer.Option(min=1, help="Global batch size.")]
OptimizerOption = Annotated[str, typer.Option(help="sgd or adamw.")]
LrOption = Annotated[float | None, typer.Option(
    help="Peak learning rate (default: 0.1 for sgd, 1e-3 for adamw).")]
DecayOption = Annotated[float | None, typer.Option(help="Default: 5e-4 sgd, 0.05 adamw.")]
SmoothingOption = Annotated[float, typer.Option(min=0.0, max=1.0)]
DeviceOption = Annotated[str, typer.Option(
    metavar="DEVICE", help="auto (the GPU when there is one), cpu, cuda or cuda:N.")]


def _train_config(epochs: int, batch: int, optimizer: str, lr: float | None,
                  weight_decay: float | None, label_smoothing: float, seed: int = 0,
                  limit_batches: int | None = None) -> Any:
    """The options as a TrainConfig; an optimizer sedsl does not have is a usage error."""
    from sedsl.analysis.train import TrainConfig

    if optimizer not in ("sgd", "adamw"):
        raise UsageError(f"--optimizer takes sgd or adamw, not `{optimizer}`")
    return TrainConfig(epochs, batch, optimizer, lr, weight_decay, label_smoothing, seed,
                       limit_batches=limit_batches)


def _prep(resize: int | None, mean: str | None, std: str | None) -> Any:
    from sedsl.analysis.data import IMAGENET_MEAN, IMAGENET_STD, Prep

    def floats(text: str | None, default: tuple[float, ...]) -> tuple[float, ...]:
        try:
            return default if text is None else tuple(float(v) for v in text.split(","))
        except ValueError:
            raise UsageError(f"`{text}` is not a list of numbers", "e.g. 0.5,0.5,0.5") \
                from None

    return Prep(resize, floats(mean, IMAGENET_MEAN), floats(std, IMAGENET_STD))


@app.command()
def train(
    spec: Annotated[Path, typer.Argument(help="The .se spec to train.")],
    data: DataOption,
    output: Annotated[Path, typer.Option("-o", "--output", help="Run folder: checkpoint.pt, "
                                         "model.pt, metrics.csv.")] = Path("runs/train"),
    epochs: EpochsOption = 10,
    batch: BatchOption = 64,
    optimizer: OptimizerOption = "sgd",
    lr: LrOption = None,
    weight_decay: DecayOption = None,
    label_smoothing: SmoothingOption = 0.1,
    seed: int = 0,
    resume: Annotated[bool, typer.Option(help="Continue from the folder's checkpoint.")] = False,
    compare_base: Annotated[bool, typer.Option(
        "--compare-base", help="Also train the --no-se network (same seed, same data order) "
        "and compare accuracy and cost.")] = False,
    no_se: Annotated[bool, typer.Option("--no-se", help="Train the base network.")] = False,
    device: DeviceOption = "auto",
    sets: SetOption = None,
    input_size: InputOption = None,
    resize: ResizeOption = None,
    mean: NormOption = None,
    std: NormOption = None,
) -> None:
    """Train SPEC on a dataset (runs under torchrun with DDP too)."""
    from sedsl.analysis.commands import run_train

    cfg = _train_config(epochs, batch, optimizer, lr, weight_decay, label_smoothing, seed)
    output_folder(output, make=False, is_folder=True)
    with _spec_errors():
        net = _load(spec, sets, input_size)
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
            raise UsageError(f"--ablate takes `stage`, not `{ablate}`")
        if split not in ("train", "val", "all"):
            raise UsageError(f"--split takes train, val or all, not `{split}`")
        output_folder(output, make=False, is_folder=True)
        net = _load(spec, sets, input_size)
        run_excite(net, spec, weights, data, output, _prep(resize, mean, std), split=split,
                   per_class=per_class, classes=names(classes), blocks=names(blocks),
                   fused=not no_fuse, ablate=ablate is not None, epsilon=epsilon,
                   overrides=_overrides(sets, input_size))


