"""How long the digits demo trains: `sedsl train specs/se_digits.se --data sklearn:digits`
(10 epochs by default) in a fresh process, alone and with --compare-base, beside the CPU time it
used (wall time on a shared machine includes waiting for the cores). `--mnist` does the same for
`specs/se_mnist.se` on `mnist5k` (5,000 real 28x28 digits).
Run: python bench/train_digits.py [--mnist] [--epochs N] [--threads T]"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import ROOT, machine

DEMOS = {False: ("specs/se_digits.se", "sklearn:digits", "359 held-out digits"),
         True: ("specs/se_mnist.se", "mnist5k", "1,000 held-out digits")}


def run(args: list[str], threads: int | None, mnist: bool = False) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one `sedsl train` run."""
    spec, data, _ = DEMOS[mnist]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sedsl.cli", "train", spec, "--data", data, *args],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def top1(folder: Path) -> str:
    rows = list(csv.DictReader((folder / "metrics.csv").read_text().splitlines()))
    return f"{100 * float(rows[-1]['val_top1']):.2f}%"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS")
    parser.add_argument("--mnist", action="store_true", help="se_mnist.se on mnist5k")
    a = parser.parse_args()
    held_out = DEMOS[a.mnist][2]
    print(machine(), f"| load average {os.getloadavg()[0]:.1f} | threads {a.threads or 'default'}")
    out = Path(tempfile.mkdtemp())
    alone = run(["--epochs", str(a.epochs), "-o", str(out / "alone")], a.threads, a.mnist)
    both = run(["--epochs", str(a.epochs), "--compare-base", "-o", str(out / "both")], a.threads,
               a.mnist)
    print(f"{'run':28} {'wall':>8} {'CPU':>8}  final val top-1 ({held_out})")
    print(f"{'train (SE)':28} {alone[0]:7.1f}s {alone[1]:7.1f}s  {top1(out / 'alone')}")
    print(f"{'train --compare-base':28} {both[0]:7.1f}s {both[1]:7.1f}s  "
          f"SE {top1(out / 'both' / 'se')}, base {top1(out / 'both' / 'base')}")


if __name__ == "__main__":
    main()
