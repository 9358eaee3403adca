"""Host time per call of the fused SE op, without a GPU: what the Python side costs before the
GPU sees a kernel (the first GPU run found the op host-bound at every size: 0.5-0.9 ms
forward whatever the shape).

Everything runs as on a GPU except the launches themselves: a stub Triton driver reports a
CUDA target (sm_90), and the first launch of each specialisation plants a no-op compiled kernel
in Triton's cache (jit_cache_hook), so Triton's argument binding, specialisation, cache lookup,
the autotuner's dispatch and the launcher call all run; only the driver's cuLaunchKernel is
missing (a few µs per launch on a GPU host). The op is forced onto its Triton path on CPU
tensors (so the launches get real pointers and the dispatcher the CPU kernel: on the meta
device torch.library would run the op's fake implementation instead). The eager SE-ResNet
block (timm's SEModule and its submodules, then `x += shortcut; relu`, as timm's
bottleneck does) runs beside it on the same small CPU
tensors, one intra-op thread: its host time, ATen's dispatch and autograd, plus a little
compute. The fused op's host time does not depend on the shape (its plans are cached per
shape); the eager block's compute does, so the default shape is small.

Times are this thread's CPU time (time.thread_time), the minimum over rounds of the mean of a
batch of calls: robust on a shared VM where wall-clock time is not.

    python bench/se_host_overhead.py [--against GIT_REV] [--shape N C H W] [--rounds K]

--against runs the same measurement on another commit's sedsl (git archive into a temporary
folder, its own process) and prints both side by side. --cuda measures on the GPU instead
(real launches, CUDA tensors; the host thread's CPU time per call).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


LAUNCHES = [0]  # launches the stub driver saw


def install_stub_driver() -> None:
    """Make Triton compile for (and launch on) a CUDA device that is not there: launches run
    Triton's whole host path and then a no-op instead of the driver's launch."""
    sys.path.insert(0, str(ROOT / "bench"))
    import _stub_driver

    def count(name: str, *args: Any) -> None:
        LAUNCHES[0] += 1

    _stub_driver.install(count)


def per_call(fn: Callable[[], Any], rounds: int, batch: int,
             sync: Callable[[], Any] = lambda: None) -> float:
    """Microseconds of this thread's CPU time per call: min over rounds of a batch's mean
    (`sync` between batches, untimed: on a GPU, so that no launch waits for a full queue)."""
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(rounds):
        sync()
        t0 = time.thread_time_ns()
        for _ in range(batch):
            fn()
        best = min(best, (time.thread_time_ns() - t0) / batch / 1e3)
    return best


def eager_se_module() -> Any:
    """timm's SEModule (layers/squeeze_excite.py) as eager modules: fc1, act, fc2, gate."""
    from torch import nn

    class SEModule(nn.Module):
        def __init__(self, channels: int, rd_channels: int) -> None:
            super().__init__()
            self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=True)
            self.bn = nn.Identity()
            self.act = nn.ReLU(inplace=True)
            self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=True)
            self.gate = nn.Sigmoid()

        def forward(self, x: Any) -> Any:
            x_se = x.mean((2, 3), keepdim=True)
            x_se = self.fc1(x_se)
            x_se = self.act(self.bn(x_se))
            x_se = self.fc2(x_se)
            return x * self.gate(x_se)

    return SEModule


