"""How fast `sedsl cost` answers, beside fvcore tracing timm's model of the same network, with
the two totals printed next to each other, and where sedsl's start-up goes (`python -X importtime`,
self time summed per top-level package). Run: python bench/cost_speed.py [--repeat N]"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import time

from _timing import ROOT, command, environment, interleaved, machine, python, table

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
    env = environment()
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
    }, args.repeat, per_round={"sedsl cost --json": 5})
    print(f"whole process, fresh interpreter each run, median of {args.repeat} (fvcore) and of "
          f"{5 * args.repeat} (sedsl: five runs after each fvcore run):")
    print(table(list(medians.items()), "fvcore on timm (create + trace)"))
    ratio = medians["fvcore on timm (create + trace)"] / medians["sedsl cost --json"]
    print(f"\nsedsl cost is {ratio:.1f}x faster (target: >= 30x)")
    print(f"\nwhere `sedsl cost --json` spends its time (python -X importtime, best of "
          f"{args.repeat}):")
    print(import_breakdown(sedsl, env, args.repeat))


def import_breakdown(argv: list[str], env: dict[str, str], repeat: int) -> str:
    """Self import time per top-level package (minimum over runs), the rest counted as work."""
    best: dict[str, float] = {}
    walls = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], cwd=ROOT, env=env,
                              check=True, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        per: collections.Counter[str] = collections.Counter()
        for line in done.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+\d+ \| *(\S+)", line)
            if m:
                per[m.group(2).split(".")[0]] += int(m.group(1)) / 1e6
        for name, seconds in per.items():
            best[name] = min(best.get(name, seconds), seconds)
    wall = min(walls)
    top = sorted(best.items(), key=lambda kv: -kv[1])[:10]
    lines = [f"  {name:24}{seconds * 1e3:8.1f} ms" for name, seconds in top]
    rest = wall - sum(best.values())
    lines.append(f"  {'all imports':24}{sum(best.values()) * 1e3:8.1f} ms")
    lines.append(f"  {'the rest (start, work)':24}{rest * 1e3:8.1f} ms  of {wall * 1e3:.1f} ms")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
