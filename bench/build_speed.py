"""How fast sedsl compiles: the front end on SE-ResNeXt-101, and the whole `sedsl build` beside
timm building the same network. Run: python bench/build_speed.py [--repeat N]"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile

from _timing import ROOT, command, interleaved, machine, python, table

SPEC = "specs/se_resnext101.se"


def front_end(repeat: int) -> None:
    import sedsl

    path = ROOT / SPEC
    sedsl.load(path)  # warm: the parser tables are built once per process
    warm = interleaved({"load": lambda: sedsl.load(path)}, repeat)["load"]
    first = statistics.median(float(subprocess.run(
        [sys.executable, "-c", "import time, sedsl; t = time.perf_counter(); "
         f"sedsl.load({str(path)!r}); print(time.perf_counter() - t)"],
        check=True, capture_output=True, text=True).stdout) for _ in range(3))
    print(f"parse + elaborate + shape inference + SE pass of {SPEC} "
          f"(sedsl.load, target < 100 ms):")
    print(f"  median of {repeat} in one process:             {warm * 1e3:6.1f} ms")
    print(f"  first load in a fresh process (imports apart): {first * 1e3:6.1f} ms")


def whole(repeat: int) -> None:
    out = tempfile.mkdtemp()
    sedsl = [sys.executable, "-m", "sedsl.cli", "build", SPEC, "-o", out]
    timm = "import timm; timm.create_model('seresnext101_32x4d')"
    load_to_torch = f"import sedsl; sedsl.load({SPEC!r}, layout='timm').to_torch()"
    medians = interleaved({
        "timm.create_model": python(timm),
        "sedsl build": command(sedsl),
        "sedsl .to_torch()": python(load_to_torch),
    }, repeat)
    print(f"\nwhole process, fresh interpreter each run (imports included), median of {repeat}:")
    print("  timm.create_model('seresnext101_32x4d') builds and initialises the torch module;")
    print("  `sedsl build` writes model.py, graph.json and summary.json (no torch import);")
    print("  `sedsl.load(...).to_torch()` compiles and instantiates the torch module.")
    print(table(list(medians.items()), "timm.create_model"))


def in_process(repeat: int) -> None:
    import timm

    import sedsl

    path = ROOT / SPEC
    medians = interleaved({
        "timm.create_model": lambda: timm.create_model("seresnext101_32x4d"),
        "sedsl load + to_torch": lambda: sedsl.load(path, layout="timm").to_torch(),
    }, repeat)
    print(f"\nin one process, imports done, median of {repeat}:")
    print(table(list(medians.items()), "timm.create_model"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"machine: {machine()}\n")
    front_end(max(args.repeat, 20))
    whole(args.repeat)
    in_process(args.repeat)


if __name__ == "__main__":
    main()
