"""Activation memory of one training step: bytes autograd saves for backward, SE-ResNet-50 and
ResNet-50 side by side (timm's eager models, sedsl's plain and fused lowerings, torch.compile).

Saved bytes are counted exactly with torch.autograd.graph.saved_tensors_hooks during the
training step's forward: every saved tensor's storage once (a tensor saved by two layers, such
as a block's output that the next conv also keeps, counts once), the model's parameters
excluded. The fused op runs its Triton kernels: on the CPU under Triton's interpreter
(TRITON_INTERPRET=1, set for the child processes this script starts), on a GPU compiled. Each
measurement runs in a process of its own (the interpreter must be on before triton is imported,
torch.compile's must be off).

    python bench/train_memory.py [--batch 2] [--size 64] [--dtype fp32] [--no-compile] [--cuda]

--cuda measures on the GPU (no interpreter) and adds the peak memory allocated during the step
above the model's own state. The ratio column divides by the base network's saved bytes (timm's
resnet50 for timm and torch.compile, sedsl's unfused base lowering for sedsl's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = {  # name: (source, SE network, base network's name)
    "timm resnet50": ("timm", False, "timm resnet50"),
    "timm seresnet50": ("timm", True, "timm resnet50"),
    "sedsl base (ResNet-50)": ("sedsl-base", False, "sedsl base (ResNet-50)"),
    "sedsl SE-ResNet-50 plain": ("sedsl-plain", True, "sedsl base (ResNet-50)"),
    "sedsl SE-ResNet-50 fused": ("sedsl-fused", True, "sedsl base (ResNet-50)"),
    "compiled timm resnet50": ("timm-compiled", False, "compiled timm resnet50"),
    "compiled timm seresnet50": ("timm-compiled", True, "compiled timm resnet50"),
}
DTYPES = ("fp32", "bf16", "fp16")


def build(name: str, size: int) -> Any:
    """The model `name` of MODELS, randomly initialised (no weights are downloaded)."""
    source, se, _ = MODELS[name]
    if source.startswith("timm"):
        import timm

        model = timm.create_model("seresnet50" if se else "resnet50")
        if source == "timm-compiled":
            import torch

            return torch.compile(model)
        return model
    import sedsl

    net = sedsl.load(ROOT / "specs/se_resnet50.se", input=f"3x{size}x{size}", layout="timm")
    return net.to_torch(fused=source == "sedsl-fused", se=source != "sedsl-base")


def saved_bytes(model: Any, x: Any) -> int:
    """Bytes autograd saves in the forward of a training step: each storage once, parameters
    excluded."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: Any) -> Any:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    out.float().sum().backward()
    return sum(seen.values())


def measure(name: str, batch: int, size: int, dtype_name: str, cuda: bool) -> dict[str, Any]:
    """Saved bytes (and on a GPU the peak allocated above the model's state) of a training step
    of `name`; a warm-up step first (compiles, autotunes)."""
    import torch

    torch.manual_seed(0)
    device = "cuda" if cuda else "cpu"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    model = build(name, size).to(device, dtype).to(memory_format=torch.channels_last).train()
    x = torch.randn(batch, 3, size, size, device=device).to(dtype).contiguous(
        memory_format=torch.channels_last)
    saved_bytes(model, x)  # warm-up: compile, autotune, allocator
    row: dict[str, Any] = {"model": name, "saved_bytes": saved_bytes(model, x)}
    if cuda:
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        model(x).float().sum().backward()
        torch.cuda.synchronize()
        row["peak_above_state_bytes"] = torch.cuda.max_memory_allocated() - before
    return row


def child(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """`measure` in a process of its own: the interpreter for the fused op on the CPU, none for
    torch.compile (Inductor compiles C++ there)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH",
                                                                                "")]))
    env.pop("TRITON_INTERPRET", None)
    if not args.cuda and MODELS[name][0] == "sedsl-fused":
        env["TRITON_INTERPRET"] = "1"
    cmd = [sys.executable, __file__, "--child", name, "--batch", str(args.batch), "--size",
           str(args.size), "--dtype", args.dtype, *(["--cuda"] if args.cuda else [])]
    run = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        return {"model": name, "error": run.stderr.strip().splitlines()[-1][:300]}
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The rows side by side: MiB saved, and the ratio to each one's base network."""
    by_name = {r["model"]: r for r in rows}
    where = "CUDA" if args.cuda else "CPU, fused op under TRITON_INTERPRET=1"
    lines = [f"saved for backward, one training step: batch {args.batch}, "
             f"{args.size}x{args.size}, {args.dtype}, channels_last ({where})", "",
             "| model | saved MiB | / base |" + (" peak above state MiB |" if args.cuda else ""),
             "|---|---|---|" + ("---|" if args.cuda else "")]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} | |")
            continue
        base = by_name.get(MODELS[r["model"]][2], {})
        ratio = r["saved_bytes"] / base["saved_bytes"] if "saved_bytes" in base else float("nan")
        line = f"| {r['model']} | {r['saved_bytes'] / 2**20:.3f} | {ratio:.4f}x |"
        if args.cuda:
            line += f" {r['peak_above_state_bytes'] / 2**20:.1f} |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow)")
    parser.add_argument("--cuda", action="store_true", help="on the GPU (no interpreter)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    parser.add_argument("--only", nargs="+", choices=list(MODELS), help="these models only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.batch, args.size, args.dtype, args.cuda)))
        return
    names = [n for n in args.only or MODELS if not (args.no_compile and "compiled" in n)]
    rows = []
    for name in names:
        rows.append(child(args, name))
        print(rows[-1], file=sys.stderr, flush=True)
    print(table(rows, args))
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
