"""Sweep plots (`sedsl cost --ratio 2,4,8,16 --plot sweep.svg`): the SE blocks' parameters and
FLOPs against the swept setting, stacked per stage. Needs matplotlib (`pip install sedsl[plot]`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure  # no pyplot: no display, no global figure state

from sedsl.targets.cost import Cost


def stage_series(points: Sequence[tuple[str, Cost]]) -> dict[str, tuple[list[int], list[int]]]:
    """stage -> (SE params per point, SE FLOPs per point), stages in network order."""
    stages: dict[str, tuple[list[int], list[int]]] = {}
    for i, (_, cost) in enumerate(points):
        for row in cost.rows("stage"):
            params, flops = stages.setdefault(row.key, ([0] * len(points), [0] * len(points)))
            params[i], flops[i] = row.se_params, row.se_flops
    return {k: v for k, v in stages.items() if any(v[0]) or any(v[1])}


def sweep_plot(points: Sequence[tuple[str, Cost]], target: Path, setting: str = "ratio") -> None:
    """Two panels (SE params, SE FLOPs), one stacked bar per point, one colour per stage."""
    labels = [label for label, _ in points]
    series = stage_series(points)
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for panel, (ax, what) in enumerate(zip(axes, ("parameters", "FLOPs"), strict=True)):
        bottom = [0] * len(points)
        for stage, values in series.items():
            ax.bar(labels, values[panel], bottom=bottom, label=stage)
            bottom = [b + v for b, v in zip(bottom, values[panel], strict=True)]
        base = [c.base.params if panel == 0 else c.base.flops for _, c in points]
        for x, (top, whole) in enumerate(zip(bottom, base, strict=True)):
            ax.annotate(f"+{100 * top / whole:.2f}%", (x, top), ha="center", va="bottom",
                        fontsize=8)
        ax.set_title(f"SE {what} ({points[0][1].convention})" if panel else f"SE {what}")
        ax.set_xlabel(setting)
        ax.set_ylabel(what)
    axes[0].legend(title="stage", fontsize=8)
    fig.suptitle(f"{points[0][1].network}: SE overhead per stage against {setting}")
    metadata: dict[str, Any] = {"Date": None} if target.suffix == ".svg" else {}
    with matplotlib.rc_context({"svg.hashsalt": "sedsl"}):  # the same file for the same numbers
        fig.savefig(target, metadata=metadata)
