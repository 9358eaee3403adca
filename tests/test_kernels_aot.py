"""The Triton kernels compiled ahead of time for real GPUs (sm_80, sm_90), with no GPU.

The launchers run on meta tensors under a stub Triton driver that reports a CUDA target; a
`triton.knobs.runtime.jit_cache_hook` records each launch's exact specialisation (signature,
constexprs, divisibility attributes, num_warps of every autotune config) and returns True so
nothing launches. Each distinct specialisation is then compiled with
`triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))` and its registers and local
memory (spills) read with the cuobjdump that ships with Triton.

The work runs in a child process (`python tests/test_kernels_aot.py`, printing JSON): the stub
driver and the hook are process-wide, and a fresh TRITON_CACHE_DIR makes every kernel compile.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARCHS = (80, 90)
STAGES = [(256, 56), (512, 28), (1024, 14), (2048, 7)]  # SE-ResNeXt-101's SE blocks, r = C/16
# Spill budget (bytes of local memory per thread): none anywhere. The elementwise and reducing
# kernels are memory-bound, where a spill is extra traffic on the critical path; the excitation
# kernels keep h (BLOCK_M x BLOCK_R) and ~_PRODUCT-element tiles in registers by design.
SPILL_BUDGET = {"_squeeze_kernel": 0, "_scale_kernel": 0, "_bwd_reduce_kernel": 0,
                "_bwd_input_kernel": 0, "_excite_fc1_kernel": 0, "_excite_fc2_kernel": 0,
                "_excite_bwd_kernel": 0, "_excite_wgrad_kernel": 0, "_bn_stats_kernel": 0,
                "_bn_bwd_kernel": 0, "_channel_conv_kernel": 0, "_channel_conv_bwd_kernel": 0,
                "_gct_kernel": 0, "_gct_bwd_kernel": 0}


def _cuda_backend_missing() -> str | None:
    """Why the CUDA backend cannot compile here, or None."""
    try:
        import triton
        from triton.backends import backends
    except ImportError as err:
        return f"triton is not importable ({err})"
    if "nvidia" not in backends:
        return f"the installed Triton {triton.__version__} has no CUDA (nvidia) backend"
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    for tool in ("ptxas", "cuobjdump"):
        if not (tools / tool).exists():
            return f"the installed Triton has no bundled {tool} ({tools})"
    return None


# --- the child process --------------------------------------------------------------------------


def _install_stub_driver(arch: int) -> list[tuple[Any, dict[str, Any]]]:
    """Make Triton believe a CUDA device of `arch` is current (bench/_stub_driver.py, meta
    tensors); return the list the cache hook fills with (JITFunction, compile arguments)
    instead of launching."""
    import triton

    sys.path.insert(0, str(ROOT / "bench"))
    import _stub_driver

    _stub_driver.activate(arch, device="meta")
    caught: list[tuple[Any, dict[str, Any]]] = []

    def hook(*, fn: Any, compile: dict[str, Any], **_: Any) -> bool:
        caught.append((fn.jit_function, compile))
        return True  # skip the launch

    triton.knobs.runtime.jit_cache_hook = hook
    return caught


def _launch_everything() -> None:
    """Run the forward and backward launchers on meta tensors: SE-ResNeXt-101's SE blocks at
    batch 1 and 32, fp32/fp16/bf16, NCHW and channels_last, then awkward shapes and strides."""
    import torch

    from sedsl.pytorch.kernels import triton_se
    from sedsl.pytorch.kernels.reference import for_act_grad

    def block(shape: tuple[int, int, int, int], dtype: torch.dtype, channels_last: bool,
              squeeze: str, excite: str, gate: str, act: str, identity: bool,
              strides: str = "") -> None:
        n, c, h, w = shape
        r = max(1, c // 16)

        def t(*size: int) -> torch.Tensor:
            return torch.empty(size, device="meta", dtype=dtype)

        u = t(*shape)
        if channels_last:
            u = u.contiguous(memory_format=torch.channels_last)
        if strides == "odd":  # h and w do not flatten
            u = t(n, c, h, w + 3)[..., :w]
        ident = None
        if identity:
            ident = t(*shape) if strides != "mixed" else torch.empty_like(u).contiguous()
            if channels_last and strides != "mixed":
                ident = ident.contiguous(memory_format=torch.channels_last)
        w1, b1, w2, b2 = t(r, c), t(r), t(c, r), t(c)
        out, z, s, idx = triton_se.forward(u, w1, b1, w2, b2, ident, squeeze, excite, gate, act)
        grad = torch.empty_like(out)
        if strides == "expanded":
            grad = torch.empty(1, device="meta", dtype=dtype).expand(*shape)
        triton_se.backward(grad, u, w1, b1, w2, b2, *for_act_grad(ident, out, act), z, s, idx,
                           None, None, squeeze, excite, gate, act, ident is not None)

    def bn_block(shape: tuple[int, int, int, int], dtype: torch.dtype, channels_last: bool,
                 excite: str, gate: str, act: str, identity: bool, training: bool,
                 param_dtype: torch.dtype = torch.float32) -> None:
        """The SE block with its BN folded in (triton_se.bn_forward / bn_backward)."""
        c = shape[1]
        r = max(1, c // 16)

        def t(*size: int, dt: torch.dtype = dtype) -> torch.Tensor:
            return torch.empty(size, device="meta", dtype=dt)

        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = t(*shape).contiguous(memory_format=fmt)
        ident = t(*shape).contiguous(memory_format=fmt) if identity else None
        p = param_dtype
        bn = (t(c, dt=p), t(c, dt=p), t(c, dt=p), t(c, dt=p), t(1, dt=torch.int64))
        w1, b1, w2, b2 = t(r, c, dt=p), t(r, dt=p), t(c, r, dt=p), t(c, dt=p)
        out, _, s, stats = triton_se.bn_forward(x, *bn, w1, b1, w2, b2, ident, training, 0.1,
                                                1e-5, excite, gate, act)
        triton_se.bn_backward(torch.empty_like(out), x, bn[0], bn[1], w1, b1, w2, b2,
                              *for_act_grad(ident, out, act), s, stats, None, None, training,
                              excite, gate, act, ident is not None)

    resnet = ("avg", "relu", "sigmoid", "relu", True)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for channels_last in (False, True):
            for c, hw in STAGES:
                block((32, c, hw, hw), dtype, channels_last, *resnet)
                if dtype == torch.bfloat16:  # batch 1: split reductions
                    block((1, c, hw, hw), dtype, channels_last, *resnet)
    # every activation in every role and both squeezes, on awkward shapes (C = 3, C = 1823,
    # 1x1, 3x3, 7x7), alternating layouts
    acts = [("max", "silu", "hardsigmoid", "hardswish", True),
            ("avg", "relu6", "tanh", "silu", False),
            ("max", "hardswish", "relu", "relu6", True),
            ("avg", "sigmoid", "sigmoid", "sigmoid", True),
            ("max", "hardsigmoid", "hardsigmoid", "hardsigmoid", False),
            ("avg", "tanh", "tanh", "tanh", True),
            ("avg", "relu", "sigmoid", "none", True)]
    shapes = [((1, 3, 7, 7), torch.float32), ((2, 1823, 3, 3), torch.bfloat16),
              ((3, 5, 1, 1), torch.float16)]
    for j, case in enumerate(acts):
        shape, dtype = shapes[j % len(shapes)]
        block(shape, dtype, j % 2 == 1, *case)
    for strides in ("odd", "mixed", "expanded"):
        block((2, 64, 14, 14), torch.bfloat16, strides == "mixed", *resnet, strides=strides)
        block((2, 64, 14, 14), torch.float32, False, *acts[0], strides=strides)
    # a sample over 2^31 elements: int64 offsets (meta tensors cost no memory)
    block((2, 2048, 1024, 1040), torch.bfloat16, False, *resnet)
    block((2, 2048, 1024, 1040), torch.bfloat16, True, *acts[0])
    # BN folded in: SE-ResNeXt-101's stages (training, and eval at batch 32), batch 1 with
    # split reductions, every act path (relu from the output, silu from y), awkward shapes
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for channels_last in (False, True):
            for c, hw in STAGES:
                bn_block((32, c, hw, hw), dtype, channels_last, "relu", "sigmoid", "relu", True,
                         True)
                if dtype == torch.bfloat16:
                    bn_block((1, c, hw, hw), dtype, channels_last, "relu", "sigmoid", "relu",
                             True, True, torch.bfloat16)
                    bn_block((32, c, hw, hw), dtype, channels_last, "relu", "sigmoid", "relu",
                             True, False)
    for j, (excite, gate, act, identity) in enumerate(
            [("silu", "hardsigmoid", "hardswish", True), ("relu6", "tanh", "silu", False),
             ("relu", "sigmoid", "none", True), ("hardswish", "relu", "relu", False)]):
        shape, dtype = shapes[j % len(shapes)]
        bn_block(shape, dtype, j % 2 == 1, excite, gate, act, identity, j % 2 == 0)
    bn_block((2, 2048, 1024, 1040), torch.bfloat16, True, "relu", "sigmoid", "relu", True, True)
    # ECA (the channel convolution transform): SE-ResNet's stages, both paddings, k 3 to 9
    for j, (c, hw) in enumerate(STAGES):
        for dtype in (torch.float32, torch.bfloat16):
            u = torch.empty((32, c, hw, hw), device="meta", dtype=dtype)
            w = torch.empty(3 + 2 * j, device="meta")
            out, z, s = triton_se.eca_forward(u, w, u, j % 2 == 1, "sigmoid", "relu")
            triton_se.eca_backward(torch.empty_like(out), u, w, None, out, z, s, None, None,
                                   j % 2 == 1, "sigmoid", "relu", True)
    # Gather-Excite's mean (the channel-conv kernel without a weight): batch 32 and batch 1
    for j, (c, hw) in enumerate(STAGES):
        for n in (32, 1):
            u = torch.empty((n, c, hw, hw), device="meta", dtype=torch.bfloat16)
            out, z, s = triton_se.ge_forward(u, u if j % 2 else None, "sigmoid", "relu")
            triton_se.ge_backward(torch.empty_like(out), u, None, out, z, s, None, None,
                                  "sigmoid", "relu", j % 2 == 1)
    # GCT: the sum of squares, the per-sample normalisation (C up to 2048: two loop steps)
    for j, (c, hw) in enumerate(STAGES):
        for n in (32, 1):
            u = torch.empty((n, c, hw, hw), device="meta", dtype=torch.bfloat16)
            p = torch.empty(c, device="meta")
            out, z, s = triton_se.gct_forward(u, p, p, p, u if j % 2 else None, 1e-5, "tanh",
                                              "relu")
            triton_se.gct_backward(torch.empty_like(out), u, p, p, p, None, out, z, s, None,
                                   None, 1e-5, "tanh", "relu", j % 2 == 1)


def _specialisations(caught: list[tuple[Any, dict[str, Any]]]) -> list[tuple[Any, dict[str, Any]]]:
    """The distinct (kernel, signature, constexprs, attributes, options) among the launches."""
    seen: dict[str, tuple[Any, dict[str, Any]]] = {}
    for fn, comp in caught:
        key = repr((fn.__name__, comp["signature"], sorted(comp["constants"].items()),
                    comp["configs"], comp["num_warps"], comp["num_stages"]))
        seen.setdefault(key, (fn, comp))
    return list(seen.values())


def _compile(fn: Any, comp: dict[str, Any], arch: int, tools: Path,
             out: Path) -> dict[str, Any]:
    """Compile one specialisation for sm_`arch`: registers, local memory, vector loads."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn, comp["signature"], comp["constants"], comp["configs"][0])
    options = {"num_warps": comp["num_warps"], "num_stages": comp["num_stages"]}
    kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    cubin = out / f"{fn.__name__}_{arch}_{abs(hash(repr(comp['constants'])))}_{id(comp)}.cubin"
    cubin.write_bytes(kernel.asm["cubin"])
    usage = subprocess.run([str(tools / "cuobjdump"), "--dump-resource-usage", str(cubin)],
                           capture_output=True, text=True, check=True).stdout
    res = {k: int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", usage)}
    ptx = kernel.asm["ptx"]
    constants = _constexprs(fn, comp)
    aligned = [fn.arg_names[k[0]] for k, v in comp["configs"][0].items()
               if ["tt.divisibility", 16] in v]
    return {
        "kernel": fn.__name__, "arch": arch, "num_warps": comp["num_warps"],
        "constexprs": {k: v for k, v in constants.items() if isinstance(v, (int, str, bool))},
        "signature": {k: v for k, v in comp["signature"].items() if v != "constexpr"},
        "aligned": aligned,  # arguments specialised as multiples of 16 (bytes for pointers)
        "registers": res.get("REG", -1), "spill_bytes": res.get("LOCAL", 0) + res.get("STACK", 0),
        "v4_loads": len(re.findall(r"ld\.global(?:\.\w+)*\.v4\.b32", ptx)),
        "v4_stores": len(re.findall(r"st\.global(?:\.\w+)*\.v4\.b32", ptx)),
        "scalar_loads": len(re.findall(r"ld\.global(?:\.\w+)*\.b(?:16|32) ", ptx)),
    }


def _constexprs(fn: Any, comp: dict[str, Any]) -> dict[str, Any]:
    return {fn.arg_names[k[0]]: v for k, v in comp["constants"].items()}


def _hunger(spec: tuple[Any, dict[str, Any]]) -> tuple[float, int]:
    """Register pressure, roughly: tile elements per warp, then the work done per element."""
    fn, comp = spec
    cx = _constexprs(fn, comp)
    tile = 1
    for k, v in cx.items():
        if k.startswith("BLOCK_"):
            tile *= v
    work = sum(bool(cx.get(k)) for k in ("MAX", "HAS_IDENTITY", "NEED_Y", "STORE_GY", "WIDE",
                                          "BN", "SQ"))
    return tile / comp["num_warps"], work + (cx.get("ACT", "none") != "none")


def _width(spec: tuple[Any, dict[str, Any]]) -> tuple[int, int, bool]:
    """An excitation kernel's R tile, then its row tile (bf16 preferred on ties)."""
    fn, comp = spec
    cx = _constexprs(fn, comp)
    return (cx["BLOCK_R"], cx.get("BLOCK_M", cx.get("BLOCK_N", 0)),
            "*bf16" in set(comp["signature"].values()))


def _representatives(specs: list[tuple[Any, dict[str, Any]]]) -> list[tuple[int, Any, Any]]:
    """The CI selection, as (arch, kernel, compile arguments). For sm_90 and sm_80: the most
    register-hungry specialisation of every kernel per element size (4 or 2 bytes, bf16
    preferred), layout (NCHW, flat or not; channels_last) and folded BN or not, and of every
    excitation kernel the
    tile with the widest R per element size (SE-ResNeXt's 2048-channel stage, whose (rows, R)
    tiles are the excitation's largest register arrays). For sm_90 also: each activation
    through `_act` (scale kernel) and `_act_grad` (reduce-backward kernel), strides that do not
    flatten, int64 offsets, and the flat NCHW elementwise kernels at 7x7 and 14x14 whose vector
    loads are checked."""
    def sig(comp: dict[str, Any]) -> set[str]:
        return set(comp["signature"].values())

    best: dict[Any, tuple[Any, dict[str, Any]]] = {}
    extra: dict[Any, tuple[Any, dict[str, Any]]] = {}
    for fn, comp in specs:
        cx = _constexprs(fn, comp)
        name = fn.__name__
        half = bool(sig(comp) & {"*fp16", "*bf16"})
        layout = cx.get("U_LAYOUT", 0)
        if layout in (0, 1) and not cx.get("WIDE"):
            k = (name, half, layout, bool(cx.get("BN")))  # the folded BN's variants apart
            rank = (_hunger((fn, comp)), "*bf16" in sig(comp))
            if k not in best or rank > (_hunger(best[k]), "*bf16" in sig(best[k][1])):
                best[k] = (fn, comp)
        if name.startswith("_excite"):
            k = (name, half, "widest R")
            if k not in best or _width((fn, comp)) > _width(best[k]):
                best[k] = (fn, comp)
        if name in ("_scale_kernel", "_bwd_reduce_kernel"):
            extra.setdefault((name, cx["ACT"]), (fn, comp))
        if cx.get("WIDE") or layout == 3:
            extra.setdefault((name, cx.get("WIDE"), layout), (fn, comp))
        numel = comp["configs"][0].get((fn.arg_names.index("NUMEL"),), []) if "NUMEL" in \
            fn.arg_names else []
        if cx.get("FLAT") and cx.get("FLAT_HW") in (49, 196) and ["tt.divisibility", 16] in numel:
            extra.setdefault((name, cx["FLAT_HW"]), (fn, comp))
    chosen = [(arch, fn, comp) for arch in ARCHS for fn, comp in best.values()]
    picked = {id(comp) for _, _, comp in chosen}
    return chosen + [(90, fn, comp) for fn, comp in extra.values() if id(comp) not in picked]


_JOBS: list[tuple[int, Any, Any]] = []


def _compile_job(i: int, tools: str, out: str) -> dict[str, Any]:
    arch, fn, comp = _JOBS[i]
    return _compile(fn, comp, arch, Path(tools), Path(out))


def child_main() -> None:
    """Capture, compile (the CI selection, or everything with SEDSL_AOT=all), print JSON."""
    import multiprocessing

    import triton

    start = time.perf_counter()
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    caught = _install_stub_driver(90)
    _launch_everything()
    specs = _specialisations(caught)
    if os.environ.get("SEDSL_AOT") == "all":
        _JOBS.extend((arch, fn, comp) for arch in ARCHS for fn, comp in specs)
    else:
        _JOBS.extend(_representatives(specs))
    captured = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, \
            multiprocessing.get_context("fork").Pool(min(2, os.cpu_count() or 1)) as pool:
        results = pool.starmap(_compile_job, [(i, str(tools), tmp) for i in range(len(_JOBS))],
                               chunksize=1)
    print(json.dumps({"launches": len(caught), "specialisations": len(specs),
                      "compiled": len(_JOBS), "capture_s": captured - start,
                      "compile_s": time.perf_counter() - captured, "results": results}))


# --- the test -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    reason = _cuda_backend_missing()
    if reason:
        pytest.skip(f"ahead-of-time compile needs Triton's CUDA backend: {reason}")
    with tempfile.TemporaryDirectory() as cache:
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env.update(TRITON_CACHE_DIR=cache, CUDA_VISIBLE_DEVICES="",
                   PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=900, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-8000:]
    data: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"{data['launches']} launches, {data['specialisations']} specialisations, "
          f"{data['compiled']} compiled, capture {data['capture_s']:.1f} s, "
          f"compile {data['compile_s']:.1f} s (wall), {cpu:.0f} CPU-s in all")
    return data


