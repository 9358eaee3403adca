"""How fast a spec past the node limit is refused: with the size estimate before elaboration
(sedsl.compile.estimate), and without it (the elaborator's own count, which refuses a repeat
once its second copy shows the rest would pass the limit). Run: python bench/estimate.py
[--repeat N]. Target: under 100 ms for a spec of 10^6 nodes by nested repeats."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

from _timing import machine

import sedsl
from sedsl.compile import estimate

SPECS = {
    "10^6 nodes by three nested repeats": (
        "network n {\n  input 3x8x8\n  { { bn relu * 100 } * 100 } * 100\n}\n"),
    "issue 21: blocks l1..l4 of * 10, one * 100": (
        "block l0 { conv(8, 3) bn relu }\nblock l1 { l0 * 10 }\nblock l2 { l1 * 10 }\n"
        "block l3 { l2 * 10 }\nblock l4 { l3 * 100 }\nnetwork n {\n  input 8x8x8\n  l4 * 10\n}\n"),
    "10^9 nodes: { { bn * 1000 } * 1000 } * 1000": (
        "network n {\n  input 3x32x32\n  { { bn * 1000 } * 1000 } * 1000\n}\n"),
}


@contextmanager
def without_estimate() -> Iterator[None]:
    saved = estimate.check
    estimate.check = lambda *args: None  # type: ignore[assignment]
    try:
        yield
    finally:
        estimate.check = saved


def refused(text: str) -> float:
    """Seconds (CPU) until `text` is refused; it must be."""
    start = time.process_time()
    try:
        sedsl.loads(text)
    except sedsl.SpecError:
        return time.process_time() - start
    raise AssertionError("not refused")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    sedsl.loads("network warm {\n  input 3x8x8\n  bn\n}\n")  # imports and parser tables
    print(machine())
    print(f"{'spec':<46} {'with the estimate':>18} {'without it':>12}")
    for label, text in SPECS.items():
        with_it = statistics.median(refused(text) for _ in range(args.repeat))
        with without_estimate():
            without = statistics.median(refused(text) for _ in range(3))
        print(f"{label:<46} {with_it * 1e3:15.1f} ms {without * 1e3:9.0f} ms")


if __name__ == "__main__":
    main()
