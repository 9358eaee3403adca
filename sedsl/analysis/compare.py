"""`sedsl compare`: a grid of sweep points x seeds, every trial trained alike, each point's
accuracy over seeds beside its exact cost, and the paired difference to the first point.

Trials are alike: the same data source and split, the same options, and for seed k the same
initialisation seed and data order (a permutation drawn from (k, epoch)) at every point, so the
difference between two points at one seed is a paired observation.

The folder:

    DIR/compare.json, compare.csv, compare.svg/.png     the comparison (written at the end)
    DIR/trials/<point>/seed<k>/result.json               one finished trial (written last)
                               model.pt, metrics.csv     its weights and per-epoch metrics

A trial with a result.json is never rerun (its recorded options must equal the run's, else the
run stops with the difference); an unfinished local one resumes from its checkpoint. Trials run
in this process (`jobs` 1), in a process each (`jobs` N), or as Ray tasks (`ray`), and land in
the same folders whichever."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sedsl import extras
from sedsl.analysis import stats
from sedsl.analysis.data import Prep
from sedsl.analysis.train import TrainConfig
from sedsl.analysis.trial import LOG, RESULT, TASK, Task, child_env, execute, source_root, store
from sedsl.api import Network, load
from sedsl.errors import NOWHERE, RunError, SpecError

FORMAT = "sedsl.compare/1"
LEVEL = 0.95
NONE = "none"  # variant=none: the base network, SE switched off


@dataclass(frozen=True)
class Point:
    label: str  # NAME=VALUE,... in sweep order; "default" without a sweep
    values: dict[str, str]  # the swept values
    net: Network
    se: bool  # False for variant=none

    @property
    def folder(self) -> str:
        return quote(self.label, safe="=,.-_+")


@dataclass(frozen=True)
class Options:
    data: str
    prep: Prep
    cfg: TrainConfig  # its seed is replaced by each trial's
    seeds: tuple[int, ...]
    device: str = "auto"
    nproc: int = 1  # processes per trial (torchrun)
    jobs: int = 1  # local trials at a time
    ray: str | None = None  # "auto" or a cluster address
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0


def points(spec: Path, overrides: dict[str, Any], sweep: list[dict[str, str]]) -> list[Point]:
    """Compile every point (before anything trains, so a bad value is a spec error now).
    `variant=none` is the spec's base network, whatever the other values."""
    made: list[Point] = []
    for values in sweep:
        label = ",".join(f"{k}={v}" for k, v in values.items()) or "default"
        if any(p.label == label for p in made):
            raise SpecError(f"the sweep lists the point {label} twice", NOWHERE,
                            "give each value once")
        se = values.get("variant") != NONE
        chosen = {k: v for k, v in values.items() if se or k != "variant"}
        try:
            net = load(spec, **{**overrides, **chosen})
        except SpecError as e:
            if e.message.startswith("`variant` cannot be") and e.hint:
                raise SpecError(e.message, e.span, f"{e.hint}, or {NONE} (the base network)") \
                    from None
            raise
        made.append(Point(label, dict(values), net, se))
    return made


def fingerprint(point: Point, opts: Options, seed: int,
                overrides: dict[str, Any]) -> dict[str, Any]:
    """What makes two trials the same experiment: the spec's text (and every file it uses),
    the overrides, the data, the options and the seed. Not the device or the thread count."""
    text = json.dumps(sorted(point.net.sources.values()))
    chosen = {k: v for k, v in point.values.items() if point.se or k != "variant"}
    return {
        "network": point.net.name,
        "spec_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "overrides": {k: str(v) for k, v in sorted({**overrides, **chosen}.items())},
        "se": point.se,
        "data": opts.data,
        "prep": asdict(opts.prep),
        "train": asdict(replace(opts.cfg, seed=seed)),
        "processes": opts.nproc,
    }


def tasks(grid: list[Point], opts: Options, overrides: dict[str, Any]) -> list[Task]:
    """Every point x seed, seed by seed (all points of seed 0 first: a run cut short leaves
    complete pairs)."""
    threads = _threads(opts)
    return [Task(f"trials/{p.folder}/seed{s}", p.label, p.values, p.net, p.se, opts.data,
                 opts.prep, replace(opts.cfg, seed=s), opts.device, opts.nproc, threads,
                 _json_safe(fingerprint(p, opts, s, overrides)))
            for s in opts.seeds for p in grid]


