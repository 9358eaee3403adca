"""Import and write-back over a model zoo: each model imported (`sedsl.from_torch`), written back
as a spec (`write_spec`: exact or refused) and the spec compiled again; one line per model with
the outcome, then the counts. Models are built on the meta device (no memory, no initialisation),
so the largest cost nothing to make; `--check` builds them for real and also compares the
import with the model itself: parameters, fvcore's FLOPs and outputs (every parameter and BN
randomised, the imported weights), and the written spec's outputs with the model's weights
(`sedsl.transfer_weights`).

    python bench/import_zoo.py [--zoo torchvision|timm] [--size 64] [--filter regnet]
                               [--models A,B] [--shift K] [--check] [--markdown FILE]

The torchvision zoo is every classification model but ViT, Swin and MaxViT; the timm zoo is a
sample of its CNNs (`timm_sample`: models spread over each CNN module of timm, about one in
six). tests/test_writeback.py runs the torchvision zoo at 64x64 (75 for Inception-v3) in CI,
tests/test_import_zoo.py a fast timm subset; docs/import.md's coverage table is this script's
`--markdown` output.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

import sedsl
from sedsl.targets.spec import NoSpecForm, write_spec


@contextmanager
def empty_weights() -> Iterator[None]:
    """Parameters and buffers made on the meta device (tests/test_writeback.py has the same)."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(self: nn.Module, name: str, p: nn.Parameter | None) -> None:
        register_parameter(self, name, p)
        if p is not None:
            self._parameters[name] = nn.Parameter(p.to("meta"), p.requires_grad)

    def buffer(self: nn.Module, name: str, b: torch.Tensor | None, persistent: bool = True
               ) -> None:
        register_buffer(self, name, None if b is None else b.to("meta"), persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer  # type: ignore
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]


# timm's modules of convolutional networks (transformers, hybrids with attention, MLP mixers and
# models built around other token mixers are out of sedsl's scope).
TIMM_CNN_MODULES = (
    "byobnet", "convmixer", "convnext", "cspnet", "cspnext", "densenet", "dla", "dpn",
    "efficientnet", "fasternet", "ghostnet", "hardcorenas", "hgnet", "hrnet", "inception_next",
    "inception_resnet_v2", "inception_v3", "inception_v4", "lcnetv2", "mobilenetv3", "nasnet",
    "nfnet", "pnasnet", "rdnet", "regnet", "repghost", "repvit", "res2net", "resnest", "resnet",
    "resnetv2", "rexnet", "selecsls", "senet", "sknet", "starnet", "tresnet", "vgg", "vovnet",
    "xception", "xception_aligned",
)


def timm_sample(shift: int = 0) -> list[str]:
    """About one model in six of each CNN module of timm (at least two), evenly spread over
    its list: a broad sample of the families and of their variants. `shift` moves every pick
    that many places on in its module's list: shift 1, 2, ... are samples of the same
    families that the sample (shift 0) the project was built against does not hold."""
    import timm

    names: list[str] = []
    for module in TIMM_CNN_MODULES:
        models = timm.list_models(module=module)
        k = min(len(models), max(2, round(len(models) / 6)))
        step = len(models) / k
        names += [models[(int(i * step) + shift) % len(models)] for i in range(k)]
    return list(dict.fromkeys(names))


def zoo(name: str, shift: int = 0) -> tuple[list[str], Callable[[str], nn.Module]]:
    if name == "timm":
        import timm

        return timm_sample(shift), lambda n: timm.create_model(n, pretrained=False)
    import torchvision  # type: ignore[import-untyped]

    names = [n for n in torchvision.models.list_models(module=torchvision.models)
             if not n.startswith(("vit_", "swin_", "maxvit_"))]
    return names, lambda n: torchvision.models.get_model(n, weights=None)


def size_of(name: str, size: int) -> int:
    """The input size: Inception's valid convolutions need 75 pixels; NASNet's, more."""
    if "nasnet" in name:
        return max(size, 96)
    return max(size, 75) if "inception" in name else size


