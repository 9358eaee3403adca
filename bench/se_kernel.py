"""GPU benchmark of the fused SE op (sedsl.pytorch.kernels.se_block) against eager PyTorch and
torch.compile, on the SE blocks of SE-ResNeXt-101 (timm's SEModule, then the bottleneck's
shortcut add and ReLU): C=256@56x56, 512@28x28, 1024@14x14, 2048@7x7, reduced width C/16.

Times are triton.testing.do_bench medians. GB/s counts the fused design's traffic for every
candidate alike: forward 4|U| bytes (read U twice, read the identity, write the output);
with --backward, forward + backward 10|U| (+ 6|U|: read dOut, U, identity, write dIdentity;
read dIdentity, write dU). |U| = N*C*H*W*element size. Eager PyTorch moves about 8|U| forward.
Next to the times, each candidate's kernel launches (counted by torch.profiler) and, for the
fused op, the bytes each of its kernels moves (`plan`, from the launchers' own tile and split
choices and triton_se.excite_bytes; tests/kernels_interpret_cases.py checks the U-sized totals
and every excitation launch's bytes exactly by counting the interpreter's loads and stores).

Run: python bench/se_kernel.py [--batch 1 32 128] [--dtype fp32 bf16] [--layout nchw nhwc]
         [--stage 0 1 2 3] [--no-compile] [--backward] [--network specs/se_resnext101.se]
         [--excitation triton|torch] [--plan]
--plan prints the launches and bytes per kernel without timing anything (no GPU needed):
activations (U-sized and O(N*C)) in |U|, and the weights separately (O(C*C/16): at batch 1 on
the 7x7 stage W1 + W2 alone are 5|U|), with how many times over they are read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
STAGES = [(256, 56), (512, 28), (1024, 14), (2048, 7)]  # (C, H=W) of SE-ResNeXt-101's stages
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
FORMATS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}


def eager_se(u: Tensor, identity: Tensor, w1: Tensor, b1: Tensor, w2: Tensor,
             b2: Tensor) -> Tensor:
    """timm's SEModule followed by the bottleneck's `x += shortcut; relu(x)`."""
    x = u.mean((2, 3), keepdim=True)  # (N, C, 1, 1)
    x = F.conv2d(F.relu(F.conv2d(x, w1, b1)), w2, b2).sigmoid()
    y = u * x
    y += identity
    return F.relu(y, inplace=True)


def fused_se(u: Tensor, identity: Tensor, w1: Tensor, b1: Tensor, w2: Tensor,
             b2: Tensor) -> Tensor:
    """The same block as one sedsl op."""
    from sedsl.pytorch.kernels import se_block

    return se_block(u, w1, b1, w2, b2, identity, act="relu")


def block_inputs(n: int, c: int, hw: int, dtype: torch.dtype, fmt: torch.memory_format,
                 grad: bool) -> list[Tensor]:
    """[U, identity, fc1 weight, fc1 bias, fc2 weight, fc2 bias] on the GPU, r = c / 16."""
    r = c // 16

    def make(shape: tuple[int, ...], scale: float = 1.0, memory_format: Any = None) -> Tensor:
        t = (torch.randn(shape, device="cuda") * scale).to(dtype)
        if memory_format is not None:
            t = t.contiguous(memory_format=memory_format)
        return t.requires_grad_(grad)

    u, identity = make((n, c, hw, hw), memory_format=fmt), make((n, c, hw, hw), memory_format=fmt)
    w1, w2 = make((r, c, 1, 1), c**-0.5), make((c, r, 1, 1), r**-0.5)
    return [u, identity, w1, make((r,)), w2, make((c,))]


def timed(fn: Callable[..., Tensor], args: list[Tensor], backward: bool) -> float:
    """Median milliseconds of fn(*args) (and its backward to every input)."""
    import triton.testing

    if not backward:
        with torch.no_grad():
            return float(triton.testing.do_bench(lambda: fn(*args), return_mode="median"))
    grad = torch.randn_like(args[0])

    def step() -> None:
        torch.autograd.grad(fn(*args), args, grad)

    return float(triton.testing.do_bench(step, return_mode="median"))


def relative_error(fn: Callable[..., Tensor], ref: Callable[..., Tensor],
                   args: list[Tensor]) -> float:
    with torch.no_grad():
        want = ref(*args).float()
        return float((fn(*args).float() - want).abs().max() / want.abs().max().clamp_min(1e-12))


def plan(n: int, c: int, hw: int, itemsize: int, channels_last: bool,
         backward: bool) -> dict[str, tuple[int, int]]:
    """Bytes each fused kernel moves for the SE-ResNet block (identity, ReLU, bias, weights in
    U's dtype), as (activations, weights and biases), from triton_se's tile and split choices;
    one entry per launch."""
    from sedsl.pytorch.kernels import triton_se as ts

    r, u = c // 16, n * c * hw * hw * itemsize
    bc, bhw = ts.reduce_tile(c, hw * hw, channels_last, itemsize)
    splits, _ = ts.splits(n, -(-c // bc), hw * hw, bhw)
    partials, nc = splits * n * c * 4, n * c * 4
    fc = ts.excite_bytes(n, c, r, splits, itemsize, True, False, backward)
    if not backward:
        return {"_squeeze_kernel": (u + partials, 0), **fc, "_scale_kernel": (3 * u + nc, 0)}
    return {"_bwd_reduce_kernel": (4 * u + nc + partials, 0),  # dOut, U, identity; dIdentity
            **fc, "_bwd_input_kernel": (2 * u + 2 * nc, 0)}  # dIdentity read back; dU


def _mb(x: int) -> str:
    return f"{x / 1e6:.2f}MB"


def print_plan(args: argparse.Namespace) -> None:
    """Launches and bytes per kernel of each SE-ResNeXt-101 stage: activations (U-sized and
    O(N*C)) in |U|, weights (O(C*C/16), read ceil(N / BLOCK_M) times) in MB and as multiples
    of W1 + W2 + biases read once."""
    print("fused SE-ResNet block (identity, ReLU): launches and bytes per kernel, "
          "from the launchers' tiles and splits; act = activations, w = weights and biases")
    for dname in args.dtype:
        itemsize = DTYPES[dname].itemsize
        for fname in args.layout:
            for n in args.batch:
                for stage in args.stage:
                    c, hw = STAGES[stage]
                    u = n * c * hw * hw * itemsize
                    once = (2 * c * (c // 16) + c + c // 16) * itemsize  # W1, W2, b1, b2
                    for direction, bwd in (("fwd", False), ("bwd", True)):
                        kernels = plan(n, c, hw, itemsize, fname == "nhwc", bwd)
                        act = sum(a for a, _ in kernels.values())
                        wts = sum(w for _, w in kernels.values())
                        detail = "  ".join(f"{k[1:-7]} {_mb(a)}" + (f"+w {_mb(w)}" if w else "")
                                           for k, (a, w) in kernels.items())
                        print(f"{dname} {fname} N={n:<4} C={c:<5} {hw:>2}x{hw:<2} {direction}: "
                              f"{len(kernels)} launches, act {act / u:.3f}|U| + w {_mb(wts)} "
                              f"({wts / once:.1f}x W) = {(act + wts) / u:.3f}|U| "
                              f"({(act + wts) / 1e6:.1f} MB)  [{detail}]")


def launches(fn: Callable[..., Tensor], args: list[Tensor], backward: bool) -> int:
    """CUDA kernels one call (and its backward) launches, by torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    grad = torch.randn_like(args[0]) if backward else None
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        if backward:
            torch.autograd.grad(fn(*args), args, grad)
        else:
            with torch.no_grad():
                fn(*args)
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type.name == "CUDA")


