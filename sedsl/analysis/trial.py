"""One trial of `sedsl compare`: a network trained with one seed, wherever it runs.

A `Task` carries everything a trial needs as plain data — the compiled network itself (pickled,
so a Ray worker on another machine needs sedsl's dependencies but not the spec files), the data
source's name, the training options — and `execute` runs it: in this process, or with
`nproc > 1` as a torchrun job of that many processes (DistributedDataParallel, one GPU each where
there are GPUs). `store` writes the outcome into the trial's folder; result.json is written last,
so a folder with one is a finished trial.

`python -m sedsl.analysis.trial TASK.pkl` runs one task in a process of its own (`--jobs N`)."""

from __future__ import annotations

import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sedsl.analysis.data import Prep
from sedsl.analysis.train import CHECKPOINT, METRICS, WEIGHTS, TrainConfig
from sedsl.api import Network

RESULT = "result.json"
TASK = "task.pkl"
LOG = "trial.log"


@dataclass(frozen=True)
class Task:
    key: str  # the trial's folder, relative to the comparison's: trials/<point>/seed<k>
    label: str  # the point, as NAME=VALUE,... ("default" without a sweep)
    point: dict[str, str]
    net: Network
    se: bool  # False: the base network (variant=none)
    data: str
    prep: Prep
    cfg: TrainConfig
    device: str = "auto"
    nproc: int = 1  # > 1: a torchrun job of that many processes
    threads: int | None = None  # torch's intra-op threads (None: torch's default)
    config: dict[str, Any] | None = None  # what makes two trials the same (see compare.py)


def execute(task: Task, workdir: Path | None = None) -> dict[str, Any]:
    """Train the task's network; return the outcome: the result document and, when `workdir`
    is None (a Ray worker, whose disk may not be the driver's), the weights and metrics as
    bytes under "files". With a workdir, an interrupted trial resumes from its checkpoint."""
    start = time.perf_counter()
    if task.threads is not None:
        import torch

        torch.set_num_threads(task.threads)
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="sedsl-trial-") as tmp:
            result = _train(task, Path(tmp))
            files = {name: (Path(tmp) / name).read_bytes() for name in (WEIGHTS, METRICS)
                     if (Path(tmp) / name).exists()}
    else:
        result = _train(task, workdir)
        files = {}
    result["wall_seconds"] = round(time.perf_counter() - start, 3)
    return {"result": result, "files": files}


def _train(task: Task, folder: Path) -> dict[str, Any]:
    if task.nproc > 1:
        return _torchrun(task, folder)
    from sedsl.analysis.data import open_source
    from sedsl.analysis.train import train

    source = open_source(task.data, tuple(task.net.ir.graph["input"]), task.prep)
    rows = train(task.net, source, folder, task.cfg, se=task.se, resume=True,
                 device=task.device)
    return _result(task, rows)


def _result(task: Task, rows: list[Any]) -> dict[str, Any]:
    import torch

    last = rows[-1]
    return {
        "label": task.label, "point": task.point, "seed": task.cfg.seed, "se": task.se,
        "config": task.config,
        "val_top1": last.val_top1, "val_loss": last.val_loss, "train_top1": last.train_top1,
        "train_loss": last.train_loss,
        "train_seconds": round(sum(r.seconds for r in rows), 3),
        "epochs": [asdict(r) for r in rows],
        "host": platform.node(), "processes": task.nproc, "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _torchrun(task: Task, folder: Path) -> dict[str, Any]:
    """The trial as `torchrun --standalone --nproc_per_node N` (a free port of its own, so
    several run side by side on one node); rank 0 writes the result beside the weights."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TASK).write_bytes(pickle.dumps(task))
    done = folder / ".ddp_result.json"
    done.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={task.nproc}", "-m", "sedsl.analysis.trial", "--ddp",
           str(folder / TASK)]
    with open(folder / LOG, "ab") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env())
    if code != 0 or not done.exists():
        raise RuntimeError(f"torchrun for {task.key} failed (exit {code}); see "
                           f"{folder / LOG} on {platform.node()}")
    result: dict[str, Any] = json.loads(done.read_text())
    done.unlink()
    return result


def source_root() -> Path | None:
    """The folder holding the sedsl package when it runs from a source checkout (not an
    install): child processes and Ray workers must import this sedsl, not another."""
    root = Path(__file__).resolve().parents[2]  # sedsl/analysis/trial.py
    return root if (root / "pyproject.toml").exists() else None


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = source_root()
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    return env


def store(folder: Path, outcome: dict[str, Any]) -> dict[str, Any]:
    """Write a finished trial: the files the worker sent back, then result.json (atomically,
    last). The checkpoint, needed only to resume an unfinished trial, is removed."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in outcome.get("files", {}).items():
        _atomic(folder / name, data)
    result: dict[str, Any] = outcome["result"]
    _atomic(folder / RESULT, (json.dumps(result, indent=1) + "\n").encode())
    for leftover in (CHECKPOINT, TASK):
        (folder / leftover).unlink(missing_ok=True)
    return result


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    """`python -m sedsl.analysis.trial [--ddp] TASK.pkl`: run the task in its folder."""
    ddp = argv[:1] == ["--ddp"]
    path = Path(argv[-1])
    task: Task = pickle.loads(path.read_bytes())
    folder = path.parent
    if ddp:  # one rank of a torchrun job: rank 0 reports
        from sedsl.analysis import dist
        from sedsl.analysis.data import open_source
        from sedsl.analysis.train import train

        if task.threads is not None:
            import torch

            torch.set_num_threads(task.threads)
        rank, _ = dist.setup()
        source = open_source(task.data, tuple(task.net.ir.graph["input"]), task.prep)
        rows = train(task.net, source, folder, task.cfg, se=task.se, resume=True,
                     device=task.device)
        if rank == 0:
            _atomic(folder / ".ddp_result.json", json.dumps(_result(task, rows)).encode())
        return 0
    store(folder, execute(task, folder))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