def run(name: str, make: Callable[[str], nn.Module], size: int,
        check: bool) -> tuple[str, str, list[float]]:
    times = [time.perf_counter()]

    def lap() -> None:
        times.append(time.perf_counter())

    try:
        if check:
            model = make(name)
        else:
            with empty_weights():
                model = make(name)
        lap()
        net = sedsl.from_torch(model, input=size, name=name)
        lap()
    except Exception as err:  # a zoo model may fail to build, or to import
        message = getattr(err, "message", str(err)).splitlines()[0]
        return "no import", message.removeprefix(f"cannot write {name} as a spec: "), []
    try:
        written = write_spec(net.base_ir, se_graph=net.ir)
    except NoSpecForm as err:
        return "refused", err.message.removeprefix(f"cannot write {name} as a spec: "), []
    lap()
    back = sedsl.loads(written.text, path=f"{name}.se").cost()
    lap()
    theirs = net.cost()
    same = (back.base.params, back.base.flops, back.se.params, back.se.flops) == \
        (theirs.base.params, theirs.base.flops, theirs.se.params, theirs.se.flops)
    seconds = [b - a for a, b in itertools.pairwise(times)]
    note = f"{len(written.text.splitlines())} lines"
    if theirs.variants:
        note += ", " + ", ".join(f"{n} {v}" for v, n in theirs.variants.items())
    if check:
        problem = _against_model(model, net, size, written.text)
        if problem:
            return "DIFFERENT", problem, seconds
    return ("round-trips" if same else "DIFFERENT"), note, seconds


def _against_model(model: nn.Module, net: sedsl.Network, size: int, written: str) -> str:
    """What differs between the import and the model: parameters (those the forward calls),
    fvcore's FLOPs, outputs, and the outputs of the written spec given the model's weights
    (`sedsl.transfer_weights`); "" when nothing does."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.references import fvcore_count, n_params, randomise

    randomise(model)
    cost = net.cost()
    dropped = sum(n_params(model.get_submodule(note.split("`")[1]))
                  for note in net.notes if "never called" in note)
    if cost.se.params != n_params(model) - dropped:
        return f"parameters {cost.se.params:,} != the model's {n_params(model) - dropped:,}"
    flops = fvcore_count(model, (3, size, size))
    if cost.se.flops != flops:
        return f"FLOPs {cost.se.flops:,} != fvcore's {flops:,}"
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, got = model.eval()(x), net.to_torch(fused=False).eval()(x)
    error = ((got - expected).abs().max() / expected.abs().max()).item()
    if error > 1e-4:
        return f"outputs differ by {error:.2g}"
    try:
        back = sedsl.transfer_weights(model, sedsl.loads(written).to_torch(fused=False))
    except sedsl.SedslError as err:
        return f"the model's weights do not go into the written spec: {err.message}"
    with torch.no_grad():
        got = back.eval()(x)
    error = ((got - expected).abs().max() / expected.abs().max()).item()
    return f"the written spec's outputs differ by {error:.2g}" if error > 1e-4 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zoo", choices=["torchvision", "timm"], default="torchvision")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--filter", default="")
    parser.add_argument("--models", help="these models (comma-separated) instead of the zoo's")
    parser.add_argument("--shift", type=int, default=0,
                        help="timm: the sample with every pick moved this many places on")
    parser.add_argument("--check", action="store_true",
                        help="build the models and compare params, fvcore FLOPs and outputs")
    parser.add_argument("--markdown", type=Path, help="write the coverage table here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    names, make = zoo(args.zoo, args.shift)
    if args.models:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
    outcomes: Counter[str] = Counter()
    rows: list[tuple[str, str, str]] = []
    print(f"{'model':34} {'outcome':12} {'build':>6} {'import':>6} {'write':>6} {'reload':>6}")
    for name in names:
        if args.filter not in name:
            continue
        outcome, note, seconds = run(name, make, size_of(name, args.size), args.check)
        outcomes[outcome] += 1
        rows.append((name, outcome, note))
        cells = " ".join(f"{s:6.2f}" for s in seconds) if seconds else ""
        print(f"{name:34} {outcome:12} {cells}  {note[:160]}", flush=True)
    summary = ", ".join(f"{n} {k}" for k, n in outcomes.most_common())
    print(summary)
    if args.markdown is not None:
        lines = [f"{args.zoo}: {len(rows)} models, {summary}.", "",
                 "| model | outcome | notes |", "|---|---|---|"]
        lines += [f"| {n} | {o} | {t.replace('|', '/')} |" for n, o, t in rows]
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