def bench_blocks(args: argparse.Namespace) -> None:
    traffic = 10 if args.backward else 4
    print(f"SE blocks ({'forward + backward' if args.backward else 'forward'}); GB/s counts "
          f"{traffic}|U| bytes for every column; err = fused vs eager, max relative")
    print(f"{'block':>30} {'eager ms':>9} {'compile ms':>10} {'fused ms':>9} {'eager GB/s':>10} "
          f"{'compile GB/s':>12} {'fused GB/s':>10} {'vs eager':>8} {'vs compile':>10} {'err':>8}")
    for dname in args.dtype:
        for fname in args.layout:
            for n in args.batch:
                for stage in args.stage:
                    c, hw = STAGES[stage]
                    bench_block(args, n, c, hw, dname, fname, traffic)


def bench_block(args: argparse.Namespace, n: int, c: int, hw: int, dname: str, fname: str,
                traffic: int) -> None:
    inputs = block_inputs(n, c, hw, DTYPES[dname], FORMATS[fname], args.backward)
    nbytes = traffic * inputs[0].numel() * inputs[0].element_size()
    ms = {"eager": timed(eager_se, inputs, args.backward),
          "fused": timed(fused_se, inputs, args.backward)}
    if not args.no_compile:
        torch._dynamo.reset()  # a fresh compile per shape: no recompile limit, no dynamic shapes
        ms["compile"] = timed(torch.compile(eager_se, dynamic=False), inputs, args.backward)
    err = relative_error(fused_se, eager_se, inputs)
    gbs = {k: nbytes / (v * 1e-3) / 1e9 for k, v in ms.items()}
    comp = ms.get("compile", float("nan"))
    label = f"{dname} {fname} N={n} C={c} {hw}x{hw}"
    print(f"{label:>30} {ms['eager']:9.3f} {comp:10.3f} {ms['fused']:9.3f} "
          f"{gbs['eager']:10.0f} {gbs.get('compile', float('nan')):12.0f} {gbs['fused']:10.0f} "
          f"{ms['eager'] / ms['fused']:7.2f}x {comp / ms['fused']:9.2f}x {err:8.1e}")
    counts = {"eager": launches(eager_se, inputs, args.backward),
              "fused": launches(fused_se, inputs, args.backward)}
    kernels = plan(n, c, hw, inputs[0].element_size(), fname == "nhwc", False)
    if args.backward:
        kernels.update(plan(n, c, hw, inputs[0].element_size(), fname == "nhwc", True))
    u = inputs[0].numel() * inputs[0].element_size()
    print(f"{'':>30} launches eager {counts['eager']}, fused {counts['fused']}; fused bytes "
          + ", ".join(f"{k[1:-7]} {(a + w) / u:.2f}|U|" for k, (a, w) in kernels.items()))
    del inputs


