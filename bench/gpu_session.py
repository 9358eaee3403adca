"""Everything a GPU machine should measure, in one run that fits a short lease.

    bench/gpu_session.sh [--dry-run] [--budget SECONDS]

Sections, in order of value; each runs only while the time budget lasts, a failing section is
recorded and the next one runs, and the results are rewritten after every section so that a run
cut short still leaves them:

  env        versions (never reinstalls torch), the GPU, and device-to-device copy bandwidth
  host       host CPU time per call of the fused op and of the eager block (real launches;
             bench/se_host_overhead.py --cuda): the first run found the op host-bound
  tests      the CUDA kernel tests (tests/test_kernels.py -k cuda), in a subprocess
  blocks     the fused SE op against eager PyTorch on SE-ResNeXt-101's four SE blocks
             (forward, and forward + backward), batch 1/32/128, bf16 and fp32
  bn_blocks  the SE block with its BN folded in (sedsl::se_bn_block) against eager BN + SE
             block, training mode, forward and forward + backward
  flops      FlopCounterMode on the fused and the plain SE-ResNet-50: equal counts
  networks   SE-ResNeXt-101 and ResNeXt-101: inference forward and a training step, for sedsl's
             fused and plain lowerings and timm's models; SE's wall-clock overhead over the base
  memory     peak CUDA memory and saved-for-backward bytes of the same training step
  variants   each attention variant's block (eager, and fused where the kernels compute it)
             against its passes over U
  compile    torch.compile of the eager block and of the plain networks (slow to build: last)
  sanitizer  compute-sanitizer memcheck on the fused op's forward and backward, if installed

Output: $OUT/gpu_session.json (everything) and $OUT/gpu_session.md (the tables).
--dry-run runs every section on this CPU with tiny shapes under TRITON_INTERPRET=1 (set by the
shell script before Python starts), so CI proves the script before a GPU ever sees it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


class Session:
    """The budget, the device, the results so far, and where they are written."""

    def __init__(self, out: Path, budget: float, dry: bool) -> None:
        self.out, self.budget, self.dry = out, budget, dry
        self.start = time.monotonic()
        self.results: dict[str, Any] = {"dry_run": dry, "sections": {}}

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def run(self, name: str, fn: Callable[[Session], dict[str, Any]], needs: float) -> None:
        """Run one section if `needs` seconds are left; record its result or its failure."""
        if self.left() < needs:
            self.record(name, {"status": "skipped", "why": f"{self.left():.0f} s left, "
                                                             f"needs about {needs:.0f} s"})
            return
        print(f"\n== {name} ({self.left():.0f} s of budget left)", flush=True)
        t0 = time.monotonic()
        try:
            result = {"status": "ok", **fn(self)}
        except Exception as err:  # a failing section must not cost the others
            traceback.print_exc()
            result = {"status": "failed", "error": f"{type(err).__name__}: {err}"[:2000]}
        result["seconds"] = round(time.monotonic() - t0, 1)
        self.record(name, result)

    def record(self, name: str, result: dict[str, Any]) -> None:
        self.results["sections"][name] = result
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_session.json").write_text(json.dumps(self.results, indent=1) + "\n")
        (self.out / "gpu_session.md").write_text(markdown(self.results))
        print(f"-- {name}: {result['status']}", flush=True)


# --- timing ---------------------------------------------------------------------------------

def bench_ms(fn: Callable[[], Any], dry: bool) -> float:
    """Median milliseconds: triton's do_bench on a GPU, a host timer on the dry run."""
    import torch

    if not dry:
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median"))
    fn()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    del torch
    return statistics.median(times)


def device(s: Session) -> str:
    return "cpu" if s.dry else "cuda"


# --- sections -------------------------------------------------------------------------------

