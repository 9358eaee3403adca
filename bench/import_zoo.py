"""Write-back over a model zoo: each model imported (`sedsl.from_torch`), written back as a spec
(`write_spec`: exact or refused) and the spec compiled again; one line per model with the outcome
and the seconds each step took, then the counts. Models are built on the meta device (no memory,
no initialisation), so the largest cost nothing to make.

    python bench/import_zoo.py [--zoo torchvision|timm] [--size 64] [--filter regnet]

tests/test_writeback.py runs the torchvision zoo at 64x64 (75 for Inception-v3) in CI.
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

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


def zoo(name: str) -> tuple[list[str], Callable[[str], nn.Module]]:
    if name == "timm":
        import timm

        return timm.list_models(), lambda n: timm.create_model(n, pretrained=False)
    import torchvision  # type: ignore[import-untyped]

    names = [n for n in torchvision.models.list_models(module=torchvision.models)
             if not n.startswith(("vit_", "swin_", "maxvit_"))]
    return names, lambda n: torchvision.models.get_model(n, weights=None)


def run(name: str, make: Callable[[str], nn.Module], size: int) -> tuple[str, str, list[float]]:
    times = [time.perf_counter()]

    def lap() -> None:
        times.append(time.perf_counter())

    try:
        with empty_weights():
            model = make(name)
        lap()
        net = sedsl.from_torch(model, input=size, name=name)
        lap()
    except Exception as err:  # a zoo model may fail to build, or to import
        return "no import", getattr(err, "message", str(err)).splitlines()[0][:140], []
    try:
        written = write_spec(net.base_ir)
    except NoSpecForm as err:
        return "refused", err.message[:140], []
    lap()
    back = sedsl.loads(written.text, path=f"{name}.se").cost().base
    lap()
    theirs = net.cost().se
    same = (back.params, back.flops) == (theirs.params, theirs.flops)
    seconds = [b - a for a, b in itertools.pairwise(times)]
    return ("round-trips" if same else "DIFFERENT"), f"{len(written.text.splitlines())} lines", \
        seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zoo", choices=["torchvision", "timm"], default="torchvision")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--filter", default="")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    names, make = zoo(args.zoo)
    outcomes: Counter[str] = Counter()
    print(f"{'model':28} {'outcome':12} {'build':>6} {'import':>6} {'write':>6} {'reload':>6}")
    for name in names:
        if args.filter not in name:
            continue
        size: Any = max(args.size, 75) if "inception" in name else args.size
        outcome, note, seconds = run(name, make, size)
        outcomes[outcome] += 1
        cells = " ".join(f"{s:6.2f}" for s in seconds) if seconds else ""
        print(f"{name:28} {outcome:12} {cells}  {note}", flush=True)
    print(", ".join(f"{n} {k}" for k, n in outcomes.most_common()))


if __name__ == "__main__":
    main()
