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

from test_kernels import CASES, NAMES, SE_RESNET, Case, assert_close, check_block, make_inputs

from sedsl.kernels import se_block, triton_se, use_triton

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
        assert torch.equal(idx.long(), flat.argmax(2))


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
    calls = collections.Counter()
    original = triton_se.forward

    def counting(*args: Any) -> Any:
        calls["forward"] += 1
        return original(*args)

    triton_se.forward = counting
    try:
        x = torch.randn(2, 3, 16, 16)
        out_f, out_p = fused(x), plain(x)
    finally:
        triton_se.forward = original
    assert calls["forward"] == 2  # one per SE block
    torch.testing.assert_close(out_f, out_p, rtol=1e-4, atol=1e-5)
    out_f.square().sum().backward()
    out_p.square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)
