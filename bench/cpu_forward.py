"""CPU inference: the sedsl-built SE-ResNeXt-101 against timm's seresnext101_32x4d with the same
weights, interleaved in one process, eager and torch.compile, batch 1 and 8.
Run: python bench/cpu_forward.py [--repeat N] [--no-compile] [--size 224]"""

from __future__ import annotations

import argparse

import torch
from _timing import ROOT, interleaved, machine

import sedsl

SPEC = ROOT / "specs" / "se_resnext101.se"


def models() -> dict[str, torch.nn.Module]:
    import timm

    theirs = timm.create_model("seresnext101_32x4d").eval()
    net = sedsl.load(SPEC, layout="timm")
    ours = {
        "sedsl (fused SE op)": net.to_torch(fused=True),
        "sedsl (plain torch)": net.to_torch(fused=False),
    }
    for model in ours.values():
        sedsl.transfer_weights(theirs, model).eval()
    return {"timm": theirs, **ours}


def check_same(candidates: dict[str, torch.nn.Module], x: torch.Tensor) -> None:
    with torch.no_grad():
        expected = candidates["timm"](x)
        for name, model in candidates.items():
            diff = (model(x) - expected).abs().max().item() / expected.abs().max().item()
            assert diff < 1e-4, f"{name} differs from timm by {diff:.2e}"


def run(candidates: dict[str, torch.nn.Module], batch: int, size: int, repeat: int,
        label: str) -> None:
    x = torch.randn(batch, 3, size, size)
    check_same(candidates, x)
    with torch.inference_mode():
        for model in candidates.values():  # warm up (and compile)
            model(x)
        medians = interleaved({n: (lambda m=m: m(x)) for n, m in candidates.items()}, repeat)
    base = medians["timm"]
    print(f"\n{label}, batch {batch}, {size}x{size}, median of {repeat}:")
    for name, seconds in medians.items():
        print(f"  {name:22} {seconds * 1e3:9.1f} ms   {seconds / base:5.2f}x timm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"machine: {machine()}, {torch.get_num_threads()} torch threads")
    eager = models()
    for batch in (1, 8):
        run(eager, batch, args.size, args.repeat, "eager")
    if not args.no_compile:
        compiled = {n: torch.compile(m) for n, m in eager.items()}
        for batch in (1, 8):
            run(compiled, batch, args.size, args.repeat, "torch.compile")
    print("\nratio <= 1.00x: sedsl no slower than timm")


if __name__ == "__main__":
    main()