def env(s: Session) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "platform": platform.platform()}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError as err:
        info["triton"] = f"missing ({err})"
    for name in ("timm", "fvcore", "lark", "networkx", "typer"):
        try:
            info[name] = __import__(name).__version__
        except Exception as err:
            info[name] = f"missing ({type(err).__name__})"
    import sedsl

    info["sedsl"] = f"{sedsl.__version__} from {Path(sedsl.__file__).parent}"
    info["interpret"] = os.environ.get("TRITON_INTERPRET", "")
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True, check=False) if shutil.which("git") else None
    info["commit"] = git.stdout.strip() if git and git.returncode == 0 else "unknown"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, sms=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}")
        n = (1 << 30) if not s.dry else (1 << 20)
        a = torch.empty(n, dtype=torch.uint8, device="cuda")
        b = torch.empty_like(a)
        ms = bench_ms(lambda: b.copy_(a), s.dry)
        info["copy_gbps"] = round(2 * n / (ms * 1e-3) / 1e9, 1)  # bytes read + written
        del a, b
    if shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = q.stdout.strip()
    print(json.dumps(info, indent=1))
    return info


def tests(s: Session) -> dict[str, Any]:
    """The CUDA kernel tests; on the dry run the same file's CPU tests (no GPU to test)."""
    select = ["-k", "cuda"] if not s.dry else ["-k", "opcheck or awkward"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs",
           "tests/test_kernels.py", *select]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                         timeout=max(30, s.left() - 10))
    tail = (run.stdout + run.stderr)[-3000:]
    print(tail)
    summary = next((ln for ln in reversed(run.stdout.splitlines()) if " in " in ln), "")
    if run.returncode != 0:
        raise RuntimeError(f"pytest exit {run.returncode}: {summary}\n{tail}")
    return {"summary": summary.strip("= ")}


