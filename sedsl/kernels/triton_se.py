"""Triton kernels of the fused SE block, and their launchers.

Forward, four launches:
  1. `_squeeze_kernel`    reads U once -> z (N, C) fp32 (and the int32 argmax for "max");
  2. `_linear_act_kernel` h = excite(z W1^T + b1)  (N, R) fp32;
  3. `_linear_act_kernel` s = gate(h W2^T + b2)    (N, C) fp32;
  4. `_scale_kernel`      reads U (and identity), writes out = act(s * U + identity).
U-sized traffic: |U| + 3|U| with an identity (2|U| without), the two-pass floor of the design.

The excitation runs as a small Triton kernel between the passes rather than as torch matmuls:
one launch per FC with bias and activation fused (torch needs addmm + activation + dtype casts,
about six launches for the pair), fp32 math whatever the weights' dtype without materialising
fp32 copies of them, and the same code runs under TRITON_INTERPRET, so CI checks it. Its work,
O(N*C*R), is small next to the O(N*C*H*W) passes. It was not measured (written without a GPU):
`EXCITATION = "torch"` swaps in torch matmuls (reference.excitation) and
`bench/se_kernel.py --excitation torch` times that alternative. Fusing the excitation into
pass 2 was rejected: every (c, hw) tile would redo fc1's C x R product.

Backward (`backward`), three launches plus small torch ops:
  1. `_bwd_reduce_kernel` reads dOut, U (and identity when act != "none") and sums
     ds = sum_hw(dY * U) (N, C), dY = dOut * act'(y), y = s * U + identity recomputed;
     with an identity it also writes dIdentity = dY;
  2. torch: the excitation's backward on (N, C) / (N, R) tensors (reference.excite_backward);
  3. `_bwd_input_kernel` writes dU = dY * s + (dz / HW, or dz at the argmax), reading dY back
     from dIdentity when there is one, else dOut (and U to recompute y when act != "none").
U-sized traffic: 6|U| with an identity and an activation, 5|U| with an activation alone,
4|U| for act == "none" (dIdentity is then dOut itself, no kernel touches it).

All kernels load, upcast to fp32, compute, and round once on store. Tensors are addressed by
their strides (NCHW, channels_last, or anything else, without copies). `LAYOUT` codes tell a
kernel what the strides allow it to assume (see `_offsets` and `layout`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import triton
import triton.language as tl
from torch import Tensor

from sedsl.kernels import reference

# What `_act` / `_act_grad` and the squeeze kernel implement; sedsl.vocab's `kernel` flags must
# name exactly these (tests/test_vocab.py checks), so the fusion pass fuses nothing else.
KERNEL_ACTIVATIONS = frozenset({"relu", "relu6", "silu", "hardswish", "sigmoid", "hardsigmoid",
                                "tanh"})
KERNEL_SQUEEZES = frozenset({"avg", "max"})
EXCITATION = "triton"  # or "torch": how `forward` computes s from z (see the module docstring)
_REDUCE_PROGRAMS = 1024  # fewer channels per reduce program until there are this many programs
_REDUCE_MIN_TILE = 512  # ... or until a program's tile is this small


# --- device functions ---------------------------------------------------------------------------


@triton.jit  # type: ignore[untyped-decorator]
def _act(x, ACT: tl.constexpr):  # type: ignore[no-untyped-def]
    """ACT(x) for an fp32 tensor; ACT is a reference.ACTS name."""
    if ACT == "relu":
        y = tl.maximum(x, 0.0)
    elif ACT == "relu6":
        y = tl.minimum(tl.maximum(x, 0.0), 6.0)
    elif ACT == "silu":
        y = x * tl.sigmoid(x)
    elif ACT == "hardswish":
        y = x * (tl.minimum(tl.maximum(x + 3.0, 0.0), 6.0) / 6.0)
    elif ACT == "sigmoid":
        y = tl.sigmoid(x)
    elif ACT == "hardsigmoid":
        y = tl.minimum(tl.maximum(x + 3.0, 0.0), 6.0) / 6.0
    elif ACT == "tanh":
        y = 2.0 * tl.sigmoid(2.0 * x) - 1.0
    else:
        y = x
    return y


@triton.jit  # type: ignore[untyped-decorator]
def _act_grad(x, ACT: tl.constexpr):  # type: ignore[no-untyped-def]
    """dACT(x)/dx for an fp32 tensor, with torch's values at the kinks."""
    if ACT == "relu":
        d = tl.where(x > 0.0, 1.0, 0.0)
    elif ACT == "relu6":
        d = tl.where((x > 0.0) & (x < 6.0), 1.0, 0.0)
    elif ACT == "silu":
        sg = tl.sigmoid(x)
        d = sg * (1.0 + x * (1.0 - sg))
    elif ACT == "hardswish":
        d = tl.where(x <= -3.0, 0.0, tl.where(x < 3.0, x / 3.0 + 0.5, 1.0))
    elif ACT == "sigmoid":
        sg = tl.sigmoid(x)
        d = sg * (1.0 - sg)
    elif ACT == "hardsigmoid":
        d = tl.where((x > -3.0) & (x < 3.0), 1.0 / 6.0, 0.0)
    elif ACT == "tanh":
        t = 2.0 * tl.sigmoid(2.0 * x) - 1.0
        d = 1.0 - t * t
    else:
        d = tl.full(x.shape, 1.0, tl.float32)
    return d