def _threads(opts: Options) -> int | None:
    if opts.ray is not None:
        return max(1, int(opts.cpus_per_trial))
    if opts.jobs > 1:
        return max(1, (os.cpu_count() or 1) // (opts.jobs * opts.nproc))
    return None


def _json_safe(doc: dict[str, Any]) -> dict[str, Any]:
    """As it reads back from result.json (tuples become lists), so that equality holds."""
    safe: dict[str, Any] = json.loads(json.dumps(doc))
    return safe


def finished(folder: Path, task: Task) -> dict[str, Any] | None:
    """The trial's recorded result, if it has one; an error if it was run with other options."""
    path = folder / task.key / RESULT
    if not path.exists():
        return None
    try:
        result: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a damaged file: train again
    if result.get("config") != task.config:
        saved, now = _flat(result.get("config") or {}), _flat(task.config or {})
        diff = ", ".join(f"{k} {saved.get(k)!r} then, {now.get(k)!r} now"
                         for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k))
        raise RunError(f"{folder / task.key} holds a trial run with other options ({diff})",
                       "compare into a new -o folder, or remove that trial's folder")
    return result


def _flat(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            flat.update(_flat(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


Report = Callable[[Task, dict[str, Any]], None]


def run(todo: list[Task], folder: Path, opts: Options, report: Report) -> None:
    """Run the trials where `opts` says; report each as it finishes."""
    if not todo:
        return
    if opts.ray is not None:
        _run_ray(todo, folder, opts, report)
    elif opts.jobs > 1:
        _run_processes(todo, folder, opts.jobs, report)
    else:
        for task in todo:
            report(task, store(folder / task.key, execute(task, folder / task.key)))


def _run_processes(todo: list[Task], folder: Path, jobs: int, report: Report) -> None:
    """`python -m sedsl.analysis.trial TASK.pkl` per trial, `jobs` at a time."""
    import pickle

    pending, failed = list(todo), []
    running: dict[subprocess.Popen[bytes], Task] = {}
    env = child_env()
    try:
        while pending or running:
            while pending and len(running) < jobs:
                task = pending.pop(0)
                where = folder / task.key
                where.mkdir(parents=True, exist_ok=True)
                (where / TASK).write_bytes(pickle.dumps(task))
                with open(where / LOG, "ab") as log:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "sedsl.analysis.trial", str(where / TASK)],
                        stdout=log, stderr=subprocess.STDOUT, env=env)
                running[proc] = task
            time.sleep(0.1)
            for proc in [p for p in running if p.poll() is not None]:
                task = running.pop(proc)
                path = folder / task.key / RESULT
                if proc.returncode == 0 and path.exists():
                    report(task, json.loads(path.read_text()))
                else:
                    failed.append(f"{task.key} (exit {proc.returncode}; "
                                  f"see {folder / task.key / LOG})")
    finally:
        for proc in running:
            proc.terminate()
        for proc in running:
            proc.wait()
    _fail(failed)


def _fail(failed: list[str]) -> None:
    if failed:
        raise RunError(f"{len(failed)} trial(s) failed: {'; '.join(failed)}",
                       "the finished trials are kept: run the same command again to retry")


def _run_ray(todo: list[Task], folder: Path, opts: Options, report: Report) -> None:
    """One Ray task per trial (num_cpus / num_gpus per trial); the driver writes what each
    returns, so the workers need no shared disk. Connects to the cluster at `opts.ray`, or
    with `auto` to a running one (RAY_ADDRESS, or one `ray start`ed on this machine), else
    starts one here."""
    ray = extras.require("ray", "ray", "sedsl compare --ray")
    root = source_root()
    env: dict[str, Any] | None = None
    started = False
    if not ray.is_initialized():
        # from a source checkout, the driver's sedsl is shipped to the workers
        try:
            ray.init(address=None if opts.ray == "auto" else opts.ray, log_to_driver=False,
                     configure_logging=False,
                     runtime_env={"py_modules": [str(root / "sedsl")]} if root else None)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RunError(f"cannot join Ray at `{opts.ray}`: {str(e).splitlines()[0]}",
                           "--ray auto, or the head node's HOST:6379 (`ray start --head` "
                           "there)") from None
        started = True
    elif root is not None:  # joined as the caller set Ray up: workers on this machine
        env = {"env_vars": {"PYTHONPATH": str(root)}}
    remote = ray.remote(execute).options(num_cpus=opts.cpus_per_trial,
                                         num_gpus=opts.gpus_per_trial or None,
                                         runtime_env=env, max_retries=0)
    waiting = {remote.remote(task): task for task in todo}
    failed: list[str] = []
    try:
        while waiting:
            done, _ = ray.wait(list(waiting), num_returns=1)
            task = waiting.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except ray.exceptions.RayError as e:
                failed.append(f"{task.key} ({type(e).__name__}: {str(e).splitlines()[0]})")
                continue
            report(task, store(folder / task.key, outcome))
    finally:
        for ref in waiting:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
    _fail(failed)


# --- the comparison -------------------------------------------------------------------------


def document(grid: list[Point], opts: Options, results: dict[str, dict[str, Any]],
             meta: dict[str, Any]) -> dict[str, Any]:
    """compare.json: per point the seeds' val top-1, mean and std, the paired difference to
    the first point with its interval, the exact cost of the network trained, the time."""
    rows: list[dict[str, Any]] = []
    first: list[float] = []
    for i, p in enumerate(grid):
        trial = [results[f"{p.label}/{s}"] for s in opts.seeds]
        top1 = [r["val_top1"] for r in trial]
        cost = p.net.cost()
        totals = cost.se if p.se else cost.base
        s = stats.summary(top1)
        secs = stats.summary([r["train_seconds"] for r in trial])
        row: dict[str, Any] = {
            "label": p.label, "sweep": p.values, "se": p.se,
            "cost": {"params": totals.params, "flops": totals.flops,
                     # the attention blocks' passes over their feature maps (none: the base)
                     "passes": round(float(sum(cost.passes.values())), 4) if p.se else 0.0,
                     "convention": cost.convention},
            "seeds": list(opts.seeds), "top1": top1, "mean": s.mean, "std": s.std,
            "difference": None,
            "train_seconds": [r["train_seconds"] for r in trial],
            "train_seconds_mean": round(secs.mean, 3),
            "trials": [f"trials/{p.folder}/seed{k}" for k in opts.seeds],
        }
        if i == 0:
            first = top1
        else:
            d = stats.paired_difference(first, top1, LEVEL)
            row["difference"] = {"to": grid[0].label, "n": d.n, "mean": d.mean, "std": d.std,
                                 "level": d.level, "low": d.low, "high": d.high,
                                 "excludes_zero": d.excludes_zero}
        rows.append(row)
    cfg = asdict(opts.cfg)
    cfg.pop("seed")
    return {"format": FORMAT, **meta, "data": opts.data, "train": cfg,
            "seeds": list(opts.seeds), "processes_per_trial": opts.nproc, "level": LEVEL,
            "points": rows}


def to_csv(doc: dict[str, Any]) -> str:
    """One row per point; the seeds' accuracies joined by `;`."""
    swept = list(dict.fromkeys(k for p in doc["points"] for k in p["sweep"]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["point", *swept, "params", "flops", "passes", "seeds", "top1_mean", "top1_std",
                "top1_by_seed", "diff_mean", "diff_low", "diff_high", "diff_excludes_zero",
                "train_seconds_mean"])
    for p in doc["points"]:
        d = p["difference"] or {}
        w.writerow([p["label"], *(p["sweep"].get(k, "") for k in swept), p["cost"]["params"],
                    p["cost"]["flops"], _blank(p["cost"]["passes"]), len(p["top1"]),
                    f"{p['mean']:.6f}", f"{p['std']:.6f}",
                    ";".join(f"{v:.6f}" for v in p["top1"]), _num(d.get("mean")),
                    _num(d.get("low")), _num(d.get("high")), _blank(d.get("excludes_zero")),
                    p["train_seconds_mean"]])
    return buf.getvalue()


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.6f}"


def _blank(v: Any) -> str:
    return "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def write(folder: Path, doc: dict[str, Any]) -> list[Path]:
    """compare.json and compare.csv, and the figure where matplotlib is installed."""
    from sedsl.analysis import figures

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("compare.json", json.dumps(doc, indent=1) + "\n"),
                       ("compare.csv", to_csv(doc))):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, folder / name)
        written.append(folder / name)
    if figures.available():
        written += figures.draw_compare(doc, folder / "compare")
    return written


