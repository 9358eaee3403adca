"""excite.json as pictures (matplotlib, an optional extra): the SE paper's figure, per-class
mean gate against channel index for chosen blocks, and one summary across depth."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def draw(doc: dict[str, Any], names: list[str], folder: Path) -> list[Path]:
    """Write gates_<block>.svg/.png for the named blocks and depth.svg/.png; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "sedsl"  # reproducible SVG ids
    written: list[Path] = []
    blocks = {b["name"]: b for b in doc["blocks"]}
    for name in names:
        b = blocks[name]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for cls, entry in b["classes"].items():
            ax.plot(range(b["channels"]), entry["mean"], lw=0.9, label=cls)
        ax.set(title=f"{name} (depth {b['depth']})", xlabel="channel index",
               ylabel="mean gate s", xlim=(0, max(1, b["channels"] - 1)))
        ax.legend(fontsize=6, ncol=2, loc="best", title="class", title_fontsize=6)
        written += _save(fig, folder / f"gates_{name}")
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    depth = [b["depth"] for b in doc["blocks"]]
    ax.plot(depth, [b["class_specificity"] for b in doc["blocks"]], "o-",
            label="class specificity (between-class share of variance)")
    ax.plot(depth, [b["saturation"]["low"] + b["saturation"]["high"] for b in doc["blocks"]],
            "s-", label=f"saturation (share within {doc['epsilon']} of a bound)")
    ax.plot(depth, [b["saturation"]["high"] for b in doc["blocks"]], "^--", lw=0.8,
            label="of which at the upper bound")
    ax.set(xlabel="SE block (depth)", ylim=(0, 1), title=f"{doc['network']}: gates by depth")
    ax.set_xticks(depth, [b["name"].removesuffix(".se") for b in doc["blocks"]], rotation=60,
                  fontsize=6, ha="right")
    ax.legend(fontsize=6)
    written += _save(fig, folder / "depth")
    plt.close(fig)
    return written


def _save(fig: Any, stem: Path) -> list[Path]:
    fig.tight_layout()
    paths = [stem.with_name(stem.name + ".svg"), stem.with_name(stem.name + ".png")]
    for p in paths:
        fig.savefig(p, dpi=120, metadata={"Date": None} if p.suffix == ".svg" else None)
    return paths


def draw_compare(doc: dict[str, Any], stem: Path) -> list[Path]:
    """compare.svg/.png: each point's mean val top-1 against its parameters, error bars ±1
    standard deviation over the seeds, the seeds' own values as dots; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plt.rcParams["svg.hashsalt"] = "sedsl"
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for p in doc["points"]:
        x = p["cost"]["params"]
        acc = [100 * v for v in p["top1"]]
        ax.errorbar([x], [100 * p["mean"]], yerr=[100 * p["std"]], fmt="o", capsize=4,
                    label=p["label"])
        ax.scatter([x] * len(acc), acc, s=8, color="0.5", zorder=3)
    ax.set(xlabel="parameters", ylabel="val top-1 (%)",
           title=f"{doc['network']} on {doc['data']}: {len(doc['seeds'])} seeds, "
                 f"mean ± std (dots: seeds)")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.legend(fontsize=7, loc="best")
    paths = _save(fig, stem)
    plt.close(fig)
    return paths