@triton.jit  # type: ignore[untyped-decorator]
def _offsets(c, hw, W, sc, sh, sw, LAYOUT: tl.constexpr):  # type: ignore[no-untyped-def]
    """Element offsets of the (c[:, None], hw[None, :]) tile within one sample.

    LAYOUT 0: hw is unit-stride (NCHW); 1: c is unit-stride, hw has stride sw (channels_last);
    2: hw has stride sw; 3: h and w do not flatten, hw is split into hw // W and hw % W.
    """
    if LAYOUT == 0:
        off = c[:, None] * sc + hw[None, :]
    elif LAYOUT == 1:
        off = c[:, None] + hw[None, :] * sw
    elif LAYOUT == 2:
        off = c[:, None] * sc + hw[None, :] * sw
    else:
        off = c[:, None] * sc + (hw // W)[None, :] * sh + (hw % W)[None, :] * sw
    return off


# --- forward kernels ----------------------------------------------------------------------------


@triton.jit  # type: ignore[untyped-decorator]
def _squeeze_kernel(  # type: ignore[no-untyped-def]
    u_ptr,  # U (N, C, H, W), any float dtype and strides
    z_ptr,  # out: z (N, C) fp32, contiguous
    idx_ptr,  # out: argmax over hw (N, C) int32, contiguous (written only when MAX)
    C,  # channels
    HW,  # H * W
    W,  # width (LAYOUT 3 only)
    u_sn, u_sc, u_sh, u_sw,  # U's strides in elements (see _offsets for u_sw)
    U_LAYOUT: tl.constexpr,  # _offsets layout code of U
    MAX: tl.constexpr,  # max squeeze (else mean)
    BLOCK_C: tl.constexpr,  # channels per program
    BLOCK_HW: tl.constexpr,  # hw positions per loop step
):
    """One program per (channel block, sample): reduce U over hw."""
    pid_c = tl.program_id(0)
    n = tl.program_id(1)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    base = u_ptr + n.to(tl.int64) * u_sn
    lanes = tl.arange(0, BLOCK_HW)
    if MAX:
        acc = tl.full((BLOCK_C, BLOCK_HW), float("-inf"), tl.float32)
        arg = tl.zeros((BLOCK_C, BLOCK_HW), tl.int32) + lanes[None, :]
    else:
        acc = tl.zeros((BLOCK_C, BLOCK_HW), tl.float32)
    for start in range(0, HW, BLOCK_HW):
        hw = start + lanes
        mask = c_ok[:, None] & (hw < HW)[None, :]
        x = tl.load(base + _offsets(c, hw, W, u_sc, u_sh, u_sw, U_LAYOUT), mask=mask, other=0.0)
        x = x.to(tl.float32)
        if MAX:
            take = mask & (x > acc)  # strict: each lane keeps its first maximum
            acc = tl.where(take, x, acc)
            arg = tl.where(take, hw[None, :], arg)
        else:
            acc += x
    if MAX:
        z = tl.max(acc, axis=1)
        first = tl.min(tl.where(acc == z[:, None], arg, HW), axis=1)  # first maximum overall
        tl.store(idx_ptr + n * C + c, first, mask=c_ok)
    else:
        z = tl.sum(acc, axis=1) / HW
    tl.store(z_ptr + n * C + c, z, mask=c_ok)


@triton.jit  # type: ignore[untyped-decorator]
def _linear_act_kernel(  # type: ignore[no-untyped-def]
    x_ptr,  # X (M, K) fp32, contiguous
    w_ptr,  # weight (O, K), any float dtype and strides
    b_ptr,  # bias (O,), any float dtype (read only when HAS_BIAS)
    y_ptr,  # out: Y = ACT(X W^T + b) (M, O) fp32, contiguous
    M,  # rows (batch)
    K,  # input features
    O,  # output features
    w_so, w_sk,  # weight strides in elements
    b_s,  # bias stride in elements
    HAS_BIAS: tl.constexpr,  # add b
    ACT: tl.constexpr,  # activation name (reference.ACTS)
    BLOCK_M: tl.constexpr,  # rows per program (>= 16 for tl.dot)
    BLOCK_O: tl.constexpr,  # output features per program (>= 16)
    BLOCK_K: tl.constexpr,  # reduction step (>= 16)
):
    """One program per (row block, output block): a small fp32 GEMM with bias and activation."""
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    m_ok, o_ok = m < M, o < O
    acc = tl.zeros((BLOCK_M, BLOCK_O), tl.float32)
    for start in range(0, K, BLOCK_K):
        k = start + tl.arange(0, BLOCK_K)
        k_ok = k < K
        x = tl.load(x_ptr + m[:, None] * K + k[None, :], mask=m_ok[:, None] & k_ok[None, :],
                    other=0.0)  # (BLOCK_M, BLOCK_K)
        w = tl.load(w_ptr + k[:, None] * w_sk + o[None, :] * w_so,
                    mask=k_ok[:, None] & o_ok[None, :], other=0.0)  # (BLOCK_K, BLOCK_O)
        acc = tl.dot(x.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
    if HAS_BIAS:
        acc += tl.load(b_ptr + o * b_s, mask=o_ok, other=0.0).to(tl.float32)[None, :]
    y = _act(acc, ACT)
    tl.store(y_ptr + m[:, None] * O + o[None, :], y, mask=m_ok[:, None] & o_ok[None, :])


@triton.jit  # type: ignore[untyped-decorator]
def _scale_kernel(  # type: ignore[no-untyped-def]
    u_ptr,  # U (N, C, H, W), any float dtype and strides
    i_ptr,  # identity, U's shape and dtype, any strides (read only when HAS_IDENTITY)
    s_ptr,  # gate s (N, C) fp32, contiguous
    o_ptr,  # out: ACT(s * U + identity), U's shape and dtype
    C,  # channels
    HW,  # H * W
    W,  # width (LAYOUT 3 only)
    u_sn, u_sc, u_sh, u_sw,  # U's strides in elements
    i_sn, i_sc, i_sh, i_sw,  # identity's strides
    o_sn, o_sc, o_sh, o_sw,  # out's strides
    U_LAYOUT: tl.constexpr,  # _offsets layout codes of U, identity, out
    I_LAYOUT: tl.constexpr,
    O_LAYOUT: tl.constexpr,
    HAS_IDENTITY: tl.constexpr,  # add identity
    ACT: tl.constexpr,  # final activation name (reference.ACTS)
    BLOCK_C: tl.constexpr,  # channels per program
    BLOCK_HW: tl.constexpr,  # hw positions per program
):
    """One program per (hw block, channel block, sample): out = ACT(s * U + identity)."""
    n = tl.program_id(2).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    hw = tl.program_id(0) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c_ok = c < C
    mask = c_ok[:, None] & (hw < HW)[None, :]
    s = tl.load(s_ptr + n * C + c, mask=c_ok, other=0.0)  # (BLOCK_C,)
    u = tl.load(u_ptr + n * u_sn + _offsets(c, hw, W, u_sc, u_sh, u_sw, U_LAYOUT), mask=mask,
                other=0.0)
    y = s[:, None] * u.to(tl.float32)
    if HAS_IDENTITY:
        i = tl.load(i_ptr + n * i_sn + _offsets(c, hw, W, i_sc, i_sh, i_sw, I_LAYOUT),
                    mask=mask, other=0.0)
        y += i.to(tl.float32)
    y = _act(y, ACT)
    o_at = o_ptr + n * o_sn + _offsets(c, hw, W, o_sc, o_sh, o_sw, O_LAYOUT)
    tl.store(o_at, y.to(o_ptr.dtype.element_ty), mask=mask)


# --- backward kernels ---------------------------------------------------------------------------


@triton.jit  # type: ignore[untyped-decorator]
def _bwd_reduce_kernel(  # type: ignore[no-untyped-def]
    g_ptr,  # dOut (N, C, H, W), U's dtype, any strides (expanded grads have stride 0)
    u_ptr,  # U
    i_ptr,  # identity (read only when HAS_IDENTITY and ACT != "none")
    s_ptr,  # gate s (N, C) fp32, contiguous
    ds_ptr,  # out: ds = sum_hw(dY * U) (N, C) fp32, contiguous
    gy_ptr,  # out: dY = dOut * ACT'(y) in the identity's dtype (written only when STORE_GY)
    C,  # channels
    HW,  # H * W
    W,  # width (LAYOUT 3 only)
    g_sn, g_sc, g_sh, g_sw,  # dOut's strides in elements
    u_sn, u_sc, u_sh, u_sw,  # U's strides
    i_sn, i_sc, i_sh, i_sw,  # identity's strides
    y_sn, y_sc, y_sh, y_sw,  # dY's strides
    G_LAYOUT: tl.constexpr,  # _offsets layout codes of dOut, U, identity, dY
    U_LAYOUT: tl.constexpr,
    I_LAYOUT: tl.constexpr,
    Y_LAYOUT: tl.constexpr,
    HAS_IDENTITY: tl.constexpr,  # y = s * U + identity (else s * U)
    ACT: tl.constexpr,  # final activation name (reference.ACTS)
    STORE_GY: tl.constexpr,  # write dY (the identity's gradient)
    BLOCK_C: tl.constexpr,  # channels per program
    BLOCK_HW: tl.constexpr,  # hw positions per loop step
):
    """One program per (channel block, sample): ds and, with an identity, dIdentity."""
    pid_c = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    s = tl.load(s_ptr + n * C + c, mask=c_ok, other=0.0)[:, None]  # (BLOCK_C, 1)
    acc = tl.zeros((BLOCK_C, BLOCK_HW), tl.float32)
    for start in range(0, HW, BLOCK_HW):
        hw = start + tl.arange(0, BLOCK_HW)
        mask = c_ok[:, None] & (hw < HW)[None, :]
        g = tl.load(g_ptr + n * g_sn + _offsets(c, hw, W, g_sc, g_sh, g_sw, G_LAYOUT),
                    mask=mask, other=0.0).to(tl.float32)
        u = tl.load(u_ptr + n * u_sn + _offsets(c, hw, W, u_sc, u_sh, u_sw, U_LAYOUT),
                    mask=mask, other=0.0).to(tl.float32)
        if ACT != "none":
            y = s * u
            if HAS_IDENTITY:
                y += tl.load(i_ptr + n * i_sn + _offsets(c, hw, W, i_sc, i_sh, i_sw, I_LAYOUT),
                             mask=mask, other=0.0).to(tl.float32)
            g = g * _act_grad(y, ACT)
        if STORE_GY:
            y_at = gy_ptr + n * y_sn + _offsets(c, hw, W, y_sc, y_sh, y_sw, Y_LAYOUT)
            tl.store(y_at, g.to(gy_ptr.dtype.element_ty), mask=mask)
        acc += g * u
    tl.store(ds_ptr + n * C + c, tl.sum(acc, axis=1), mask=c_ok)


@triton.jit  # type: ignore[untyped-decorator]
def _bwd_input_kernel(  # type: ignore[no-untyped-def]
    g_ptr,  # dOut, or dY when not NEED_Y; (N, C, H, W), any strides
    u_ptr,  # U (read only when NEED_Y)
    i_ptr,  # identity (read only when NEED_Y and HAS_IDENTITY)
    s_ptr,  # gate s (N, C) fp32, contiguous
    dz_ptr,  # dL/dz (N, C) fp32, contiguous
    idx_ptr,  # argmax over hw (N, C) int32 (read only when MAX)
    du_ptr,  # out: dU, U's shape and dtype
    C,  # channels
    HW,  # H * W
    W,  # width (LAYOUT 3 only)
    g_sn, g_sc, g_sh, g_sw,  # g's strides in elements
    u_sn, u_sc, u_sh, u_sw,  # U's strides
    i_sn, i_sc, i_sh, i_sw,  # identity's strides
    d_sn, d_sc, d_sh, d_sw,  # dU's strides
    G_LAYOUT: tl.constexpr,  # _offsets layout codes of g, U, identity, dU
    U_LAYOUT: tl.constexpr,
    I_LAYOUT: tl.constexpr,
    D_LAYOUT: tl.constexpr,
    NEED_Y: tl.constexpr,  # g is dOut: recompute y to apply ACT' (else g is dY already)
    HAS_IDENTITY: tl.constexpr,  # y = s * U + identity (else s * U)
    ACT: tl.constexpr,  # final activation name (reference.ACTS)
    MAX: tl.constexpr,  # max squeeze: dz goes to the argmax (else dz / HW everywhere)
    BLOCK_C: tl.constexpr,  # channels per program
    BLOCK_HW: tl.constexpr,  # hw positions per program
):
    """One program per (hw block, channel block, sample): dU = dY * s + squeeze'(dz)."""
    n = tl.program_id(2).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    hw = tl.program_id(0) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c_ok = c < C
    mask = c_ok[:, None] & (hw < HW)[None, :]
    s = tl.load(s_ptr + n * C + c, mask=c_ok, other=0.0)[:, None]  # (BLOCK_C, 1)
    dz = tl.load(dz_ptr + n * C + c, mask=c_ok, other=0.0)[:, None]
    g = tl.load(g_ptr + n * g_sn + _offsets(c, hw, W, g_sc, g_sh, g_sw, G_LAYOUT), mask=mask,
                other=0.0).to(tl.float32)
    if NEED_Y:
        y = s * tl.load(u_ptr + n * u_sn + _offsets(c, hw, W, u_sc, u_sh, u_sw, U_LAYOUT),
                        mask=mask, other=0.0).to(tl.float32)
        if HAS_IDENTITY:
            y += tl.load(i_ptr + n * i_sn + _offsets(c, hw, W, i_sc, i_sh, i_sw, I_LAYOUT),
                         mask=mask, other=0.0).to(tl.float32)
        g = g * _act_grad(y, ACT)
    du = g * s
    if MAX:
        idx = tl.load(idx_ptr + n * C + c, mask=c_ok, other=-1)[:, None]
        du += tl.where(hw[None, :] == idx, dz, 0.0)
    else:
        du += dz / HW
    d_at = du_ptr + n * d_sn + _offsets(c, hw, W, d_sc, d_sh, d_sw, D_LAYOUT)
    tl.store(d_at, du.to(du_ptr.dtype.element_ty), mask=mask)


# --- launchers ----------------------------------------------------------------------------------


def layout(t: Tensor) -> tuple[int, int, int, int, int]:
    """(LAYOUT code, sn, sc, sh, sw) of a 4-D tensor for `_offsets`; codes 0-2 flatten h and w
    into one index whose stride sw carries."""
    _, c, h, w = t.shape
    sn, sc, sh, sw = t.stride()
    if h == 1 or w == 1 or sh == w * sw:
        shw = sh if w == 1 else sw
        if shw == 1 or h * w == 1:
            return 0, sn, sc, 0, 1
        if sc == 1 or c == 1:
            return 1, sn, 1, 0, shw
        return 2, sn, sc, 0, shw
    return 3, sn, sc, sh, sw


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def stream_tile(c: int, hw: int, c_contiguous: bool) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_HW) of the elementwise kernels: ~4K elements, long along the
    unit-stride axis."""
    if c_contiguous:
        bc = min(_pow2(c), 256)
        return bc, min(_pow2(hw), max(1, 4096 // bc))
    bhw = min(_pow2(hw), 1024)
    return min(_pow2(c), max(1, 4096 // bhw)), bhw


def reduce_tile(n: int, c: int, hw: int, c_contiguous: bool) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_HW) of the reducing kernels (one program per channel block and
    sample): narrower channel blocks until the grid has enough programs, keeping at least
    _REDUCE_MIN_TILE elements per loop step."""
    if c_contiguous:
        bc, floor = min(_pow2(c), 64), 16
        bhw = min(_pow2(hw), max(1, 2048 // bc))
    else:
        bhw, floor = min(_pow2(hw), 512), 1
        bc = min(_pow2(c), max(1, 2048 // bhw))
    while (bc > floor and n * _cdiv(c, bc) < _REDUCE_PROGRAMS
           and bc * bhw > _REDUCE_MIN_TILE):
        bc //= 2
    return bc, bhw


@contextlib.contextmanager
def _device(t: Tensor) -> Iterator[None]:
    if t.is_cuda:
        with torch.cuda.device(t.device):
            yield
    else:
        yield


def squeeze(u: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """(z (N, C) fp32, idx (N, C) int32 argmax for "max", else empty) of U (N, C, H, W)."""
    n, c, h, w = u.shape
    z = u.new_empty((n, c), dtype=torch.float32)
    idx = u.new_empty((n, c) if mode == "max" else (0,), dtype=torch.int32)
    code, sn, sc, sh, sw = layout(u)
    bc, bhw = reduce_tile(n, c, h * w, code == 1)
    with _device(u):
        _squeeze_kernel[(_cdiv(c, bc), n)](
            u, z, idx, c, h * w, w, sn, sc, sh, sw, U_LAYOUT=code, MAX=mode == "max",
            BLOCK_C=bc, BLOCK_HW=bhw)
    return z, idx


def linear_act(x: Tensor, w: Tensor, b: Tensor | None, act: str) -> Tensor:
    """act(x @ w.T + b) in fp32: x (M, K) fp32 contiguous, w (O, K), b (O,) or None."""
    m, k = x.shape
    o = w.shape[0]
    y = x.new_empty((m, o), dtype=torch.float32)
    bm, bo, bk = (16 if m <= 16 else 32), 32, 64
    with _device(x):
        _linear_act_kernel[(_cdiv(m, bm), _cdiv(o, bo))](
            x, w, w if b is None else b, y, m, k, o, w.stride(0), w.stride(1),
            0 if b is None else b.stride(0), HAS_BIAS=b is not None, ACT=act,
            BLOCK_M=bm, BLOCK_O=bo, BLOCK_K=bk)
    return y


def scale(u: Tensor, s: Tensor, identity: Tensor | None, act: str) -> Tensor:
    """act(s[:, :, None, None] * U + identity) in U's dtype and layout."""
    n, c, h, w = u.shape
    out = torch.empty_like(u)
    ucode, *ust = layout(u)
    icode, *ist = layout(identity if identity is not None else u)
    ocode, *ost = layout(out)
    bc, bhw = stream_tile(c, h * w, ucode == 1)
    with _device(u):
        _scale_kernel[(_cdiv(h * w, bhw), _cdiv(c, bc), n)](
            u, u if identity is None else identity, s, out, c, h * w, w, *ust, *ist, *ost,
            U_LAYOUT=ucode, I_LAYOUT=icode, O_LAYOUT=ocode, HAS_IDENTITY=identity is not None,
            ACT=act, BLOCK_C=bc, BLOCK_HW=bhw)
    return out


def forward(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
            identity: Tensor | None, squeeze_mode: str, excite: str, gate: str,
            act: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The op's outputs (out, z, s, idx) by the four forward launches."""
    z, idx = squeeze(u, squeeze_mode)  # (N, C)
    if EXCITATION == "torch":
        s = reference.excitation(z, w1, b1, w2, b2, excite, gate)
    else:
        h = linear_act(z, w1, b1, excite)  # (N, R)
        s = linear_act(h, w2, b2, gate)  # (N, C)
    return scale(u, s, identity, act), z, s, idx


def reduce_backward(grad: Tensor, u: Tensor, identity: Tensor | None, s: Tensor,
                    act: str, store_gy: bool) -> tuple[Tensor, Tensor | None]:
    """(ds (N, C) fp32, dY in the identity's layout when `store_gy`)."""
    n, c, h, w = u.shape
    ds = u.new_empty((n, c), dtype=torch.float32)
    gy = torch.empty_like(identity if identity is not None else u) if store_gy else None
    gcode, *gst = layout(grad)
    ucode, *ust = layout(u)
    icode, *ist = layout(identity if identity is not None else u)
    ycode, *yst = layout(gy if gy is not None else u)
    bc, bhw = reduce_tile(n, c, h * w, ucode == 1)
    with _device(u):
        _bwd_reduce_kernel[(_cdiv(c, bc), n)](
            grad, u, u if identity is None else identity, s, ds, u if gy is None else gy,
            c, h * w, w, *gst, *ust, *ist, *yst, G_LAYOUT=gcode, U_LAYOUT=ucode,
            I_LAYOUT=icode, Y_LAYOUT=ycode, HAS_IDENTITY=identity is not None, ACT=act,
            STORE_GY=store_gy, BLOCK_C=bc, BLOCK_HW=bhw)
    return ds, gy


def input_backward(g: Tensor, u: Tensor, identity: Tensor | None, s: Tensor, dz: Tensor,
                   idx: Tensor, squeeze_mode: str, act: str) -> Tensor:
    """dU (U's dtype and layout) from g = dOut when act != "none" needs y, else g = dY."""
    n, c, h, w = u.shape
    du = torch.empty_like(u)
    gcode, *gst = layout(g)
    ucode, *ust = layout(u)
    icode, *ist = layout(identity if identity is not None else u)
    dcode, *dst = layout(du)
    bc, bhw = stream_tile(c, h * w, ucode == 1)
    with _device(u):
        _bwd_input_kernel[(_cdiv(h * w, bhw), _cdiv(c, bc), n)](
            g, u, u if identity is None else identity, s, dz,
            idx if squeeze_mode == "max" else dz, du, c, h * w, w, *gst, *ust, *ist, *dst,
            G_LAYOUT=gcode, U_LAYOUT=ucode, I_LAYOUT=icode, D_LAYOUT=dcode,
            NEED_Y=act != "none", HAS_IDENTITY=identity is not None, ACT=act,
            MAX=squeeze_mode == "max", BLOCK_C=bc, BLOCK_HW=bhw)
    return du


def backward(grad: Tensor, u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor,
             b2: Tensor | None, identity: Tensor | None, z: Tensor, s: Tensor, idx: Tensor,
             grad_z: Tensor | None, grad_s: Tensor | None, squeeze_mode: str, excite: str,
             gate: str, act: str) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None,
                                           Tensor, Tensor | None]:
    """(dU, dIdentity, dW1, db1, dW2, db2); dIdentity only when identity is given."""
    has_id = identity is not None
    ds, gy = reduce_backward(grad, u, identity, s, act, store_gy=has_id)
    if grad_s is not None:
        ds += grad_s
    dz, dw1, db1, dw2, db2 = reference.excite_backward(z, w1, b1, w2, b2, ds, excite, gate)
    if grad_z is not None:
        dz += grad_z
    if gy is not None:  # dY is stored: the input pass needs neither U nor the identity
        du = input_backward(gy, u, None, s, dz, idx, squeeze_mode, "none")
    else:
        du = input_backward(grad, u, identity, s, dz, idx, squeeze_mode, act)
    return du, gy, dw1, db1, dw2, db2
