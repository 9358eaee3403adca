"""Cost of an existing model: `sedsl.from_torch(model).cost()` (an fx trace, then the analytic
count) beside fvcore's FlopCountAnalysis on the same model, totals side by side.
Run: python bench/import_cost.py [--size 224] [--repeat 3]"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import timm
import torch
import torchvision

import sedsl
from sedsl.pytorch.flops import fvcore_flops

MODELS = [("torchvision", "resnet50"), ("torchvision", "mobilenet_v2"),
          ("torchvision", "efficientnet_b0"), ("torchvision", "regnet_y_400mf"),
          ("torchvision", "vgg16_bn"), ("timm", "resnext50_32x4d"),
          ("timm", "inception_resnet_v2")]


def best(fn, repeat: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    torch.set_grad_enabled(False)
    print("| model | sedsl import + cost | cost alone | fvcore | ratio | sedsl FLOPs | fvcore |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for zoo, name in MODELS:
        size = max(args.size, 75)
        model = (torchvision.models.get_model(name) if zoo == "torchvision"
                 else timm.create_model(name)).eval()
        t_import, net = best(lambda m=model, s=size: sedsl.from_torch(m, input=s), args.repeat)
        t_cost, cost = best(net.cost, args.repeat)  # type: ignore[attr-defined]
        t_fv, fv = best(lambda m=model, s=size: fvcore_flops(m, (3, s, s)), args.repeat)
        total = t_import + t_cost
        print(f"| {name} | {total:.2f} s | {t_cost * 1000:.0f} ms | {t_fv:.2f} s | "
              f"{t_fv / total:.1f}x | {cost.base.flops:,} | {fv:,} |")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