def host(s: Session) -> dict[str, Any]:
    """bench/se_host_overhead.py per shape: host CPU time per call, fused vs eager, real
    launches on the GPU (on the dry run: launches stubbed, CPU tensors, no interpreter)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    shapes = [[2, 64, 7, 7]] if s.dry else [[1, 256, 56, 56], [32, 1024, 14, 14],
                                            [128, 2048, 7, 7]]
    rows = []
    for shape in shapes:
        cmd = [sys.executable, "bench/se_host_overhead.py", "--json", "--rounds", "5",
               "--shape", *map(str, shape), *([] if s.dry else ["--cuda"])]
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=max(30, s.left() - 10))
        if run.returncode != 0:
            raise RuntimeError(run.stderr[-1500:])
        col = json.loads(run.stdout.strip().splitlines()[-1])["working tree"]
        rows.append({"shape": "x".join(map(str, shape)),
                     **{k.replace(" ", "_").replace("+", "_"): round(v, 1)
                        for k, v in col.items() if isinstance(v, (int, float))}})
        print(rows[-1], flush=True)
    return {"rows": rows, "unit": "us of host CPU time per call (fp32, channels_last)"}


def block_shapes(s: Session) -> list[tuple[str, int, int, int]]:
    """(dtype, batch, C, H=W) of every block configuration to time."""
    import se_kernel

    if s.dry:
        return [(d, n, 32, 4) for d in ("fp32", "bf16") for n in (1, 2)]
    return [(d, n, c, hw) for d in ("bf16", "fp32") for n in (1, 32, 128)
            for c, hw in se_kernel.STAGES]


def blocks(s: Session) -> dict[str, Any]:
    """Fused vs eager, forward and forward+backward; GB/s counts the fused design's 4|U| / 10|U|
    for every column (bench/se_kernel.py's convention)."""
    import se_kernel
    import torch

    rows = []
    for dname, n, c, hw in block_shapes(s):
        if s.left() < 20:
            rows.append({"skipped": "budget"})
            break
        rows.append(block_row(s, se_kernel, torch, dname, n, c, hw))
        print(rows[-1], flush=True)
    return {"rows": rows, "copy_gbps": s.results["sections"].get("env", {}).get("copy_gbps")}


def block_row(s: Session, se_kernel: Any, torch: Any, dname: str, n: int, c: int,
              hw: int) -> dict[str, Any]:
    row: dict[str, Any] = {"dtype": dname, "n": n, "c": c, "hw": hw}
    dev = device(s)
    for backward in (False, True):
        inputs = inputs_on(se_kernel, torch, n, c, hw, dname, backward, dev)
        u_bytes = inputs[0].numel() * inputs[0].element_size()
        tag = "fwdbwd" if backward else "fwd"
        for name, fn in (("eager", se_kernel.eager_se), ("fused", se_kernel.fused_se)):
            ms = bench_ms(step(torch, fn, inputs, backward), s.dry)
            row[f"{tag}_{name}_ms"] = round(ms, 4)
            row[f"{tag}_{name}_gbps"] = round((10 if backward else 4) * u_bytes / ms / 1e6, 1)
        row[f"{tag}_speedup"] = round(row[f"{tag}_eager_ms"] / row[f"{tag}_fused_ms"], 3)
    with torch.no_grad():
        inputs = inputs_on(se_kernel, torch, n, c, hw, dname, False, dev)
        want = se_kernel.eager_se(*inputs).float()
        got = se_kernel.fused_se(*inputs).float()
        row["max_rel_err"] = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
    return row


def inputs_on(se_kernel: Any, torch: Any, n: int, c: int, hw: int, dname: str, grad: bool,
              dev: str) -> list[Any]:
    """bench/se_kernel.py's block inputs (U, identity, W1, b1, W2, b2) on `dev`, channels_last."""
    with torch.device(dev):
        r = max(1, c // 16)
        dtype = se_kernel.DTYPES[dname]

        def make(shape: tuple[int, ...], scale: float = 1.0) -> Any:
            t = (torch.randn(shape) * scale).to(dtype)
            if t.dim() == 4 and shape[2] > 1:
                t = t.contiguous(memory_format=torch.channels_last)
            return t.requires_grad_(grad)

        return [make((n, c, hw, hw)), make((n, c, hw, hw)), make((r, c, 1, 1), c**-0.5),
                make((r,)), make((c, r, 1, 1), r**-0.5), make((c,))]


def step(torch: Any, fn: Callable[..., Any], inputs: list[Any], backward: bool
         ) -> Callable[[], Any]:
    if not backward:
        def forward() -> Any:
            with torch.no_grad():
                return fn(*inputs)
        return forward
    grad = torch.randn_like(inputs[0])
    return lambda: torch.autograd.grad(fn(*inputs), inputs, grad)


def bn_blocks(s: Session) -> dict[str, Any]:
    """conv output X -> BN (training) -> SE -> + identity -> relu: eager nn.BatchNorm2d and the
    eager SE block against the fused op with the BN folded in (sedsl::se_bn_block), bf16,
    channels_last, forward and forward + backward, at SE-ResNeXt-101's stages."""
    import se_kernel
    import torch
    from torch import nn

    from sedsl.pytorch.kernels import SqueezeExcite

    shapes = [("fp32", 2, 32, 4)] if s.dry else [("bf16", n, c, hw) for n in (32, 128)
                                                 for c, hw in se_kernel.STAGES]
    rows = []
    for dname, n, c, hw in shapes:
        if s.left() < 15:
            rows.append({"skipped": "budget"})
            break
        dtype = se_kernel.DTYPES[dname]
        bn = nn.BatchNorm2d(c).to(device(s), dtype).train()
        se = SqueezeExcite(c, c // 16, act="relu").to(device(s), dtype)
        x, ident = (torch.randn(n, c, hw, hw, device=device(s)).to(dtype).contiguous(
            memory_format=torch.channels_last).requires_grad_() for _ in range(2))
        row: dict[str, Any] = {"dtype": dname, "n": n, "c": c, "hw": hw}
        for name, fn in (("eager", se.plain), ("fused", se)):
            row.update(bn_block_times(s, torch, name, fn, x, ident, bn))
        row["fwd_speedup"] = round(row["fwd_eager_ms"] / row["fwd_fused_ms"], 3)
        row["fwdbwd_speedup"] = round(row["fwdbwd_eager_ms"] / row["fwdbwd_fused_ms"], 3)
        rows.append(row)
        print(row, flush=True)
    return {"rows": rows}


def bn_block_times(s: Session, torch: Any, name: str, block: Callable[..., Any], x: Any,
                   ident: Any, bn: Any) -> dict[str, float]:
    """Forward (no grad) and forward + backward milliseconds of block(x, ident, bn)."""
    grad = torch.randn_like(x)

    def forward() -> Any:
        with torch.no_grad():
            return block(x, ident, bn)

    def step() -> Any:
        return torch.autograd.grad(block(x, ident, bn), [x, ident], grad)

    return {f"fwd_{name}_ms": round(bench_ms(forward, s.dry), 4),
            f"fwdbwd_{name}_ms": round(bench_ms(step, s.dry), 4)}


def flops(s: Session) -> dict[str, Any]:
    """FlopCounterMode on a training step of the plain and the fused SE-ResNet-50 (timm
    layout): the fused ops' registered formulas must give the plain count exactly."""
    import contextlib

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import sedsl
    from sedsl.pytorch.export import trace_fused_op

    size, n = (32, 2) if s.dry else (224, 8)
    net = sedsl.load(ROOT / "specs/se_resnet50.se", input=f"3x{size}x{size}", layout="timm")
    counts = {}
    for label, fused in (("plain", False), ("fused", True)):
        model = net.to_torch(fused=fused).to(device(s)).train()
        x = torch.randn(n, 3, size, size, device=device(s))
        # on the CPU the fused model's SE blocks run the op only under trace_fused_op
        with (trace_fused_op() if s.dry else contextlib.nullcontext()), \
                FlopCounterMode(display=False) as counter:
            model(x).sum().backward()
        counts[label] = int(counter.get_total_flops())
        model.cpu()
    if counts["plain"] != counts["fused"]:
        raise RuntimeError(f"FlopCounterMode: plain {counts['plain']:,} fused "
                           f"{counts['fused']:,}")
    return {"counts": counts, "equal": True, "batch": n, "input": size}


NETWORK_BATCH = {"train": 64, "infer": [1, 64]}


def network_models(s: Session) -> dict[str, dict[str, Any]]:
    """{"se": {impl: module}, "base": {impl: module}}: sedsl fused/plain and timm."""
    import torch

    import sedsl

    if s.dry:
        net = sedsl.load(ROOT / "specs/se_digits.se")
        se = {"sedsl fused": net.to_torch(fused=True), "sedsl plain": net.to_torch(fused=False)}
        base = {"sedsl plain": net.to_torch(fused=False, se=False)}
        return {"se": se, "base": base}
    import timm

    net = sedsl.load(ROOT / "specs/se_resnext101.se", layout="timm")
    plain = net.to_torch(fused=False)
    fused = sedsl.transfer_weights(plain, net.to_torch(fused=True))
    se = {"sedsl fused": fused, "sedsl plain": plain,
          "timm": timm.create_model("seresnext101_32x4d")}
    base = {"sedsl plain": net.to_torch(fused=False, se=False),
            "timm": timm.create_model("resnext101_32x4d")}
    del torch
    return {"se": se, "base": base}


def network_input(s: Session, torch: Any, n: int, dtype: Any) -> Any:
    shape = (1, 8, 8) if s.dry else (3, 224, 224)
    x = torch.randn((n, *shape), device=device(s)).to(dtype)
    return x.contiguous(memory_format=torch.channels_last)


def prepare(s: Session, torch: Any, model: Any, dtype: Any) -> Any:
    return model.to(device(s), dtype).to(memory_format=torch.channels_last)


def networks(s: Session) -> dict[str, Any]:
    """Inference forward (eval) and a training step (train mode, forward + backward of the
    summed output), bf16 weights and activations, channels_last."""
    import torch

    dtype = torch.bfloat16
    rows = []
    train_n = 2 if s.dry else NETWORK_BATCH["train"]
    infer_ns = [1, 2] if s.dry else NETWORK_BATCH["infer"]
    for kind, impls in network_models(s).items():
        for impl, model in impls.items():
            model = prepare(s, torch, model, dtype)
            row: dict[str, Any] = {"net": kind, "impl": impl}
            model.eval()
            for n in infer_ns:
                x = network_input(s, torch, n, dtype)
                row[f"infer_n{n}_ms"] = round(bench_ms(no_grad(torch, model, x), s.dry), 3)
            model.train()
            x = network_input(s, torch, train_n, dtype)
            row[f"train_n{train_n}_ms"] = round(bench_ms(train_step(model, x), s.dry), 3)
            rows.append(row)
            print(row, flush=True)
            model.cpu()
    return {"rows": rows, "overhead": overhead(rows), "dtype": "bf16", "format": "channels_last"}


def no_grad(torch: Any, model: Any, x: Any) -> Callable[[], Any]:
    def run() -> Any:
        with torch.no_grad():
            return model(x)
    return run


def train_step(model: Any, x: Any) -> Callable[[], Any]:
    def run() -> None:
        model.zero_grad(set_to_none=True)
        model(x).float().sum().backward()
    return run


def overhead(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """SE network time / base network time, per timing, for each SE implementation beside the
    base network of the same source (sedsl plain as the base for every sedsl lowering)."""
    base = {r["impl"]: r for r in rows if r["net"] == "base"}
    out = []
    for r in rows:
        if r["net"] != "se":
            continue
        b = base.get("timm" if r["impl"].startswith("timm") else
                     "compiled" if "compiled" in r["impl"] else "sedsl plain")
        if b is None:
            continue
        out.append({"impl": r["impl"], **{k: round(v / b[k], 3) for k, v in r.items()
                                          if k.endswith("_ms") and k in b}})
    return out


def memory(s: Session) -> dict[str, Any]:
    """Peak CUDA memory of one training step above the model's own state (parameters, grads,
    buffers), bf16, channels_last; the dry run reports saved-for-backward bytes instead."""
    import torch

    rows = []
    n = 2 if s.dry else NETWORK_BATCH["train"]
    for kind, impls in network_models(s).items():
        for impl, model in impls.items():
            model = prepare(s, torch, model, torch.bfloat16).train()
            x = network_input(s, torch, n, torch.bfloat16)
            saved = saved_bytes(torch, model, x)
            row = {"net": kind, "impl": impl, "saved_mib": round(saved / 2**20, 2)}
            if not s.dry:
                train_step(model, x)()
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                train_step(model, x)()
                torch.cuda.synchronize()
                row["peak_above_state_mib"] = round(
                    (torch.cuda.max_memory_allocated() - before) / 2**20, 1)
            rows.append(row)
            print(row, flush=True)
            model.cpu()
            del model
            if not s.dry:
                torch.cuda.empty_cache()
    return {"rows": rows, "batch": n}


def saved_bytes(torch: Any, model: Any, x: Any) -> int:
    """Bytes autograd saves for backward in one forward (each storage counted once), less the
    model's parameters."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: Any) -> Any:
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    return sum(seen.values())


def compiled(s: Session) -> dict[str, Any]:
    """torch.compile of the eager SE block (fwd, fwd+bwd) and of the plain networks."""
    import se_kernel
    import torch

    rows: list[dict[str, Any]] = []
    shapes = [(d, n, c, hw) for d, n, c, hw in block_shapes(s)
              if s.dry or (d == "bf16" and n in (32, 128))]
    for dname, n, c, hw in shapes:
        if s.left() < 30:
            rows.append({"skipped": "budget"})
            break
        torch._dynamo.reset()
        fn = torch.compile(se_kernel.eager_se, dynamic=False)
        row: dict[str, Any] = {"dtype": dname, "n": n, "c": c, "hw": hw}
        for backward in (False, True):
            inputs = inputs_on(se_kernel, torch, n, c, hw, dname, backward, device(s))
            row["fwdbwd_compile_ms" if backward else "fwd_compile_ms"] = round(
                bench_ms(step(torch, fn, inputs, backward), s.dry), 4)
        rows.append(row)
        print(row, flush=True)
        if s.dry:
            break  # one compile proves the path; CPU compiles take tens of seconds
    nets = compiled_networks(s, torch) if s.left() > 120 or s.dry else [{"skipped": "budget"}]
    return {"blocks": rows, "networks": nets}


def compiled_networks(s: Session, torch: Any) -> list[dict[str, Any]]:
    rows = []
    n = 2 if s.dry else NETWORK_BATCH["train"]
    for kind, impls in network_models(s).items():
        if s.left() < 60 and not s.dry:
            rows.append({"net": kind, "skipped": "budget"})
            continue
        torch._dynamo.reset()
        model = prepare(s, torch, impls["sedsl plain"], torch.bfloat16).train()
        fn = torch.compile(model)
        x = network_input(s, torch, n, torch.bfloat16)
        t0 = time.monotonic()
        train_step(fn, x)()
        row = {"net": kind, "impl": "sedsl plain compiled",
               "compile_s": round(time.monotonic() - t0, 1),
               f"train_n{n}_ms": round(bench_ms(train_step(fn, x), s.dry), 3)}
        rows.append(row)
        print(row, flush=True)
        model.cpu()
    return rows


SANITIZE_CASE = """
import torch, sys
sys.path.insert(0, {root!r})
from sedsl.pytorch.kernels import se_block
u = torch.randn(2, 96, 7, 7, device='cuda', requires_grad=True)
i = torch.randn_like(u, requires_grad=True)
w1 = torch.randn(6, 96, device='cuda', requires_grad=True)
w2 = torch.randn(96, 6, device='cuda', requires_grad=True)
b1 = torch.zeros(6, device='cuda', requires_grad=True)
b2 = torch.zeros(96, device='cuda', requires_grad=True)
se_block(u, w1, b1, w2, b2, i, act='relu').sum().backward()
torch.cuda.synchronize()
print('sanitized case ran')
"""


def sanitizer(s: Session) -> dict[str, Any]:
    tool = shutil.which("compute-sanitizer")
    if tool is None or s.dry:
        return {"ran": False, "why": "dry run" if s.dry else "compute-sanitizer not on PATH"}
    cmd = [tool, "--tool", "memcheck", "--error-exitcode", "9", sys.executable, "-c",
           SANITIZE_CASE.format(root=str(ROOT))]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30, s.left() - 5))
    except subprocess.TimeoutExpired:
        return {"ran": False, "why": "timed out"}
    tail = (run.stdout + run.stderr)[-2000:]
    print(tail)
    return {"ran": True, "exit": run.returncode, "tail": tail}


VARIANT_SPEC = """
network one_block {{
  input {c}x{hw}x{hw}
  b = {{ bn }}
}}

se {{
  variant = {variant}
  at block.end
}}
"""
VARIANTS = ["se", "se_bn", "ese", "eca", "ceca", "ecam", "gc", "gca", "cbam", "lcbam", "coord",
            "srm", "gct", "simam", "scse", "ge"]


def variants(s: Session) -> dict[str, Any]:
    """The attention family in eager PyTorch (sedsl's plain lowering), one block on U = 256 x
    56 x 56, batch 32, bf16, channels_last: forward and forward + backward time above BN alone,
    beside each block's passes over U from the cost model (what sets their wall-clock time);
    for the variants that run fused (se with the BN folded in, eca, ceca, ge, gct; se_bn, ese,
    ecam, srm through the generic transform: the statistic and apply kernels, the plain modules
    between them) the fused op's times and its speed-up over the plain lowering too."""
    import torch

    import sedsl

    c, hw, n = (16, 8, 2) if s.dry else (256, 56, 32)
    x = network_input_shape(s, torch, n, c, hw)
    base = sedsl.loads(VARIANT_SPEC.format(c=c, hw=hw, variant="se"), path="one_block.se")
    rows = [time_block(s, torch, "bn only", base.to_torch(fused=False, se=False), x, 0.0)]
    for name in VARIANTS:
        if s.left() < 10:
            rows.append({"variant": name, "skipped": "budget"})
            break
        net = sedsl.loads(VARIANT_SPEC.format(c=c, hw=hw, variant=name), path="one_block.se")
        passes = float(sum(net.cost().passes.values()))
        rows.append(time_block(s, torch, name, net.to_torch(fused=False), x, passes))
        fused = net.to_torch()
        if any(type(m).__module__.startswith("sedsl.pytorch.kernels") for m in fused.modules()):
            timed = time_block(s, torch, name, fused, x, passes)  # the fused op (se: BN folded in)
            rows[-1].update(fused_fwd_ms=timed["fwd_ms"], fused_fwdbwd_ms=timed["fwdbwd_ms"],
                            fwd_speedup=round(rows[-1]["fwd_ms"] / timed["fwd_ms"], 3),
                            fwdbwd_speedup=round(rows[-1]["fwdbwd_ms"] / timed["fwdbwd_ms"], 3))
        print(rows[-1], flush=True)
    for r in rows[1:]:
        if "fwd_ms" in r:
            r["fwd_over_bn_ms"] = round(r["fwd_ms"] - rows[0]["fwd_ms"], 4)
            r["fwdbwd_over_bn_ms"] = round(r["fwdbwd_ms"] - rows[0]["fwdbwd_ms"], 4)
    return {"rows": rows, "u": f"{c}x{hw}x{hw}", "batch": n}


def network_input_shape(s: Session, torch: Any, n: int, c: int, hw: int) -> Any:
    x = torch.randn((n, c, hw, hw), device=device(s)).to(torch.bfloat16)
    return x.contiguous(memory_format=torch.channels_last)


def time_block(s: Session, torch: Any, name: str, model: Any, x: Any,
               passes: float) -> dict[str, Any]:
    model = prepare(s, torch, model, torch.bfloat16).train()
    fwd = bench_ms(no_grad(torch, model, x), s.dry)
    xg = x.detach().requires_grad_(True)
    step = bench_ms(train_step(model, xg), s.dry)
    return {"variant": name, "passes_over_u": round(passes, 2), "fwd_ms": round(fwd, 4),
            "fwdbwd_ms": round(step, 4)}


SECTIONS: list[tuple[str, Callable[[Session], dict[str, Any]], float]] = [
    ("env", env, 0), ("host", host, 20), ("tests", tests, 30), ("blocks", blocks, 30),
    ("bn_blocks", bn_blocks, 20), ("flops", flops, 20), ("networks", networks, 40),
    ("memory", memory, 20), ("variants", variants, 20), ("compile", compiled, 40),
    ("sanitizer", sanitizer, 40),
]


# --- report ---------------------------------------------------------------------------------

def markdown(results: dict[str, Any]) -> str:
    sec = results["sections"]
    lines = ["# sedsl GPU session" + (" (dry run: CPU, interpreter, tiny shapes)"
                                      if results["dry_run"] else ""), ""]
    e = sec.get("env", {})
    lines.append(", ".join(f"{k} {e[k]}" for k in ("gpu", "torch", "triton", "cuda", "copy_gbps")
                           if k in e))
    lines += ["", "| section | status | seconds | note |", "|---|---|---|---|"]
    for name, r in sec.items():
        note = r.get("summary") or r.get("why") or r.get("error", "")
        lines.append(f"| {name} | {r['status']} | {r.get('seconds', '')} | "
                     f"{str(note)[:200].replace('|', '/')} |")
    lines += table("Host CPU time per call, us", sec.get("host", {}).get("rows", []))
    lines += table("SE blocks (channels_last)", sec.get("blocks", {}).get("rows", []))
    lines += table("BN + SE blocks, training (channels_last)",
                   sec.get("bn_blocks", {}).get("rows", []))
    if "counts" in sec.get("flops", {}):
        lines += table("FlopCounterMode, SE-ResNet-50 training step", [sec["flops"]["counts"]])
    lines += table("Networks", sec.get("networks", {}).get("rows", []))
    lines += table("SE network / base network", sec.get("networks", {}).get("overhead", []))
    lines += table("Training-step memory", sec.get("memory", {}).get("rows", []))
    lines += table("The attention family, one block (eager, and fused where it runs fused; bf16, "
                   "channels_last)",
                   sec.get("variants", {}).get("rows", []))
    lines += table("torch.compile: blocks", sec.get("compile", {}).get("blocks", []))
    lines += table("torch.compile: networks", sec.get("compile", {}).get("networks", []))
    return "\n".join(lines) + "\n"


def table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    keys = list(dict.fromkeys(k for r in rows for k in r))
    out = ["", f"## {title}", "", "| " + " | ".join(keys) + " |",
           "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, interpreter, tiny shapes")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for all sections")
    parser.add_argument("--out", default=os.environ.get("OUT") or "build/gpu_session")
    parser.add_argument("--only", nargs="+", choices=[n for n, _, _ in SECTIONS])
    args = parser.parse_args()
    if args.dry_run and os.environ.get("TRITON_INTERPRET") != "1":
        parser.error("--dry-run needs TRITON_INTERPRET=1 before Python starts "
                     "(bench/gpu_session.sh --dry-run sets it)")
    s = Session(Path(args.out), args.budget, args.dry_run)
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA GPU here: run with --dry-run")
            return 2
    for name, fn, needs in SECTIONS:
        if args.only is None or name in args.only:
            s.run(name, fn, needs)
    failed = [n for n, r in s.results["sections"].items() if r["status"] == "failed"]
    print(f"\nwrote {s.out / 'gpu_session.json'} and {s.out / 'gpu_session.md'}"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