def child(shape: list[int], rounds: int, cuda: bool) -> dict[str, Any]:
    """The measurement, in this process, on whatever sedsl is first on sys.path."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)  # the CPU ops of the eager block, and no pool threads to wait on
    if not cuda:
        install_stub_driver()
    import sedsl
    from sedsl.pytorch.kernels import SqueezeExcite
    from sedsl.pytorch.kernels import op as se_op

    if not cuda:  # the Triton path on CPU tensors (the stub driver launches nothing)
        if hasattr(se_op, "FORCE_TRITON"):
            se_op.FORCE_TRITON = True
        else:  # a tree from before the one switch (--against)
            se_op.use_triton = lambda u: True
    EagerSE = eager_se_module()
    dev = "cuda" if cuda else "cpu"
    n, c, h, w = shape
    r = max(1, c // 16)
    m = SqueezeExcite(c, r, act="relu").to(dev)
    fmt = torch.channels_last
    u = torch.randn(n, c, h, w, device=dev).contiguous(memory_format=fmt).requires_grad_()
    i = torch.randn(n, c, h, w, device=dev).contiguous(memory_format=fmt).requires_grad_()
    grad = torch.randn(n, c, h, w, device=dev).contiguous(memory_format=fmt)
    leaves = [u, i, *m.parameters()]
    timm_se = EagerSE(c, r).to(dev)

    def eager(x: Any, ident: Any) -> Any:
        y = timm_se(x)
        y += ident
        return F.relu(y, inplace=True)

    def fwd(block: Callable[..., Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return block(u, i)
        return run

    def fwd_bwd(block: Callable[..., Any], params: list[Any]) -> Callable[[], Any]:
        return lambda: torch.autograd.grad(block(u, i), [u, i, *params], grad)

    cases = {"fused fwd": fwd(m), "eager fwd": fwd(eager),
             "fused fwd+bwd": fwd_bwd(m, leaves[2:]),
             "eager fwd+bwd": fwd_bwd(eager, list(timm_se.parameters()))}
    bn = torch.nn.BatchNorm2d(c).to(dev).train()  # bn3 -> SE -> add -> relu, BN in training
    if "bn" in inspect.signature(SqueezeExcite.forward).parameters:  # the BN folded in
        def eager_bn(x: Any, ident: Any) -> Any:
            return eager(bn(x), ident)

        cases.update({
            "fused+BN fwd": fwd(lambda x, ident: m(x, ident, bn)), "eager+BN fwd": fwd(eager_bn),
            "fused+BN fwd+bwd": fwd_bwd(lambda x, ident: m(x, ident, bn),
                                        [*leaves[2:], *bn.parameters()]),
            "eager+BN fwd+bwd": fwd_bwd(eager_bn, [*timm_se.parameters(), *bn.parameters()])})
    sync: Callable[[], Any] = torch.cuda.synchronize if cuda else (lambda: None)
    out: dict[str, Any] = {"sedsl": str(Path(sedsl.__file__).parent), "device": dev}
    for name, fn in cases.items():
        out[name] = per_call(fn, rounds, 20, sync)
    if not cuda:
        before = LAUNCHES[0]
        cases["fused fwd"]()
        out["launches fwd"] = LAUNCHES[0] - before
        before = LAUNCHES[0]
        cases["fused fwd+bwd"]()
        out["launches bwd"] = LAUNCHES[0] - before - out["launches fwd"]
        if not out["launches fwd"]:  # the times above would be the plain-torch reference's
            raise SystemExit("the fused op did not take its Triton path: no launch seen")
    sync()
    return out


def run_child(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    env.pop("TRITON_INTERPRET", None)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--rounds", str(args.rounds),
           "--shape", *map(str, args.shape), *(["--cuda"] if args.cuda else [])]
    run = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise SystemExit(f"measurement on {tree} failed:\n{run.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def export(rev: str, dest: Path) -> None:
    """The sedsl package of commit `rev` into `dest` (git archive)."""
    archive = subprocess.run(["git", "archive", rev, "sedsl"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", help="a git revision to measure beside the working tree")
    parser.add_argument("--shape", nargs=4, type=int, default=[2, 64, 7, 7])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--cuda", action="store_true", help="real launches on the GPU")
    parser.add_argument("--json", action="store_true", help="print the columns as JSON too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.shape, args.rounds, args.cuda)))
        return
    columns = {"working tree": run_child(ROOT, args)}
    if args.against:
        with tempfile.TemporaryDirectory() as tmp:
            export(args.against, Path(tmp))
            columns = {args.against: run_child(Path(tmp), args), **columns}
    print_table(columns, args)
    if args.json:
        print(json.dumps(columns))


def print_table(columns: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    where = "CUDA, real launches" if args.cuda else "CPU tensors, launches stubbed (sm_90 target)"
    print(f"host CPU time per call, µs: SE-ResNet block {'x'.join(map(str, args.shape))} "
          f"channels_last, r = C/16 ({where})")
    names = list(columns)
    print(f"{'':16s}" + "".join(f"{n[:22]:>24s}" for n in names))
    for key in ("fused fwd", "eager fwd", "fused fwd+bwd", "eager fwd+bwd", "fused+BN fwd",
                "eager+BN fwd", "fused+BN fwd+bwd", "eager+BN fwd+bwd", "launches fwd",
                "launches bwd"):
        if any(key in col for col in columns.values()):
            vals = [columns[n].get(key) for n in names]
            print(f"{key:16s}" + "".join(f"{v:>24.1f}" if isinstance(v, float) else
                                        f"{v:>24d}" if isinstance(v, int) else f"{'-':>24s}"
                                        for v in vals))
    for n in names:
        col = columns[n]
        line = (f"{n}: fused/eager fwd {col['fused fwd'] / col['eager fwd']:.2f}x, "
                f"fwd+bwd {col['fused fwd+bwd'] / col['eager fwd+bwd']:.2f}x")
        if "fused+BN fwd" in col:
            line += (f"; with BN fwd {col['fused+BN fwd'] / col['eager+BN fwd']:.2f}x, "
                     f"fwd+bwd {col['fused+BN fwd+bwd'] / col['eager+BN fwd+bwd']:.2f}x")
        print(line)


if __name__ == "__main__":
    main()
