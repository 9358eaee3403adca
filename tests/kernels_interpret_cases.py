"""The Triton kernels through Triton's interpreter, on CPU tensors.

Needs TRITON_INTERPRET=1 before triton is imported, so it runs in a process of its own:
test_kernels_interpret.py starts `python -m pytest tests/kernels_interpret_cases.py` with it set.
Expected values come from test_kernels.torch_se (float64 torch.nn pieces).
"""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("needs TRITON_INTERPRET=1 (run by test_kernels_interpret.py)",
                allow_module_level=True)

from test_kernels import (
    BN_CASES,
    CASES,
    ECA_CASES,
    GCT_CASES,
    GE_CASES,
    MODULES,
    NAMES,
    SE_RESNET,
    Case,
    assert_close,
    check_block,
    check_bn_block,
    check_eca,
    check_gct,
    check_ge,
    make_bn_block,
    make_inputs,
)

from sedsl.pytorch.kernels import se_block, triton_se, use_triton

SHAPE = (2, 16, 7, 7)


def test_kernels_are_interpreted() -> None:
    from triton.runtime.interpreter import InterpretedFunction

    assert isinstance(triton_se._scale_kernel, InterpretedFunction)
    assert use_triton(torch.empty(1, 1, 1, 1))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_block_fp32(case: Case, channels_last: bool) -> None:
    check_block(make_inputs(SHAPE, 4, case, channels_last=channels_last), case)


