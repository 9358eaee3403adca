"""How fast `sedsl cost` answers, beside fvcore tracing timm's model of the same network, with
the two totals printed next to each other. Run: python bench/cost_speed.py [--repeat N]"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _timing import ROOT, command, interleaved, machine, python, table

SPEC = "specs/se_resnext101.se"
FVCORE = """
import warnings, logging, torch, timm
warnings.simplefilter("ignore"); logging.getLogger("fvcore").setLevel(logging.ERROR)
from fvcore.nn import FlopCountAnalysis
model = timm.create_model("seresnext101_32x4d").eval()
analysis = FlopCountAnalysis(model, torch.zeros(1, 3, 224, 224))
analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
print(analysis.total(), sum(p.numel() for p in model.parameters()))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sedsl = [sys.executable, "-m", "sedsl.cli", "cost", SPEC, "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ours = json.loads(subprocess.run(sedsl, cwd=ROOT, env=env, check=True, capture_output=True,
                                     text=True).stdout)
    flops, params = map(int, subprocess.run([sys.executable, "-c", FVCORE], cwd=ROOT, env=env,
                                            check=True, capture_output=True, text=True)
                        .stdout.split())
    print(f"machine: {machine()}\n")
    print(f"{'':34}{'FLOPs (fvcore)':>16}{'params':>14}")
    print(f"{'sedsl cost ' + SPEC:34}{ours['se']['flops']:>16,}{ours['se']['params']:>14,}")
    print(f"{'fvcore on timm seresnext101_32x4d':34}{flops:>16,}{params:>14,}")
    same = ours["se"]["flops"] == flops and ours["se"]["params"] == params
    print(f"totals {'identical' if same else 'DIFFERENT'}\n")
    medians = interleaved({
        "fvcore on timm (create + trace)": python(FVCORE),
        "sedsl cost --json": command(sedsl),
    }, args.repeat)
    print(f"whole process, fresh interpreter each run, median of {args.repeat}:")
    print(table(list(medians.items()), "fvcore on timm (create + trace)"))
    ratio = medians["fvcore on timm (create + trace)"] / medians["sedsl cost --json"]
    print(f"\nsedsl cost is {ratio:.1f}x faster (target: >= 10x)")


if __name__ == "__main__":
    main()
