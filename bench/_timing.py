"""Shared timing helpers for the bench scripts: interleaved runs, medians, a side-by-side table."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def interleaved(candidates: dict[str, Callable[[], object]], repeat: int,
                per_round: dict[str, int] | None = None) -> dict[str, float]:
    """Median seconds of each candidate, running them in turn so drift hits all alike; a
    candidate in `per_round` runs that many times a round (a sub-second command samples the
    machine's speed far less than a ten-second one does, and a shared VM's speed varies)."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeat):
        for name, fn in candidates.items():
            for _ in range((per_round or {}).get(name, 1)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def environment() -> dict[str, str]:
    """The environment of a user's shell: the repository importable, and bytecode caching on
    (as after `pip install`; some CI and sandbox shells set PYTHONDONTWRITEBYTECODE, which makes
    every run recompile the package from source)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def command(argv: Sequence[str]) -> Callable[[], object]:
    """A fresh-process run of argv from the repository root (startup and imports included)."""
    env = environment()

    def run() -> object:
        return subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True)

    return run


def python(code: str) -> Callable[[], object]:
    return command([sys.executable, "-c", code])


def table(rows: list[tuple[str, float]], baseline: str) -> str:
    base = dict(rows)[baseline]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'':{width}}  {'median':>10}  {'vs ' + baseline:>{len(baseline) + 3}}"]
    for name, seconds in rows:
        ratio = f"{seconds / base:.2f}x"
        lines.append(f"{name:{width}}  {seconds * 1e3:8.1f} ms  {ratio:>{len(baseline) + 3}}")
    return "\n".join(lines)


def machine() -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, torch {torch.__version__}")