def build_networks(path: str) -> tuple[Any, dict[str, torch.nn.Module]] | None:
    """(network, {"plain": ..., "fused": ...}) with equal weights, or None if it can't be built."""
    try:
        import sedsl

        net = sedsl.load(path)
        plain = net.to_torch(fused=False)
        fused = sedsl.transfer_weights(plain, net.to_torch(fused=True))
    except Exception as err:  # the builder may not handle this spec yet: report and go on
        print(f"--network {path}: could not build it ({type(err).__name__}: {err}); skipped")
        return None
    return net, {"plain": plain, "fused": fused}


def bench_network(args: argparse.Namespace) -> None:
    built = build_networks(args.network)
    if built is None:
        return
    net, models = built
    shape = tuple(net.graph.graph["input"])
    print(f"\n{net.name} from {args.network}, input {'x'.join(map(str, shape))}: eval-mode "
          "forward and train-mode forward+backward, median ms")
    for dname in args.dtype:
        for fname in args.layout:
            for n in args.batch:
                dtype, fmt = DTYPES[dname], FORMATS[fname]
                x = torch.randn((n, *shape), device="cuda").to(dtype, memory_format=fmt)
                for name, model in models.items():
                    model.to("cuda", dtype).to(memory_format=fmt)
                    variants: dict[str, torch.nn.Module] = {name: model}
                    if not args.no_compile:
                        torch._dynamo.reset()  # each shape and dtype compiles afresh
                        variants[f"{name} compiled"] = torch.compile(model)  # type: ignore[assignment]
                    for label, m in variants.items():
                        report_network(f"{dname} {fname} N={n:<4} {label:15}", m, x)


def report_network(label: str, model: torch.nn.Module, x: Tensor) -> None:
    try:
        fwd, fwd_bwd = network_times(model, x)
    except Exception as err:  # e.g. out of memory at batch 128: say so and go on
        print(f"  {label} failed: {type(err).__name__}: {str(err)[:120]}")
        torch.cuda.empty_cache()
        return
    print(f"  {label} forward {fwd:9.2f}   forward+backward {fwd_bwd:9.2f}")


def network_times(model: torch.nn.Module, x: Tensor) -> tuple[float, float]:
    """(inference forward ms in eval mode, training forward+backward ms) medians."""
    import triton.testing

    model.eval()
    with torch.no_grad():
        fwd = triton.testing.do_bench(lambda: model(x), return_mode="median")
    model.train()

    def step() -> None:
        model(x).float().sum().backward()

    fwd_bwd = triton.testing.do_bench(step, grad_to_none=list(model.parameters()),
                                      return_mode="median")
    return float(fwd), float(fwd_bwd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--layout", nargs="+", choices=list(FORMATS), default=list(FORMATS))
    parser.add_argument("--stage", type=int, nargs="+", choices=range(4), default=[0, 1, 2, 3])
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--backward", action="store_true", help="time forward + backward")
    parser.add_argument("--network", help="also time a whole network built from this spec")
    parser.add_argument("--excitation", choices=["triton", "torch"], default="triton",
                        help="how the fused op computes the two FCs (triton_se.EXCITATION)")
    parser.add_argument("--plan", action="store_true",
                        help="print launches and bytes per kernel only (no GPU needed)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))  # sedsl from this checkout
    if args.plan:
        print_plan(args)
        return 0
    if not torch.cuda.is_available():
        print("bench/se_kernel.py needs a CUDA GPU (torch.cuda.is_available() is False); "
              "nothing to do.")
        return 0
    from sedsl.pytorch.kernels import triton_se

    triton_se.EXCITATION = args.excitation
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"excitation in {args.excitation}")
    bench_blocks(args)
    if args.network:
        bench_network(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