def table(doc: dict[str, Any]) -> Any:
    """The comparison as a rich Table (the terminal's view of compare.json)."""
    from rich.table import Table

    level = round(100 * doc["level"])
    first = doc["points"][0]["label"]
    t = Table(title=f"{doc['network']} on {doc['data']}: val top-1 over {len(doc['seeds'])} "
                    f"seeds, {doc['train']['epochs']} epochs (cost convention "
                    f"{doc['points'][0]['cost']['convention']})")
    passes = any(p["cost"]["passes"] is not None for p in doc["points"])
    for col in ("point", "params", "FLOPs", *(["passes"] if passes else []),
                "val top-1 (mean ± std)", "by seed", f"Δ vs {first} [{level}% CI]", "train s"):
        t.add_column(col, justify="left" if col in ("point", "by seed") else "right")
    for p in doc["points"]:
        d = p["difference"]
        if d is None:
            delta = "(reference)"
        elif d["low"] is None:
            delta = f"{100 * d['mean']:+.2f} (one seed: no interval)"
        else:
            mark = "excludes 0" if d["excludes_zero"] else "includes 0"
            delta = (f"{100 * d['mean']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] "
                     f"{mark}")
        t.add_row(p["label"], f"{p['cost']['params']:,}", f"{p['cost']['flops']:,}",
                  *([str(p["cost"]["passes"] or "-")] if passes else []),
                  f"{100 * p['mean']:.2f} ± {100 * p['std']:.2f}",
                  " ".join(f"{100 * v:.2f}" for v in p["top1"]), delta,
                  f"{p['train_seconds_mean']:.1f}")
    return t