def test_excitation_in_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The EXCITATION = "torch" alternative (for benchmarking) computes the same block."""
    monkeypatch.setattr(triton_se, "EXCITATION", "torch")
    for case in (SE_RESNET, CASES[2]):
        check_block(make_inputs(SHAPE, 4, case, channels_last=True), case)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3]], ids=str)
def test_block_half(case: Case, dtype: torch.dtype, channels_last: bool) -> None:
    check_block(make_inputs(SHAPE, 4, case, dtype, channels_last=channels_last), case)
    check_block(make_inputs(SHAPE, 4, case, dtype, channels_last=channels_last,
                            weight_dtype=torch.float32, seed=1), case)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", [(1, 3, 7, 7), (1, 1823, 3, 3), (3, 5, 1, 1), (1, 8, 56, 56),
                                   (2, 40, 14, 14)], ids=lambda s: "x".join(map(str, s)))
def test_awkward_shapes(shape: tuple[int, int, int, int], channels_last: bool) -> None:
    rd = max(1, shape[1] // 16)
    for case in (CASES[0], CASES[2]):
        inputs = make_inputs(shape, rd, case, channels_last=channels_last,
                             bias=case.squeeze == "avg")
        check_block(inputs, case)


def test_mixed_and_odd_strides() -> None:
    """Identity in another layout than U; U whose h and w do not flatten; a stride-0 dOut."""
    for case in (SE_RESNET, CASES[2]):
        t = make_inputs(SHAPE, 4, case, channels_last=True)
        t["identity"] = t["identity"].detach().contiguous().requires_grad_()
        check_block(t, case)
        n, c, h, w = SHAPE
        t = make_inputs(SHAPE, 4, case)
        wide = torch.zeros(n, c, h, w + 3)
        wide[..., :w] = t["u"].detach()
        t["u"] = wide[..., :w].requires_grad_()  # strides (c*h*(w+3), h*(w+3), w+3, 1)
        assert triton_se.layout(t["u"])[0] == 3
        check_block(t, case)
        check_block(make_inputs(SHAPE, 4, case), case, grad=torch.ones(1).expand(*SHAPE))


def test_opcheck() -> None:
    """Fake tensors and autograd registration agree with what the Triton path returns."""
    for case in (SE_RESNET, CASES[2]):
        t = make_inputs((2, 8, 4, 4), 2, case, channels_last=case.squeeze == "max")
        args = (*(t[k] for k in NAMES), case.squeeze, case.excite, case.gate, case.act)
        torch.library.opcheck(torch.ops.sedsl.se_block.default, args)


@pytest.mark.parametrize("squeeze", ["avg", "max"])
def test_squeeze_outputs(squeeze: str) -> None:
    case = Case(squeeze, "relu", "sigmoid", "none", False)
    u = make_inputs((2, 24, 9, 9), 4, case, channels_last=True)["u"]
    assert u is not None
    z, idx = triton_se.squeeze(u.detach(), squeeze)
    flat = u.detach().double().flatten(2)
    assert_close(z, flat.mean(2) if squeeze == "avg" else flat.amax(2), torch.float32)
    if squeeze == "max":
        # idx counts the positions equal to the maximum (torch.amax's gradient rule)
        assert torch.equal(idx.long(), (flat == flat.amax(2, keepdim=True)).sum(2))


# --- bytes moved ---------------------------------------------------------------------------------


@contextlib.contextmanager
def count_bytes() -> Iterator[collections.Counter[str]]:
    """Bytes each kernel loads and stores: every tl.load / tl.store counts the elements its mask
    lets through times their size, keyed by kernel name. Repeated loads of the same element
    (by other programs, or other loop steps) count again: no cache is assumed."""
    from triton.runtime import interpreter

    builder = interpreter.interpreter_builder
    counts: collections.Counter[str] = collections.Counter()
    running = ["?"]
    load, store, call = (builder.create_masked_load, builder.create_masked_store,
                         interpreter.GridExecutor.__call__)

    def nbytes(ptrs: Any, mask: Any) -> int:
        size: int = ptrs.get_element_ty().primitive_bitwidth // 8
        return int(mask.data.astype(bool).sum()) * size if mask.data.shape == ptrs.data.shape \
            else int(ptrs.data.size) * size  # a scalar mask covers the whole block

    def counted_load(ptrs: Any, mask: Any, *args: Any) -> Any:
        counts[running[0]] += nbytes(ptrs, mask)
        return load(ptrs, mask, *args)

    def counted_store(ptrs: Any, value: Any, mask: Any, *args: Any) -> Any:
        counts[running[0]] += nbytes(ptrs, mask)
        return store(ptrs, value, mask, *args)

    def counted_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        running[0] = self.fn.__name__
        return call(self, *args, **kwargs)

    builder.create_masked_load, builder.create_masked_store = counted_load, counted_store
    interpreter.GridExecutor.__call__ = counted_call
    try:
        yield counts
    finally:
        del builder.create_masked_load, builder.create_masked_store
        interpreter.GridExecutor.__call__ = call


def _bytes_case(channels_last: bool) -> tuple[dict[str, Any], int, int]:
    n, c, h, w, rd = 2, 64, 28, 28, 4
    t = make_inputs((n, c, h, w), rd, SE_RESNET, channels_last=channels_last)
    u_bytes = n * c * h * w * 4  # |U| in bytes (fp32)
    small = 16 * 4 * (n * c + c * rd)  # the O(N*C) budget: z, s, weights, each read a few times
    assert small < u_bytes // 8  # an extra pass over U could not hide in it
    return t, u_bytes, small


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_forward_bytes(channels_last: bool) -> None:
    """SE-ResNet block (identity, relu): the fused forward moves 4|U| + O(N*C) bytes."""
    t, u_bytes, small = _bytes_case(channels_last)
    args = [t[k] for k in NAMES]
    with torch.no_grad(), count_bytes() as counts:
        se_block(*args, act="relu")
    total = sum(counts.values())
    print(dict(counts), total / u_bytes)
    assert u_bytes <= counts["_squeeze_kernel"] <= u_bytes + small  # reads U once
    assert 3 * u_bytes <= counts["_scale_kernel"] <= 3 * u_bytes + small  # U, identity, out
    assert 4 * u_bytes <= total <= 4 * u_bytes + small


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_backward_bytes(channels_last: bool) -> None:
    """Backward of the SE-ResNet block moves 6|U| + O(N*C); of a plain SE block 4|U| + O(N*C)."""
    for case, bound in ((SE_RESNET, 6), (CASES[1], 4)):
        t, u_bytes, small = _bytes_case(channels_last)
        t = make_inputs(tuple(t["u"].shape), 4, case, channels_last=channels_last)
        args = [t[k] for k in NAMES]
        out = se_block(*args, act=case.act)
        grad = torch.randn_like(out)
        with count_bytes() as counts:
            torch.autograd.grad(out, [a for a in args if a is not None], grad)
        total = sum(counts.values())
        print(case, dict(counts), total / u_bytes)
        assert bound * u_bytes <= total <= bound * u_bytes + small


@pytest.mark.parametrize(("shape", "rd", "case", "channels_last"), [
    ((33, 40, 2, 2), 40, CASES[2], False),  # 3 fc1 and 2 fc2 row blocks; 5 + 3 wgrad programs
    ((1, 16, 64, 64), 4, SE_RESNET, True),  # split reductions: the partials are read
    ((2, 24, 64, 64), 4, CASES[4], False),  # max over splits: the partial ties are combined
    ((3, 5, 1, 1), 1, CASES[1], False),
], ids=["rows", "splits", "max-splits", "tiny"])
def test_excitation_bytes_match_the_plan(shape: tuple[int, int, int, int], rd: int, case: Case,
                                         channels_last: bool,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Every excitation launch moves exactly the bytes `triton_se.excite_bytes` (the plan that
    bench/se_kernel.py --plan prints) says, and its weights ceil(N / BLOCK_M) times: not once
    per sample or per program. The block is checked against torch_se on the same tiles (weight
    gradient tiles shrunk so that each kind of wgrad program comes several times)."""
    monkeypatch.setattr(triton_se, "_WGRAD_TILE", 1024)
    n, c, h, w = shape
    t = make_inputs(shape, rd, case, channels_last=channels_last, bias=case.squeeze == "avg")
    check_block(t, case)
    bc, bhw = triton_se.reduce_tile(c, h * w, channels_last, 4)
    splits = triton_se.splits(n, -(-c // bc), h * w, bhw)[0]  # as the squeeze and reduce do
    assert (splits > 1) == (h * w == 64 * 64)
    bc1, bc2 = triton_se.wgrad_tiles(n, c, rd)[1::2]
    assert (-(-c // bc1), -(-c // bc2)) == ((5, 3) if c == 40 else (1, 1))
    for backward in (False, True):
        out = _fused(case, t)
        with count_bytes() as counts:
            if backward:
                _grads(out, t, torch.ones_like(out))
            else:
                _fused(case, t)
        plan = triton_se.excite_bytes(n, c, rd, splits, 4, t["b1"] is not None,
                                      case.squeeze == "max", backward)
        assert {k: counts[k] for k in plan} == {k: a + b for k, (a, b) in plan.items()}
    weights = 2 * c * rd * 4
    fwd = triton_se.excite_bytes(n, c, rd, splits, 4, False, False, False)
    assert sum(b for _, b in fwd.values()) <= -(-n // 16) * weights  # W1 and W2, per 16 rows


@contextlib.contextmanager
def counted(*names: str, key: Any = None) -> Iterator[collections.Counter[Any]]:
    """Count the calls of these `triton_se` functions (by name, or by `key(name, args)`) while
    the block runs, then put them back."""
    calls: collections.Counter[Any] = collections.Counter()
    originals = {name: getattr(triton_se, name) for name in names}

    def counting(name: str) -> Any:
        def counted_call(*args: Any) -> Any:
            calls[name if key is None else key(name, args)] += 1
            return originals[name](*args)
        return counted_call

    for name in originals:
        setattr(triton_se, name, counting(name))
    try:
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(triton_se, name, fn)


TINY_TWO_BLOCKS = (
    'use "lib/resnet.se"\nnetwork tiny {{\n  input 3x12x12\n  stem = {{ conv(8, 3) bn relu }}\n'
    "  conv2 = bottleneck(4)\n  conv3 = bottleneck(8, stride = 2)\n  head = classifier(3)\n}}\n"
    "se {{\n{rules}}}\n")


def fused_against_plain(rules: str, names: tuple[str, ...], key: Any = None,
                        prepare: Any = None) -> tuple[collections.Counter[Any], Any, Any]:
    """A small ResNet with two attention blocks (`rules`), lowered plain and fused, the same
    state-dict keys and weights (`prepare(plain)` may set them first): one forward and backward
    with the kernels' calls counted. Outputs, the input's gradient and every parameter's equal
    the plain lowering's; returns the calls, the fused model and the gates the probe saw in each
    model (the gate layer's output, two each)."""
    from pathlib import Path

    import sedsl
    from sedsl.analysis.excite import gate_module, units

    root = Path(__file__).resolve().parents[1]
    net = sedsl.loads(TINY_TWO_BLOCKS.format(rules=rules), path=str(root / "specs" / "tiny.se"))
    plain, fused = net.to_torch(fused=False).eval(), net.to_torch(fused=True).eval()
    assert list(fused.state_dict()) == list(plain.state_dict())
    if prepare is not None:
        prepare(plain)
    fused.load_state_dict(plain.state_dict())
    seen: dict[str, list[torch.Tensor]] = {"plain": [], "fused": []}
    handles = [gate_module(model, u).register_forward_hook(
        lambda m, i, o, which=which: seen[which].append(o.detach().clone()))
        for which, model in (("plain", plain), ("fused", fused)) for u in units(net.ir)]
    try:
        with counted(*names, key=key) as calls:
            x = torch.randn(2, 3, 12, 12)
            xp, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
            out_f, out_p = fused(xf), plain(xp)
            grad = torch.randn_like(out_p)
            out_f.backward(grad)
            out_p.backward(grad)
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(out_f, out_p, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(xf.grad, xp.grad, rtol=1e-3, atol=1e-5)
    for (name, p), q in zip(plain.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)
    assert len(seen["fused"]) == len(seen["plain"]) == 2
    return calls, fused, zip(seen["fused"], seen["plain"], strict=True)


def test_whole_fused_network_runs_the_kernels() -> None:
    """A small SE-ResNet lowered with fusion: under the interpreter its SE blocks run the Triton
    kernels, and outputs and gradients equal the plain-torch lowering's."""
    from pathlib import Path

    import sedsl

    root = Path(__file__).resolve().parents[1]
    text = (
        'use "lib/resnet.se"\nnetwork tiny {\n  input 3x16x16\n  stem = { conv(8, 3) bn relu }\n'
        "  conv2 = bottleneck(4) * 2\n  head = classifier(3)\n}\n"
        "se {\n  ratio = 4\n  at residual.end\n}\n")
    net = sedsl.loads(text, path=str(root / "specs" / "tiny.se"))
    plain, fused = net.to_torch(fused=False).eval(), net.to_torch(fused=True).eval()
    fused.load_state_dict(plain.state_dict())
    with counted("forward", "bn_forward") as calls:
        x = torch.randn(2, 3, 16, 16)
        out_f, out_p = fused(x), plain(x)
    assert calls == {"bn_forward": 2}  # one per SE block, each with its bn3 folded in
    torch.testing.assert_close(out_f, out_p, rtol=1e-4, atol=1e-5)
    out_f.square().sum().backward()
    out_p.square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)
    # a training step: batch statistics, and the running ones updated alike
    plain.train(), fused.train()
    out_f, out_p = fused(x), plain(x)
    torch.testing.assert_close(out_f, out_p, rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(plain.state_dict().items(), fused.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


# --- edge cases a GPU would hit (each failed before the fix it tests) ----------------------------


def _plain(case: Case, t: dict[str, Any]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The block as the plain (unfused) module computes it (torch.amax / mean, nn layers), and
    the tensors to differentiate it by, in NAMES order."""
    from sedsl.pytorch.kernels import SqueezeExcite

    u, w1, b1, w2, b2, ident = (t[k] for k in NAMES)
    m = SqueezeExcite(u.shape[1], w1.shape[0], squeeze=case.squeeze, excite=case.excite,
                      gate=case.gate, act=case.act)
    with torch.no_grad():
        m.fc1.weight.copy_(w1.view_as(m.fc1.weight))
        m.fc1.bias.copy_(b1)
        m.fc2.weight.copy_(w2.view_as(m.fc2.weight))
        m.fc2.bias.copy_(b2)
    leaves = [u, m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias, ident]
    return m.plain(u, ident), [x for x in leaves if x is not None]


def _fused(case: Case, t: dict[str, Any]) -> torch.Tensor:
    return se_block(*(t[k] for k in NAMES), squeeze=case.squeeze, excite=case.excite,
                    gate=case.gate, act=case.act)


def _grads(out: torch.Tensor, t: dict[str, Any], grad: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(out, [t[k] for k in NAMES if t[k] is not None], grad))


def test_every_gate_has_its_derivative_from_its_output() -> None:
    """The backward reduce takes the gate's derivative from s (`_gate_grad`): every gate the
    kernels accept must be one whose derivative its output determines."""
    from sedsl.ir import vocab

    assert set(vocab.GATES) & vocab.KERNEL_ACTIVATIONS <= triton_se.GATES_FROM_OUTPUT


@pytest.mark.parametrize("splits", [False, True], ids=["one-split", "splits"])
@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3], CASES[4]], ids=str)  # 4 gates
def test_gradients_through_z_and_s(case: Case, splits: bool) -> None:
    """A loss on out, z and s: the gradients that enter the backward through z and s (the
    latter times the gate's derivative, taken from s) match float64 torch.nn pieces."""
    shape = (1, 16, 64, 64) if splits else SHAPE
    t = make_inputs(shape, 4, case)
    args = [t[k] for k in NAMES]
    out, z, s, _ = torch.ops.sedsl.se_block(*args, case.squeeze, case.excite, case.gate,
                                            case.act)
    gen = torch.Generator().manual_seed(2)
    g, gz, gs = (torch.randn(x.shape, generator=gen) for x in (out, z, s))
    leaves = {k: v.detach().double().requires_grad_() for k, v in t.items() if v is not None}
    u = leaves["u"]
    z64 = u.mean((2, 3)) if case.squeeze == "avg" else u.amax((2, 3))
    h = MODULES[case.excite]()(torch.nn.functional.linear(z64, leaves["w1"], leaves["b1"]))
    s64 = MODULES[case.gate]()(torch.nn.functional.linear(h, leaves["w2"], leaves["b2"]))
    y = u * s64[:, :, None, None] + (leaves["identity"] if case.identity else 0.0)
    out64 = MODULES[case.act]()(y)
    assert_close(z, z64, torch.float32, "z")
    assert_close(s, s64, torch.float32, "s")
    loss = (out * g).sum() + (z * gz).sum() + (s * gs).sum()
    want = (out64 * g.double()).sum() + (z64 * gz.double()).sum() + (s64 * gs.double()).sum()
    got = torch.autograd.grad(loss, [a for a in args if a is not None])
    exp = torch.autograd.grad(want, list(leaves.values()))
    for name, a, b in zip(leaves, got, exp, strict=True):
        assert_close(a, b, torch.float32, name)


def test_max_squeeze_propagates_nan() -> None:
    """A NaN in a plane makes z NaN (torch.amax), so the sample's outputs are NaN as the plain
    module's are; the other sample is unaffected."""
    case = CASES[2]  # max squeeze, identity
    for channels_last in (False, True):
        t = make_inputs((2, 8, 5, 5), 4, case, channels_last=channels_last)
        u = t["u"].detach().clone()
        u[0, 3, 2, 1] = float("nan")
        t["u"] = u.requires_grad_()
        got, (want, _) = _fused(case, t), _plain(case, t)
        assert got[0].isnan().any() and not got[1].isnan().any()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)
        z = torch.ops.sedsl.se_block(*(t[k] for k in NAMES), "max", case.excite, case.gate,
                                     case.act)[1]
        assert z[0, 3].isnan() and not z[1].isnan().any()


def test_max_squeeze_ties_follow_amax() -> None:
    """Tied maxima (a channel all zero after ReLU, repeated values): fused gradients equal the
    plain module's (torch.amax splits dz evenly between the ties)."""
    case = Case("max", "relu", "sigmoid", "relu", True)
    for channels_last in (False, True):
        t = make_inputs((2, 8, 5, 5), 4, case, channels_last=channels_last, seed=3)
        u = torch.relu(t["u"].detach() - 0.3)
        u[0, 2] = 0.0  # every position ties
        u[1, 5, 1:3, 2:4] = 7.0  # four ties above the rest
        t["u"] = u.contiguous(memory_format=torch.channels_last if channels_last
                              else torch.contiguous_format).requires_grad_()
        grad = torch.randn(u.shape, generator=torch.Generator().manual_seed(5))
        got, (want, leaves) = _fused(case, t), _plain(case, t)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        theirs = torch.autograd.grad(want, leaves, grad)
        for name, a, b in zip(NAMES, _grads(got, t, grad), theirs, strict=True):
            torch.testing.assert_close(a, b.view_as(a), rtol=1e-4, atol=1e-5, msg=name)


def test_tanh_is_accurate_near_zero() -> None:
    """tanh of tiny arguments keeps its relative accuracy (2 sigmoid(2x) - 1 cancels)."""
    u = torch.logspace(-7, 1, 64).view(1, 1, 8, 8) * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)
    s = torch.ones(1, 2)
    got = triton_se.scale(u.contiguous(), s, None, "tanh").double()
    want = torch.tanh(u.double())
    assert ((got - want).abs() / want.abs()).max() < 1e-6


def test_grids_fit_any_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Grid axes 1 and 2 take at most 65535 programs: batch 70000 must not land there."""
    from triton.runtime import interpreter

    grids: list[tuple[int, ...]] = []

    def record(self: Any, *args: Any, **kwargs: Any) -> None:
        grids.append(tuple(self.grid))  # skip running the 70000 programs

    monkeypatch.setattr(interpreter.GridExecutor, "__call__", record)
    for channels_last in (False, True):
        t = make_inputs((70000, 2, 1, 2), 1, SE_RESNET, channels_last=channels_last)
        out = _fused(SE_RESNET, t)
        _grads(out, t, torch.ones_like(out))
    assert grids and all(all(g <= 65535 for g in grid[1:]) for grid in grids), grids


def test_int64_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tensors spanning 2^31 elements switch every kernel to int64 offsets (WIDE); the WIDE
    kernels compute the same block (forced here on small tensors)."""
    assert triton_se.wide(torch.empty((1, 2048, 1024, 1025), device="meta"))
    assert not triton_se.wide(torch.empty((128, 2048, 7, 7), device="meta"))
    monkeypatch.setattr(triton_se, "_INT32_MAX", 100)
    for case in (SE_RESNET, CASES[2]):
        for channels_last in (False, True):
            check_block(make_inputs(SHAPE, 4, case, channels_last=channels_last), case)


def test_launch_counts() -> None:
    """Per block: 4 forward launches and 4 backward, whatever is unused (no zero grads)."""
    from triton.runtime import interpreter

    launches: list[str] = []
    call = interpreter.GridExecutor.__call__

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        launches.append(self.fn.__name__)
        return call(self, *args, **kwargs)

    interpreter.GridExecutor.__call__ = counted
    try:
        for case in (SE_RESNET, CASES[2], CASES[1]):
            t = make_inputs(SHAPE, 4, case)
            launches.clear()
            out = _fused(case, t)
            assert launches == ["_squeeze_kernel", "_excite_fc1_kernel", "_excite_fc2_kernel",
                                "_scale_kernel"], launches
            launches.clear()
            _grads(out, t, torch.ones_like(out))
            assert launches == ["_bwd_reduce_kernel", "_excite_bwd_kernel",
                                "_excite_wgrad_kernel", "_bwd_input_kernel"], launches
    finally:
        interpreter.GridExecutor.__call__ = call


def test_split_reductions_are_deterministic_and_right() -> None:
    """Batch 1 channels_last at 64x64 splits H*W; results match torch_se and repeat bit for bit."""
    for case in (SE_RESNET, CASES[2]):
        t = make_inputs((1, 16, 64, 64), 4, case, channels_last=True)
        _, bhw = triton_se.reduce_tile(16, 64 * 64, True, 4)
        assert triton_se.splits(1, 1, 64 * 64, bhw)[0] > 1
        check_block(t, case)
        a = _fused(case, t)
        assert torch.equal(a, _fused(case, t))


def test_autocast_keeps_s_in_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under autocast the excitation in torch (EXCITATION = "torch") still returns fp32 s, as the
    fake implementation promises."""
    monkeypatch.setattr(triton_se, "EXCITATION", "torch")
    t = make_inputs(SHAPE, 4, SE_RESNET)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, z, s, _ = torch.ops.sedsl.se_block(*(t[k] for k in NAMES), "avg", "relu", "sigmoid",
                                              "relu")
    assert z.dtype == s.dtype == torch.float32


@pytest.mark.parametrize("case", [SE_RESNET, CASES[2]], ids=str)
def test_eager_path_is_the_op(case: Case) -> None:
    """Eager calls skip the dispatcher (op._Fused: the op's forward, setup and backward called
    directly, for host time); results and gradients are those of torch.ops.sedsl.se_block bit
    for bit."""
    t = make_inputs(SHAPE, 4, case, channels_last=True)
    grad = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    eager = _fused(case, t)
    assert type(eager.grad_fn).__name__ == "_FusedBackward"
    args = [t[k] for k in NAMES]
    via_op = torch.ops.sedsl.se_block(*args, case.squeeze, case.excite, case.gate, case.act)[0]
    assert type(via_op.grad_fn).__name__ != "_FusedBackward"
    assert torch.equal(eager, via_op)
    for a, b in zip(_grads(eager, t, grad), _grads(via_op, t, grad), strict=True):
        assert torch.equal(a, b)


def test_counters_and_tracers_see_the_op() -> None:
    """The eager path skips the dispatcher only where nothing watches: FlopCounterMode counts
    the op and its backward by their formulas (4NCR + 8NCR: the plain lowering's two 1x1
    convolutions and their input and weight gradients), TorchScript records the op."""
    from torch.utils.flop_counter import FlopCounterMode

    t = make_inputs(SHAPE, 4, SE_RESNET)
    n, c = SHAPE[:2]
    with FlopCounterMode(display=False) as counter:
        out = _fused(SE_RESNET, t)
        _grads(out, t, torch.ones_like(out))
    assert counter.get_total_flops() == 12 * n * c * 4
    args = [t[k].detach() if t[k] is not None else None for k in NAMES]
    traced = torch.jit.trace(lambda u: se_block(u, *args[1:], act="relu"), args[0])
    assert "sedsl::se_block" in str(traced.graph)


@pytest.mark.parametrize("identity", [True, False], ids=["id", "no-id"])
def test_relu_mask_comes_from_the_output(identity: bool) -> None:
    """ReLU's derivative is taken from the op's output, as torch's relu backward takes it from
    its result (threshold_backward): where y is positive in fp32 but rounds to 0 in fp16, the
    derivative is 0 (with y recomputed in fp32 it was 1), so dIdentity is dOut * (out > 0) and
    dU there is the squeeze's share alone. The inputs put y there: W2 = 0 makes s =
    sigmoid(-0.3) ~ 0.43 whatever U is; with an identity, U of ~2^-15 and identity =
    -fp16(s * U) leave |y| <= 2^-25; without, U = 2^-24 leaves y = s * 2^-24 < 2^-25."""
    n, c, h, w = 1, 8, 4, 4
    case = Case("avg", "relu", "sigmoid", "relu", identity)
    t = make_inputs((n, c, h, w), 2, case, torch.float16)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        t["w2"].zero_()
        t["b2"].fill_(-0.3)
        t["u"].copy_(torch.randn((n, c, h, w), generator=gen) * 2.0**-15 if identity else
                     torch.randint(-3, 4, (n, c, h, w), generator=gen) * 2.0**-24)
        s = torch.ops.sedsl.se_block(*(t[k] for k in NAMES), "avg", "relu", "sigmoid",
                                     "relu")[2][:, :, None, None]  # fp32 (N, C, 1, 1)
        su = s * t["u"].float()  # what the kernels compute, in fp32
        if identity:
            t["identity"].copy_(-su)  # rounded to fp16
        y = su + (t["identity"].float() if identity else 0.0)
    near = (y > 0) & (y.half() == 0)  # relu'(y) = 1 in fp32, 0 from the fp16 output
    assert near.sum() >= 2
    out = _fused(case, t)
    assert torch.equal(out[near], torch.zeros_like(out[near]))
    grad = torch.randn((n, c, h, w), generator=gen).half()
    grads = dict(zip([k for k in NAMES if t[k] is not None], _grads(out, t, grad), strict=True))
    mask = out > 0
    if identity:
        assert torch.equal(grads["identity"], grad * mask)
    du = grads["u"].float()  # g * s + dz / HW, g = 0 off the mask: the same within a channel
    hi = torch.where(mask, float("-inf"), du).amax((2, 3))
    lo = torch.where(mask, float("inf"), du).amin((2, 3))
    assert torch.equal(hi, lo)



# --- the SE block with its BatchNorm folded in ----------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", BN_CASES, ids=str)
def test_bn_folded_fp32(case: Case, channels_last: bool, training: bool) -> None:
    """SqueezeExcite(x, identity, bn) on the Triton kernels against nn.BatchNorm2d and the SE
    block in float64: output, every gradient, the running statistics; 7x7 (strided tiles) and
    8x8 (flat NCHW)."""
    for shape in ((2, 16, 7, 7), (3, 8, 8, 8)):
        check_bn_block(shape, case, torch.float32, channels_last, training)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_bn_folded_half(dtype: torch.dtype, channels_last: bool) -> None:
    """fp16 / bf16 activations with fp32 parameters (mixed precision), and all in bf16."""
    check_bn_block((2, 16, 7, 7), SE_RESNET, dtype, channels_last, True)
    check_bn_block((2, 16, 8, 8), BN_CASES[1], dtype, channels_last, True)
    if dtype == torch.bfloat16:
        check_bn_block((2, 16, 7, 7), SE_RESNET, dtype, channels_last, True,
                       param_dtype=torch.bfloat16)


def test_bn_folded_split_reductions() -> None:
    """Batch 1 at 64x64 splits H*W in the squeeze and the reduce: the per-plane sums combine."""
    bc, bhw = triton_se.reduce_tile(16, 64 * 64, True, 4)
    assert triton_se.splits(1, -(-16 // bc), 64 * 64, bhw)[0] > 1
    for case in (SE_RESNET, BN_CASES[1]):
        check_bn_block((1, 16, 64, 64), case, torch.float32, True, True)


def test_bn_folded_launches_and_the_op_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Five launches forward and five backward; the eager path (in place) equals the op's
    dispatch path (the updated statistics copied into the buffers) bit for bit."""
    import copy

    from triton.runtime import interpreter

    from sedsl.pytorch.kernels import bn_op

    eager = bn_op.direct_ok
    results = []
    for via_op in (False, True):
        x, identity, bn, se = make_bn_block((2, 16, 7, 7), SE_RESNET, channels_last=True)
        bn, se = copy.deepcopy(bn), copy.deepcopy(se)
        x.requires_grad_()
        launches: list[str] = []
        call = interpreter.GridExecutor.__call__

        def counted(self: Any, *args: Any, call_op: Any = call, _seen: list[str] = launches,
                    **kwargs: Any) -> Any:
            _seen.append(self.fn.__name__)
            return call_op(self, *args, **kwargs)

        interpreter.GridExecutor.__call__ = counted
        monkeypatch.setattr(bn_op, "direct_ok", (lambda *a: False) if via_op else eager)
        try:
            out = se(x, identity, bn)
            assert (type(out.grad_fn).__name__ == "_FoldedBackward") != via_op
            forward = list(launches)
            grads = torch.autograd.grad(out, [x, *bn.parameters(), *se.parameters()],
                                        torch.ones_like(out))
        finally:
            interpreter.GridExecutor.__call__ = call
        assert forward == ["_squeeze_kernel", "_bn_stats_kernel", "_excite_fc1_kernel",
                           "_excite_fc2_kernel", "_scale_kernel"], forward
        assert launches[5:] == ["_bwd_reduce_kernel", "_excite_bwd_kernel",
                                "_excite_wgrad_kernel", "_bn_bwd_kernel", "_bwd_input_kernel"]
        results.append((out, grads, [t.clone() for t in bn.buffers()]))
    (out_a, grads_a, bufs_a), (out_b, grads_b, bufs_b) = results
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(bufs_a, bufs_b, strict=True))



# --- ECA: the channel convolution transform -------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize(("k", "padding", "act", "identity"), ECA_CASES, ids=lambda v: str(v))
def test_eca_fp32(k: int, padding: str, act: str, identity: bool, channels_last: bool) -> None:
    """The fused ECA block on the Triton kernels against timm's computation in float64: 7x7
    (strided tiles), 8x8 (flat NCHW), C = 5 < K (circular padding wraps more than once)."""
    for shape in ((2, 16, 7, 7), (3, 12, 8, 8), (2, 5, 4, 4)):
        check_eca(shape, k, padding, act, identity, channels_last=channels_last)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_eca_half(dtype: torch.dtype) -> None:
    for channels_last in (False, True):
        check_eca((2, 16, 7, 7), 5, "circular", "relu", True, dtype, channels_last)
        check_eca((2, 16, 8, 8), 3, "zero", "none", False, dtype, channels_last)


def test_eca_splits_launches_and_determinism() -> None:
    """Batch 1 at 64x64 splits the squeeze: the partials combine; three launches forward and
    three backward (squeeze, channel conv, scale; reduce, channel conv backward, input); the
    weight gradient, summed over programs in order, repeats bit for bit."""
    from triton.runtime import interpreter

    from sedsl.pytorch.kernels import eca_block

    check_eca((1, 16, 64, 64), 5, "circular", "relu", True, channels_last=True)
    check_eca((1, 16, 64, 64), 3, "zero", "none", False)
    launches: list[str] = []
    call = interpreter.GridExecutor.__call__

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        launches.append(self.fn.__name__)
        return call(self, *args, **kwargs)

    u = torch.randn(1, 16, 64, 64).requires_grad_()
    w = torch.randn(3).requires_grad_()
    interpreter.GridExecutor.__call__ = counted
    try:
        out = eca_block(u, w)
        assert launches == ["_squeeze_kernel", "_channel_conv_kernel", "_scale_kernel"]
        launches.clear()
        grads = [torch.autograd.grad(eca_block(u, w), [u, w], torch.ones_like(out))
                 for _ in range(2)]
    finally:
        interpreter.GridExecutor.__call__ = call
    assert launches[3:6] == ["_bwd_reduce_kernel", "_channel_conv_bwd_kernel",
                             "_bwd_input_kernel"]
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_whole_fused_eca_network_runs_the_kernels() -> None:
    """A small ResNet with an eca and a ceca block, lowered with fusion: each block, with its
    residual add and relu, runs sedsl::eca_block on the Triton kernels (bn3 stays a module: the
    op has no BN fold), and outputs, the input's gradient and every parameter's equal the plain
    lowering's; the probe sees the gate the plain lowering's gate layer outputs."""
    calls, fused, gates = fused_against_plain(
        "  variant = eca\n  at residual.end in conv2\n"
        "  at residual.end in conv3 { variant = ceca, kernel = 5 }\n",
        ("eca_forward", "eca_backward"),
        key=lambda name, args: (name, args[3 if name == "eca_forward" else 9]))  # circular
    assert calls == {("eca_forward", False): 1, ("eca_forward", True): 1,
                     ("eca_backward", False): 1, ("eca_backward", True): 1}
    assert isinstance(fused.conv2.bn3, torch.nn.BatchNorm2d)
    for s_f, s_p in gates:
        torch.testing.assert_close(s_f, s_p, rtol=1e-5, atol=1e-6)


# --- Gather-Excite's parameter-free form: no transform -------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize(("gate", "act", "identity"), GE_CASES, ids=lambda v: str(v))
def test_ge_fp32(gate: str, act: str, identity: bool, channels_last: bool) -> None:
    """The fused Gather-Excite block on the Triton kernels against timm's computation in
    float64: 7x7 (strided tiles), 8x8 (flat NCHW)."""
    for shape in ((2, 16, 7, 7), (3, 12, 8, 8)):
        check_ge(shape, gate, act, identity, channels_last=channels_last)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_ge_half(dtype: torch.dtype) -> None:
    for channels_last in (False, True):
        check_ge((2, 16, 7, 7), "sigmoid", "relu", True, dtype, channels_last)
        check_ge((2, 16, 8, 8), "hardsigmoid", "none", False, dtype, channels_last)


def test_ge_splits_and_launches() -> None:
    """Batch 1 at 64x64 splits the squeeze: the partials combine; three launches forward
    (squeeze, the gate of the mean, scale), two backward (reduce, input)."""
    from triton.runtime import interpreter

    from sedsl.pytorch.kernels import ge_block

    check_ge((1, 16, 64, 64), "sigmoid", "relu", True, channels_last=True)
    check_ge((1, 16, 64, 64), "sigmoid", "none", False)
    launches: list[str] = []
    call = interpreter.GridExecutor.__call__

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        launches.append(self.fn.__name__)
        return call(self, *args, **kwargs)

    u = torch.randn(2, 16, 8, 8).requires_grad_()
    interpreter.GridExecutor.__call__ = counted
    try:
        out = ge_block(u)
        assert launches == ["_squeeze_kernel", "_channel_conv_kernel", "_scale_kernel"]
        launches.clear()
        torch.autograd.grad(out, [u], torch.ones_like(out))
    finally:
        interpreter.GridExecutor.__call__ = call
    assert launches == ["_bwd_reduce_kernel", "_bwd_input_kernel"]


def test_whole_fused_ge_network_runs_the_kernels() -> None:
    """A small ResNet with two Gather-Excite (mean, no MLP) blocks, lowered with fusion: each
    block, with its residual add and relu, runs sedsl::ge_block on the Triton kernels, and
    outputs, the input's gradient and every parameter's equal the plain lowering's; the probe
    sees the gate the plain lowering's gate layer outputs."""
    calls, _, gates = fused_against_plain("  variant = ge\n  at residual.end\n",
                                          ("ge_forward", "ge_backward"))
    assert calls == {"ge_forward": 2, "ge_backward": 2}
    for s_f, s_p in gates:
        torch.testing.assert_close(s_f, s_p.expand_as(s_f), rtol=1e-5, atol=1e-6)


# --- GCT: the L2 embedding normalised across channels ---------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize(("gate", "act", "identity"), GCT_CASES, ids=lambda v: str(v))
def test_gct_fp32(gate: str, act: str, identity: bool, channels_last: bool) -> None:
    """The fused GCT block on the Triton kernels against the official code's computation in
    float64 (outputs, the gradients of U, alpha, gamma, beta and the identity): 7x7 (strided
    tiles), 8x8 (flat NCHW)."""
    for shape in ((2, 16, 7, 7), (3, 12, 8, 8)):
        check_gct(shape, gate, act, identity, channels_last=channels_last)


def test_gct_channel_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Channels over several loop steps of the per-sample kernels (the last one partial): the
    mean square over channels and its gradient span them all."""
    monkeypatch.setattr(triton_se, "_gct_tile", lambda c: 8)
    check_gct((3, 20, 5, 5), "tanh", "relu", True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_gct_half(dtype: torch.dtype) -> None:
    for channels_last in (False, True):
        check_gct((2, 16, 7, 7), "tanh", "relu", True, dtype, channels_last)
        check_gct((2, 16, 8, 8), "tanh", "none", False, dtype, channels_last)


def test_gct_splits_and_launches() -> None:
    """Batch 1 at 64x64 splits the squeeze: the partial sums of squares combine; three
    launches forward (squeeze, GCT, scale) and three backward (reduce, GCT backward, input)."""
    from triton.runtime import interpreter

    from sedsl.pytorch.kernels import gct_block

    check_gct((1, 16, 64, 64), "tanh", "relu", True, channels_last=True)
    check_gct((1, 16, 64, 64), "tanh", "none", False)
    launches: list[str] = []
    call = interpreter.GridExecutor.__call__

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        launches.append(self.fn.__name__)
        return call(self, *args, **kwargs)

    u = torch.randn(2, 16, 8, 8).requires_grad_()
    params = [torch.randn(16).requires_grad_() for _ in range(3)]
    interpreter.GridExecutor.__call__ = counted
    try:
        out = gct_block(u, *params)
        assert launches == ["_squeeze_kernel", "_gct_kernel", "_scale_kernel"]
        launches.clear()
        torch.autograd.grad(out, [u, *params], torch.ones_like(out))
    finally:
        interpreter.GridExecutor.__call__ = call
    assert launches == ["_bwd_reduce_kernel", "_gct_bwd_kernel", "_bwd_input_kernel"]


def test_whole_fused_gct_network_runs_the_kernels() -> None:
    """A small ResNet with two GCT blocks (parameters randomised), lowered with fusion: each
    block, with its residual add and relu, runs sedsl::gct_block on the Triton kernels, and
    outputs, the input's gradient and every parameter's (alpha, gamma, beta included) equal the
    plain lowering's; the probe sees what the plain lowering's gate layer outputs."""
    def randomise_gct(plain: torch.nn.Module) -> None:
        with torch.no_grad():
            for name, p in plain.named_parameters():
                if ".se.norm." in name:
                    p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("alpha") else 0.0))

    calls, _, gates = fused_against_plain("  variant = gct\n  at residual.end\n",
                                          ("gct_forward", "gct_backward"),
                                          prepare=randomise_gct)
    assert calls == {"gct_forward": 2, "gct_backward": 2}
    for s_f, s_p in gates:
        torch.testing.assert_close(s_f, s_p, rtol=1e-5, atol=1e-6)


# --- the generic transform: statistic and apply kernels, the plain modules between them ----------

BLOCK_SPEC = """network t {
  input 8x3x3
  b = { conv(8, 1) }
}
se {
  variant = VARIANT
  SETTINGS
  at block.end
}
"""


def _generic_reference(variant: str) -> tuple[torch.nn.Module, str, dict[str, str]]:
    """(the reference module on 8 channels, sedsl's settings for it, its state-dict keys as
    sedsl's step keys): timm's EffectiveSEModule, SEModule with a BN, EcaModule(use_mlp=True),
    and the SRM release (tests/attention_references.py)."""
    from timm import layers

    from tests.attention_references import SRM

    if variant == "ese":
        return layers.EffectiveSEModule(8), "", {}
    if variant == "se_bn":
        return (layers.SEModule(8, rd_channels=2, norm_layer=torch.nn.BatchNorm2d),
                "ratio = 4", {})
    if variant == "ecam":
        return layers.EcaModule(8, use_mlp=True), "", {"conv.": "conv1."}
    return SRM(8), "", {"cfc": "cfc.cfc"}


def _renamed(key: str, names: dict[str, str]) -> str:
    for theirs, ours in names.items():
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return key


def _generic_block(variant: str) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, str]]:
    """(sedsl's fused block, the reference, the reference's keys as sedsl's): the reference's
    parameters and BN statistics randomised, then copied into sedsl's block."""
    from pathlib import Path

    import sedsl
    from sedsl.pytorch.kernels import ChannelAttention
    from tests.references import randomise

    reference, settings, names = _generic_reference(variant)
    text = BLOCK_SPEC.replace("VARIANT", variant).replace("SETTINGS", settings)
    net = sedsl.loads(text, path=str(Path(__file__).resolve().parents[1] / "specs" / "t.se"))
    block = net.to_torch().b.se
    assert isinstance(block, ChannelAttention)
    randomise(reference)
    ours = {_renamed(k, names): v for k, v in reference.state_dict().items()}
    assert sorted(ours) == sorted(block.state_dict())  # the reference's tensors, every one
    block.load_state_dict(ours)
    return block, reference, names


GENERIC_CASES = [(v, dtype, cl) for v in ("ese", "se_bn", "srm", "ecam")
                 for dtype, cl in ((torch.float32, False), (torch.float32, True),
                                   (torch.bfloat16, True), (torch.float16, False))]


def _close(got: torch.Tensor, want: torch.Tensor, tol: float, what: str,
           scale: float = 0.0) -> None:
    """Within tol of the larger of `want`'s largest value and `scale`."""
    err = (got.double() - want).abs().max().item()
    assert err <= tol * max(want.abs().max().item(), scale, 1e-3), (what, err, want.abs().max())


@pytest.mark.parametrize(("variant", "dtype", "channels_last"), GENERIC_CASES,
                         ids=lambda v: str(v))
def test_generic_transform_equals_its_reference(variant: str, dtype: torch.dtype,
                                                channels_last: bool) -> None:
    """ese, se_bn, srm, ecam on the statistic and apply kernels against their references
    (timm's modules, the SRM release) in float64: the output, the gradients of the input and
    every parameter, the BN running statistics; 2x8x3x3, fp32/bf16/fp16, NCHW and
    channels_last. fp32 in training mode (the BN's batch statistics), fp16/bf16 in eval: a BN
    over a batch of 2 in half precision is off by 5-15% in the plain lowering too (its
    transform computes in U's dtype, as the fused one does)."""
    import copy

    block, reference, names = _generic_block(variant)
    training = dtype == torch.float32
    reference = copy.deepcopy(reference).double().train(training)
    block = block.to(dtype).train(training)
    plain = copy.deepcopy(block)  # to run as the plain lowering computes, in the same dtype
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 3, 3, generator=gen) * 2 + 0.5
    grad = torch.randn(2, 8, 3, 3, generator=gen)
    xr = x.double().requires_grad_()
    xo = x.to(dtype).to(memory_format=torch.channels_last if channels_last
                        else torch.contiguous_format).requires_grad_()
    with counted("stats_forward", "apply_forward", "apply_backward", "stats_backward") as calls:
        out = block(xo)
        out.backward(grad.to(dtype))
    want = reference(xr)
    want.backward(grad.double())
    srm = variant == "srm"
    assert calls == {"stats_forward": 1, "apply_forward": 1, "apply_backward": 1,
                     **({"stats_backward": 1} if srm else {})}
    assert out.dtype == dtype and out.is_contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    _close(out, want, tol, "out")
    _close(xo.grad, xr.grad, tol, "dx")
    theirs = {_renamed(k, names): v for k, v in reference.named_parameters()}
    # a bias before a BN in training has gradient 0, as a difference of O(largest) terms
    largest = max(p.grad.abs().max().item() for p in theirs.values() if p.grad is not None)
    for name, p in block.named_parameters():
        _close(p.grad, theirs[name].grad, tol, name, largest)
    buffers = dict(reference.named_buffers())
    for name, b in block.named_buffers():
        _close(b, buffers[name], tol, name)
    xp = xo.detach().clone().requires_grad_()
    out_p = plain.plain(xp)
    out_p.backward(grad.to(dtype))
    tol = 1e-4 if dtype == torch.float32 else 2e-2  # the plain lowering rounds U * s; se_bn's
    # BN over 2 samples in training amplifies the order of the mean's sums
    _close(out, out_p.double(), tol, "out against plain")
    _close(xo.grad, xp.grad.double(), tol, "dx against plain")
    for (name, p), q in zip(block.named_parameters(), plain.parameters(), strict=True):
        _close(p.grad, q.grad.double(), tol, f"{name} against plain", largest)
    for (name, b), c in zip(block.named_buffers(), plain.buffers(), strict=True):
        _close(b, c.double(), tol, f"{name} against plain")


def test_generic_transform_in_a_whole_network() -> None:
    """A small ResNet with each generic variant after both bottlenecks, fused, in training (and
    Gather-Excite's mean with an MLP, and SE with a GELU excite, which the step kinds send to the
    generic transform): every block runs the statistic and apply kernels, and the output, the
    gradients of the input and every parameter, and the BN running statistics equal the plain
    lowering's."""
    from pathlib import Path

    import sedsl

    root = Path(__file__).resolve().parents[1]
    for variant in ("ese", "se_bn", "srm", "ecam", "ge\n  mlp = true", "se\n  excite = gelu"):
        text = (
            'use "lib/resnet.se"\nnetwork tiny {\n  input 3x12x12\n'
            "  stem = { conv(8, 3) bn relu }\n  conv2 = bottleneck(4)\n"
            "  conv3 = bottleneck(8, stride = 2)\n  head = classifier(3)\n}\n"
            f"se {{\n  variant = {variant}\n  at residual.end\n}}\n")
        net = sedsl.loads(text, path=str(root / "specs" / "tiny.se"))
        plain, fused = net.to_torch(fused=False).train(), net.to_torch(fused=True).train()
        assert list(fused.state_dict()) == list(plain.state_dict())
        fused.load_state_dict(plain.state_dict())
        calls: collections.Counter[str] = collections.Counter()
        original = triton_se.apply_forward

        def counted(*args: Any, calls: Any = calls, original: Any = original) -> Any:
            calls["apply_forward"] += 1
            return original(*args)

        triton_se.apply_forward = counted
        try:
            x = torch.randn(2, 3, 12, 12)
            xp, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
            out_f, out_p = fused(xf), plain(xp)
            grad = torch.randn_like(out_p)
            out_f.backward(grad)
            out_p.backward(grad)
        finally:
            triton_se.apply_forward = original
        assert calls == {"apply_forward": 2}, variant
        torch.testing.assert_close(out_f, out_p, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(xf.grad, xp.grad, rtol=1e-3, atol=1e-5)
        for (name, p), q in zip(plain.named_parameters(), fused.parameters(), strict=True):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)
        for (name, b), c in zip(plain.state_dict().items(), fused.state_dict().values(),
                                strict=True):  # BN running statistics and counts
            torch.testing.assert_close(c, b, msg=name)


def test_generic_statistic_splits_and_launches() -> None:
    """SRM's statistic at batch 1, 64x64 (the squeeze splits H*W), mean 3 and spread 2 (the
    shifted sums): the mean and the unbiased std and their gradient equal torch's in float64.
    Launches: the statistic one (the squeeze), the apply one (scale); backward, the apply two
    (reduce, input), the std one (input), the mean none."""
    from triton.runtime import interpreter

    from sedsl.pytorch.kernels import channel_apply, channel_stats

    for channels_last in (False, True):
        x = torch.randn(1, 16, 64, 64) * 2 + 3
        x = x.to(memory_format=torch.channels_last) if channels_last else x
        u, ref = x.clone().requires_grad_(), x.double().requires_grad_()
        got = channel_stats(u, "avgstd")
        want = torch.cat([ref.mean((2, 3), keepdim=True), ref.std((2, 3), keepdim=True)], 3)
        _close(got, want, 1e-5, "stats")
        grad = torch.randn(1, 16, 1, 2)
        got.backward(grad)
        want.backward(grad.double())
        _close(u.grad, ref.grad, 1e-4, "dU")
    launches: list[str] = []
    call = interpreter.GridExecutor.__call__

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        launches.append(self.fn.__name__)
        return call(self, *args, **kwargs)

    u = torch.randn(2, 16, 8, 8).requires_grad_()
    interpreter.GridExecutor.__call__ = counted
    try:
        z = channel_stats(u, "avg")
        assert launches == ["_squeeze_kernel"]
        out = channel_apply(u, torch.sigmoid(z), None, "relu")
        assert launches == ["_squeeze_kernel", "_scale_kernel"]
        launches.clear()
        torch.autograd.grad(out, [u], torch.ones_like(out))
        assert launches == ["_bwd_reduce_kernel", "_bwd_input_kernel"]
        launches.clear()
        torch.autograd.grad(channel_stats(u, "avgstd").sum(), [u])
    finally:
        interpreter.GridExecutor.__call__ = call
    assert launches == ["_squeeze_kernel", "_bwd_input_kernel"]


def test_generic_transform_propagates_nan() -> None:
    """A NaN in one plane of U: the statistic kernel's mean is NaN there, as torch's, so the
    fused block's NaNs are the plain lowering's (that sample's gate, through the FC, in every
    channel of se's MLP; here ese's C -> C FC)."""
    block, _, _ = _generic_block("ese")
    u = torch.randn(2, 8, 3, 3)
    u[1, 3, 2, 1] = float("nan")
    with torch.no_grad():
        out, want = block(u), block.plain(u)
    assert torch.equal(out.isnan(), want.isnan()) and bool(out.isnan().any())
    torch.testing.assert_close(out, want, equal_nan=True)