def test_every_kernel_compiles_for_sm80_and_sm90(report: dict[str, Any]) -> None:
    kernels = {r["kernel"] for r in report["results"]}
    assert kernels == set(SPILL_BUDGET), kernels
    for arch in ARCHS:
        assert {r["kernel"] for r in report["results"] if r["arch"] == arch} == kernels
    assert all(0 < r["registers"] <= 255 for r in report["results"])
    # every activation the kernels implement is compiled through _act (scale) and _act_grad
    # (reduce backward)
    from sedsl.ir.vocab import KERNEL_ACTIVATIONS

    for name in ("_scale_kernel", "_bwd_reduce_kernel"):
        seen = {r["constexprs"]["ACT"] for r in report["results"] if r["kernel"] == name}
        assert {"none", *KERNEL_ACTIVATIONS} <= seen, (name, KERNEL_ACTIVATIONS - seen)


def test_no_spills_over_budget(report: dict[str, Any]) -> None:
    over = [r for r in report["results"] if r["spill_bytes"] > SPILL_BUDGET[r["kernel"]]]
    assert not over, json.dumps(over[:5], indent=1)


def test_flat_nchw_scale_is_vectorised(report: dict[str, Any]) -> None:
    """Contiguous NCHW at 14x14 and 7x7 (23 of SE-ResNeXt-101's 33 SE blocks): the scale and
    input-gradient kernels load and store U-sized tensors as 16-byte vectors."""
    for name in ("_scale_kernel", "_bwd_input_kernel"):
        flat = [r for r in report["results"] if r["kernel"] == name and r["constexprs"]["FLAT"]
                and r["constexprs"]["FLAT_HW"] in (196, 49) and "NUMEL" in r["aligned"]]
        assert flat, name
        for r in flat:
            assert r["v4_loads"] >= 1 and r["v4_stores"] >= 1, r


def test_int64_offsets_where_needed(report: dict[str, Any]) -> None:
    """A sample over 2^31 elements compiles its kernels with WIDE (int64) offsets."""
    wide = {r["kernel"] for r in report["results"] if r["constexprs"].get("WIDE")}
    assert {"_squeeze_kernel", "_scale_kernel", "_bwd_reduce_kernel", "_bwd_input_kernel"} <= wide


if __name__ == "__main__":
    child_main()