def compare(spec: Path, overrides: dict[str, Any], sweep: list[dict[str, str]], opts: Options,
            folder: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Plan, skip what is finished, train the rest, write the comparison; return its doc."""
    from sedsl.analysis.data import open_source

    start = time.perf_counter()
    grid = points(spec, overrides, sweep)
    source = open_source(opts.data, tuple(grid[0].net.ir.graph["input"]), opts.prep)
    for p in grid[1:]:
        if tuple(p.net.ir.graph["input"]) != tuple(grid[0].net.ir.graph["input"]):
            raise SpecError(f"the points take different inputs ({grid[0].label}: "
                            f"{grid[0].net.ir.graph['input']}, {p.label}: "
                            f"{p.net.ir.graph['input']})", NOWHERE, "sweep no input size")
    every = tasks(grid, opts, overrides)
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for task in every:
        done = finished(folder, task)
        if done is None:
            todo.append(task)
        else:
            results[f"{task.label}/{task.cfg.seed}"] = done
    where = (f"Ray ({opts.ray})" if opts.ray is not None else
             f"{opts.jobs} processes" if opts.jobs > 1 else "this process")
    if opts.nproc > 1:
        where += f", each a torchrun job of {opts.nproc} processes"
    say(f"{grid[0].net.name} on {source.name} ({len(source.train)} train, {len(source.val)} "
        f"val): {len(grid)} points x {len(opts.seeds)} seeds = {len(every)} trials; "
        f"{len(every) - len(todo)} already in {folder}, {len(todo)} to train in {where}")
    count = len(every) - len(todo)

    def report(task: Task, result: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        results[f"{task.label}/{task.cfg.seed}"] = result
        say(f"[{count}/{len(every)}] {task.label} seed {task.cfg.seed}: val top-1 "
            f"{100 * result['val_top1']:.2f}%, {result['train_seconds']:.1f} s training "
            f"({task.key})")

    run(todo, folder, opts, report)
    meta = {"spec": str(spec), "network": grid[0].net.name,
            "overrides": {k: str(v) for k, v in overrides.items()},
            "sweep": {k: list(dict.fromkeys(p.values[k] for p in grid)) for k in grid[0].values},
            "trained": len(todo), "wall_seconds": round(time.perf_counter() - start, 3)}
    doc = document(grid, opts, results, meta)
    write(folder, doc)
    return doc


def seeds_of(k: int) -> tuple[int, ...]:
    return tuple(range(k))


__all__ = ["Options", "Point", "compare", "document", "points", "seeds_of", "table",
           "to_csv", "write"]
