"""Triton kernels of the fused SE block, and their launchers.

Forward, four launches:
  1. `_squeeze_kernel` reads U once -> partial squeezes (S, N, C) fp32 over S splits of H*W
     (S = 1 unless the grid would be too small to fill the GPU): means (sum / HW) or maxima,
     so with one split they are z itself; for "max" also the partial count of elements equal
     to the partial maximum;
  2. `_excite_fc1_kernel` combines the partials into z (N, C) (and the tie count for "max";
     stored only when S > 1), then h = excite(z W1^T + b1) (N, R) fp32: a GEMM tiled by
     (sample block, all R), so the partials are read once;
  3. `_excite_fc2_kernel` s = gate(h W2^T + b2) (N, C) fp32: tiled by (sample block, channel
     range);
  4. `_scale_kernel`   reads U (and identity), writes out = act(s * U + identity).
U-sized traffic: |U| + 3|U| with an identity (|U| + 2|U| = 3|U| without), the two-pass floor.
The weights are read ceil(N / BLOCK_M) times each (once for N <= 16 at SE-ResNeXt's widths),
not once per sample or per program (`excite_bytes` gives every launch's bytes).

Backward (`backward`), four launches:
  1. `_bwd_reduce_kernel`   reads dOut, U (and, for act' (y): relu's from the block's
     output, as torch's own relu backward does; any other's from y = s * U + identity
     recomputed), sums partial dpre2 = gate'(s) * sum_hw(dY * U) (S, N, C), dY = dOut * act'(y);
     the gate's derivative comes from s (GATES_FROM_OUTPUT: sigmoid, tanh, relu,
     hardsigmoid), and the partial sums are linear in it; with an identity it also writes
     dIdentity = dY;
  2. `_excite_bwd_kernel`   per row block: combines dpre2 (stored only when S > 1), recomputes
     fc1, and writes h (N, R) and dpre1 = (dpre2 W2) * excite'(pre1) (N, R); W1 and W2 read
     once per row block;
  3. `_excite_wgrad_kernel` two kinds of program, summing over the batch in a fixed order
     (deterministic, no atomics) and storing in the weights' dtype: per block of W1's columns
     dz = dpre1 W1 (its W1 tile kept for every sample), dW1, db1; per block of W2's rows dW2,
     db2. Blocks are as wide as registers allow, since every program reads one whole (N, R)
     tensor (dpre1 or h);
  4. `_bwd_input_kernel`    writes dU = dY * s + squeeze'(dz), reading dY back from dIdentity
     when there is one, else dOut (and the output for relu, U to recompute y for another
     act, U for "max").
U-sized traffic: 6|U| with an identity and an activation, 5|U| with an activation alone,
4|U| for act == "none" (dIdentity is then dOut itself, no kernel touches it); "max" reads U
once more in pass 4 when dY is stored.

Max squeeze follows torch.amax exactly: z is NaN when the plane holds a NaN, and dz is split
evenly between the positions equal to the maximum (NaN everywhere when z is NaN), which is what
the plain modules (`x.amax((2, 3))`) do under autograd. The "idx" the op returns is that tie
count (N, C) int32.

The excitation is Triton rather than torch matmuls: torch needs addmm + activation twice, plus
dtype casts of bf16 weights and a combine of the split partials (6-10 launches forward, ~15
backward; the weight gradients alone would be two mm, two casts and two bias sums) where these
kernels need two forward and two backward; fp32 math whatever the
weights' dtype, and the same code runs under TRITON_INTERPRET, so CI checks it. Its work,
O(N*C*R), is small next to the O(N*C*H*W) passes; its bytes are the weights, O(C*R), which at
batch 1 on the 7x7 stage outweigh U itself. `EXCITATION = "torch"` swaps in torch for the
forward FCs (reference.excitation) so `bench/se_kernel.py --excitation torch` can compare.

All kernels load, upcast to fp32, compute, and round once on store. Tensors are addressed by
their strides (NCHW, channels_last, or anything else, without copies); contiguous NCHW runs
the elementwise kernels over the flattened tensor (FLAT), so loads are 16-byte vectors even at
7x7 and 14x14. Every grid is 1-D (axis 0 takes 2^31 - 1 programs; axes 1 and 2 only 65535),
and offsets are int64 when a tensor spans 2^31 elements or more (WIDE).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from sedsl.pytorch.kernels import reference
from sedsl.pytorch.kernels.interpret import interpreting
from sedsl.pytorch.kernels.launch import Launch

# What `_act` / `_act_grad` and the squeeze kernel implement; sedsl.ir.vocab's `kernel` flags must
# name exactly these (tests/test_vocab.py checks), so the fusion pass fuses nothing else.
KERNEL_ACTIVATIONS = frozenset({"relu", "relu6", "silu", "hardswish", "sigmoid", "hardsigmoid",
                                "tanh"})
KERNEL_SQUEEZES = frozenset({"avg", "max"})
# Gates whose derivative is a function of their output: the backward reduce multiplies ds by
# it (`_gate_grad`), so fc2's pre-activation is never recomputed; sedsl.ir.vocab's gates must be
# among them (tests/kernels_interpret_cases.py checks).
GATES_FROM_OUTPUT = frozenset({"sigmoid", "hardsigmoid", "tanh", "relu"})
EXCITATION = "triton"  # or "torch": how `forward` computes s from z (see the module docstring)

_STREAM_BYTES = 16384  # bytes of U per program of the elementwise passes...
_STREAM_ELEMS = 4096  # ... at most this many elements (fp32 registers: 32 a thread at 4 warps)
_REDUCE_BYTES = 8192  # bytes of U per loop step of a reducing program...
_REDUCE_ELEMS = 2048  # ... at most this many elements (fp32 registers: 16 a thread at 4 warps)
_REDUCE_PROGRAMS = 512  # split H*W until a reduction has this many programs (~4 per SM)...
_SPLIT_STEPS = 8  # ... while each split still loops over at least this many tiles
_EXCITE_PROGRAMS = 128  # split fc2's output channels until this many programs
_PRODUCT = 4096  # elements of the 3-D product tiles of the excitation kernels...
_FC_ROWS = 2048  # ... and of the (BLOCK_M, all of R) row tiles they keep in registers
_WGRAD_TILE = 16384  # elements of the weight-gradient tiles per program (see wgrad_tiles)
_BWD_WARPS = 8  # the backward excitation kernels keep row tiles of up to 2048 elements (pre1,
# dh) or weight-gradient tiles of up to 16384 (_WGRAD_TILE): 78 and 234 registers at 8 warps, no
# spill (sm_80, R = 128); row tiles under 1024 elements stay at 4 warps (with three row tiles
# of 1024, 4 warps spilled on sm_90)
_INT32_MAX = 2**31 - 1
_FLAT_MIN_HW = 32  # flat NCHW from this plane size (a program then touches <= 129 channels)
# Integer arguments Triton should not specialise on (== 1, divisible by 16): grid bookkeeping
# and the excitation's sizes, where it would multiply compiled variants for no vector access.
_SMALL_ARGS = ["N", "C", "R", "HW", "SPLITS", "RB", "CB", "C_PER", "w1_sr", "w1_sc", "b1_s",
               "w2_sc", "w2_sr", "b2_s"]


_INTERPRET = interpreting()  # fixed once triton is imported (it reads TRITON_INTERPRET then)


def _configs(*warps: int) -> list[triton.Config]:
    """Autotune space (num_warps) on a GPU; a single config under the interpreter."""
    return [triton.Config({}, num_warps=w) for w in (warps[:1] if _INTERPRET else warps)]


# --- device functions ---------------------------------------------------------------------------


@triton.jit
def _tanh(x):  # type: ignore[no-untyped-def]
    """tanh(x) to a few ulps: odd series near 0 (where 2 sigmoid(2x) - 1 cancels), else
    (1 - e^-2|x|) / (1 + e^-2|x|) with x's sign."""
    a = tl.abs(x)
    e = tl.exp(-2.0 * a)
    big = (1.0 - e) / (1.0 + e)
    x2 = x * x
    small = a * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0
                                                                  + x2 * (62.0 / 2835.0)))))
    t = tl.where(a < 0.25, small, big)
    return tl.where(x < 0.0, -t, t)


@triton.jit  # type: ignore[untyped-decorator]
def _clamp(x, lo: tl.constexpr, hi: tl.constexpr):  # type: ignore[no-untyped-def]
    """min(max(x, lo), hi) keeping NaN, as torch's clamp does (Triton's max/min drop it)."""
    x = tl.maximum(x, lo, propagate_nan=tl.PropagateNan.ALL)
    return tl.minimum(x, hi, propagate_nan=tl.PropagateNan.ALL)


@triton.jit  # type: ignore[untyped-decorator]
def _act(x, ACT: tl.constexpr):  # type: ignore[no-untyped-def]
    """ACT(x) for an fp32 tensor; ACT is one of KERNEL_ACTIVATIONS or "none"; NaN stays NaN."""
    if ACT == "relu":
        y = _clamp(x, 0.0, float("inf"))
    elif ACT == "relu6":
        y = _clamp(x, 0.0, 6.0)
    elif ACT == "silu":
        y = x * tl.sigmoid(x)
    elif ACT == "hardswish":
        y = x * (_clamp(x + 3.0, 0.0, 6.0) / 6.0)
    elif ACT == "sigmoid":
        y = tl.sigmoid(x)
    elif ACT == "hardsigmoid":
        y = _clamp(x + 3.0, 0.0, 6.0) / 6.0
    elif ACT == "tanh":
        y = _tanh(x)
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
        t = _tanh(x)
        d = 1.0 - t * t
    else:
        d = tl.full(x.shape, 1.0, tl.float32)
    return d


@triton.jit  # type: ignore[untyped-decorator]
def _gate_grad(s, GATE: tl.constexpr):  # type: ignore[no-untyped-def]
    """dGATE/dx from the gate's output s = GATE(x), for the gates of GATES_FROM_OUTPUT (what
    torch's own sigmoid, tanh and relu backwards use; hardsigmoid's 1/6 where -3 < x < 3 is
    where 0 < s < 1); "none": 1 (the gate's own derivative is the transform's: GCT)."""
    if GATE == "sigmoid":
        d = s * (1.0 - s)
    elif GATE == "none":
        d = tl.full(s.shape, 1.0, tl.float32)
    elif GATE == "tanh":
        d = 1.0 - s * s
    elif GATE == "relu":
        d = tl.where(s > 0.0, 1.0, 0.0)
    else:  # hardsigmoid
        d = tl.where((s > 0.0) & (s < 1.0), 1.0 / 6.0, 0.0)
    return d


@triton.jit  # type: ignore[untyped-decorator]
def _offsets(c, hw, W, sc, sh, sw, LAYOUT: tl.constexpr,  # type: ignore[no-untyped-def]
             WIDE: tl.constexpr):
    """Element offsets of the (c[:, None], hw[None, :]) tile within one sample.

    LAYOUT 0: hw is unit-stride (NCHW); 1: c is unit-stride, hw has stride sw (channels_last);
    2: hw has stride sw; 3: h and w do not flatten, hw is split into hw // W and hw % W.
    WIDE: the offsets need int64.
    """
    if WIDE:
        c = c.to(tl.int64)
        hw = hw.to(tl.int64)
    if LAYOUT == 0:
        off = c[:, None] * sc + hw[None, :]
    elif LAYOUT == 1:
        off = c[:, None] + hw[None, :] * sw
    elif LAYOUT == 2:
        off = c[:, None] * sc + hw[None, :] * sw
    else:
        off = c[:, None] * sc + (hw // W)[None, :] * sh + (hw % W)[None, :] * sw
    return off


@triton.jit
def _max_step(acc, cnt, x, take):  # type: ignore[no-untyped-def]
    """Fold x (where `take`) into a running (maximum, count of elements equal to it) that
    keeps NaN once seen, as torch.amax does."""
    bigger = take & ((x > acc) | ((x != x) & (acc == acc)))
    same = take & (x == acc)
    cnt = tl.where(bigger, 1, tl.where(same, cnt + 1, cnt))
    return tl.where(bigger, x, acc), cnt


@triton.jit
def _max_merge(acc, cnt, x, k):  # type: ignore[no-untyped-def]
    """Merge a partial (maximum x, count k) into (acc, cnt); NaN wins."""
    bigger = (x > acc) | ((x != x) & (acc == acc))
    same = x == acc
    cnt = tl.where(bigger, k, tl.where(same, cnt + k, cnt))
    return tl.where(bigger, x, acc), cnt


@triton.jit  # type: ignore[untyped-decorator]
def _per_channel(v_ptr, start, at, NUMEL, FLAT_HW: tl.constexpr,  # type: ignore[no-untyped-def]
                 SPAN: tl.constexpr):
    """v[at // FLAT_HW] for a flat NCHW block starting at `start`: the SPAN (N*C)-entries the
    block touches are loaded once, then gathered per element (not one load per element)."""
    first = start // FLAT_HW
    rows = first + tl.arange(0, SPAN)
    vals = tl.load(v_ptr + rows, mask=rows < NUMEL // FLAT_HW)
    local = tl.minimum(at // FLAT_HW - first, SPAN - 1).to(tl.int32)
    return tl.gather(vals, local, 0)


@triton.jit  # type: ignore[untyped-decorator]
def _per_channel_c(v_ptr, start, at, NUMEL, C, FLAT_HW: tl.constexpr,  # type: ignore[no-untyped-def]
                   SPAN: tl.constexpr):
    """v[(at // FLAT_HW) % C] for a flat NCHW block starting at `start`: a per-channel (C,)
    vector (the folded BN's scale, shift and gradient coefficients), as `_per_channel`."""
    first = start // FLAT_HW
    rows = first + tl.arange(0, SPAN)
    vals = tl.load(v_ptr + rows % C, mask=rows < NUMEL // FLAT_HW)
    local = tl.minimum(at // FLAT_HW - first, SPAN - 1).to(tl.int32)
    return tl.gather(vals, local, 0)


@triton.jit
def _bn_affine(w_ptr, bias_ptr, st_ptr, c, ok, C):  # type: ignore[no-untyped-def]
    """(a, b) of channels c of a BN with (mean, rstd) at st_ptr (2, C): BN(X) = a * X + b."""
    rstd = tl.load(st_ptr + C + c, mask=ok, other=0.0)
    a = tl.load(w_ptr + c, mask=ok, other=0.0).to(tl.float32) * rstd
    b = tl.load(bias_ptr + c, mask=ok, other=0.0).to(tl.float32) \
        - tl.load(st_ptr + c, mask=ok, other=0.0) * a
    return a, b


# --- forward kernels ----------------------------------------------------------------------------


@triton.jit(do_not_specialize=["N", "W", "CB", "SPLITS", "SPLIT_LEN"])  # type: ignore[untyped-decorator]
def _squeeze_kernel(  # type: ignore[no-untyped-def]
    u_ptr,  # U (N, C, H, W), any float dtype and strides
    zp_ptr,  # out: partial means (avg: the split's sum / HW) or maxima (max) (SPLITS, N, C)
    # fp32, contiguous; with one split they are z itself
    cp_ptr,  # out: partial tie counts (SPLITS, N, C) int32 (written only when MAX)
    qp_ptr,  # out: partial sum((U - K)^2) / HW (SPLITS, N, C) fp32 (written only when SQ)
    k_ptr,  # out: the shift K = U[n, c, 0, 0] (N, C) fp32 (written only when SHIFT)
    N,  # batch
    C,  # channels
    HW,  # H * W
    W,  # width (LAYOUT 3 only)
    u_sn, u_sc, u_sh, u_sw,  # U's strides in elements (see _offsets for u_sw)
    CB,  # channel blocks
    SPLITS,  # splits of H*W
    SPLIT_LEN,  # hw positions per split, a multiple of BLOCK_HW
    U_LAYOUT: tl.constexpr,  # _offsets layout code of U
    MAX: tl.constexpr,  # max squeeze (else the mean)
    SHIFT: tl.constexpr,  # sums of U - K, K a value of the plane (the folded BN's statistics)
    SQ: tl.constexpr,  # also the sum of squares (of U - K)
    WIDE: tl.constexpr,  # int64 offsets
    BLOCK_C: tl.constexpr,  # channels per program
    BLOCK_HW: tl.constexpr,  # hw positions per loop step
):
    """One program per (split, channel block, sample): reduce U over the split's hw range.
    With a folded BN (SHIFT, SQ) the sums are of U - K with K the plane's first value, so that
    the variance E[(U - K)^2] - (E[U] - K)^2 does not cancel when the mean is large next to
    the spread (the shifted-data algorithm)."""
    pid = tl.program_id(0)
    sp = pid % SPLITS
    rest = pid // SPLITS
    n = (rest // CB).to(tl.int64)
    c = (rest % CB) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    base = u_ptr + n * u_sn
    lo = sp * SPLIT_LEN
    lanes = tl.arange(0, BLOCK_HW)
    if MAX:
        acc = tl.full((BLOCK_C, BLOCK_HW), float("-inf"), tl.float32)
        cnt = tl.zeros((BLOCK_C, BLOCK_HW), tl.int32)
    else:
        acc = tl.zeros((BLOCK_C, BLOCK_HW), tl.float32)
        acc2 = tl.zeros((BLOCK_C, BLOCK_HW), tl.float32)
    if SHIFT:  # K = U[n, c, 0, 0]: (BLOCK_C, 1)
        k = tl.load(base + _offsets(c, tl.zeros((1,), tl.int32), W, u_sc, u_sh, u_sw, U_LAYOUT,
                                    WIDE),
                    mask=c_ok[:, None], other=0.0).to(tl.float32)
    for step in range(0, SPLIT_LEN, BLOCK_HW):
        hw = lo + step + lanes
        mask = c_ok[:, None] & (hw < HW)[None, :]
        x = tl.load(base + _offsets(c, hw, W, u_sc, u_sh, u_sw, U_LAYOUT, WIDE), mask=mask,
                    other=0.0).to(tl.float32)
        if MAX:
            acc, cnt = _max_step(acc, cnt, x, mask)
        else:
            if SHIFT:
                x = tl.where(mask, x - k, 0.0)
            acc += x
            if SQ:
                acc2 += x * x
    at = (sp * N + n) * C + c
    if SQ:
        tl.store(qp_ptr + at, tl.sum(acc2, axis=1) / HW, mask=c_ok)
    if SHIFT:
        tl.store(k_ptr + n * C + c, tl.sum(k, axis=1), mask=c_ok & (sp == 0))
    if MAX:
        has_nan = tl.max((acc != acc).to(tl.int32), axis=1) > 0
        z = tl.where(has_nan, float("nan"), tl.max(acc, axis=1))
        tl.store(cp_ptr + at, tl.sum(tl.where(acc == z[:, None], cnt, 0), axis=1), mask=c_ok)
    else:
        z = tl.sum(acc, axis=1) / HW
    tl.store(zp_ptr + at, z, mask=c_ok)


@triton.jit  # type: ignore[untyped-decorator]
def _combine(zp_ptr, cp_ptr, m, k, ok, N, C, SPLITS, TIES,  # type: ignore[no-untyped-def]
             MAX: tl.constexpr):
    """z (and, for MAX where TIES, the tie count) of the (m[:, None], k[None, :]) tile from
    the partials."""
    at = m[:, None] * C + k[None, :]
    if MAX:
        z = tl.full(at.shape, float("-inf"), tl.float32)
        cnt = tl.zeros(at.shape, tl.int32)
        for sp in range(0, SPLITS):
            x = tl.load(zp_ptr + sp * N * C + at, mask=ok, other=float("-inf"))
            ties = tl.load(cp_ptr + sp * N * C + at, mask=ok & TIES, other=0)
            z, cnt = _max_merge(z, cnt, x, ties)
    else:
        z = tl.zeros(at.shape, tl.float32)
        for sp in range(0, SPLITS):
            z += tl.load(zp_ptr + sp * N * C + at, mask=ok, other=0.0)
        cnt = tl.zeros(at.shape, tl.int32)
    return z, cnt


@triton.jit  # type: ignore[untyped-decorator]
def _fc1(z_ptr, zp_ptr, cp_ptr, cnt_ptr, w1_ptr, b1_ptr, m, r, N, C, R,  # type: ignore[no-untyped-def]
         SPLITS, w1_sr, w1_sc, b1_s, STORE_Z, FROM_PARTIALS: tl.constexpr, MAX: tl.constexpr,
         HAS_B1: tl.constexpr, BLOCK_K: tl.constexpr, ab_ptr, AFFINE: tl.constexpr):
    """pre1 = z W1^T + b1 (BLOCK_M, BLOCK_R) fp32 for rows m; z from the partials (combined
    and stored, with the ties, when STORE_Z) or from z_ptr. AFFINE: the partials are means of
    a folded BN's input X, z = a * mean + b, (a, b) (2, C) at ab_ptr."""
    m_ok = m < N
    r_ok = r < R
    acc = tl.zeros((m.shape[0], r.shape[0]), tl.float32)
    for start in range(0, C, BLOCK_K):
        k = start + tl.arange(0, BLOCK_K)
        ok = m_ok[:, None] & (k < C)[None, :]
        if FROM_PARTIALS:
            z, cnt = _combine(zp_ptr, cp_ptr, m, k, ok, N, C, SPLITS, STORE_Z, MAX)
            if AFFINE:
                a = tl.load(ab_ptr + k, mask=k < C, other=0.0)
                b = tl.load(ab_ptr + C + k, mask=k < C, other=0.0)
                z = a[None, :] * z + b[None, :]
            at = m[:, None] * C + k[None, :]
            tl.store(z_ptr + at, z, mask=ok & STORE_Z)
            if MAX:
                tl.store(cnt_ptr + at, cnt, mask=ok & STORE_Z)
            z = tl.where(ok, z, 0.0)  # padding: -inf * 0 would be NaN
        else:
            z = tl.load(z_ptr + m[:, None] * C + k[None, :], mask=ok, other=0.0)
        w = tl.load(w1_ptr + r[:, None] * w1_sr + k[None, :] * w1_sc,
                    mask=r_ok[:, None] & (k < C)[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(z[:, None, :] * w[None, :, :], axis=2)  # (BLOCK_M, BLOCK_R)
    if HAS_B1:
        acc += tl.load(b1_ptr + r * b1_s, mask=r_ok, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit(do_not_specialize=_SMALL_ARGS)  # type: ignore[untyped-decorator]
def _excite_fc1_kernel(  # type: ignore[no-untyped-def]
    zp_ptr,  # partial squeezes (SPLITS, N, C) fp32
    cp_ptr,  # partial tie counts (SPLITS, N, C) int32 (read only when MAX and SPLITS > 1)
    z_ptr,  # out: z (N, C) fp32 (written only when SPLITS > 1: else the partials are z)
    cnt_ptr,  # out: tie counts (N, C) int32 (written only when MAX and SPLITS > 1)
    w1_ptr, b1_ptr,  # W1 (R, C), b1 (R,), any float dtype and strides
    h_ptr,  # out: h = EXCITE(z W1^T + b1) (N, R) fp32
    N, C, R,
    SPLITS,
    w1_sr, w1_sc, b1_s,  # strides in elements
    RB,  # row blocks
    MAX: tl.constexpr,
    HAS_B1: tl.constexpr,
    EXCITE: tl.constexpr,  # activation name
    BLOCK_M: tl.constexpr,  # rows (samples) per program
    BLOCK_R: tl.constexpr,  # fc1 outputs per program
    BLOCK_K: tl.constexpr,  # channels per step
):
    """One program per (row block, block of fc1 outputs; one block up to R = _FC_ROWS): a GEMM
    tile over all C, so W1 is read once per row block and the partials once per output block;
    programs of the first output block also store z (and the ties) when there are several
    splits to combine."""
    pid = tl.program_id(0)
    m = (pid % RB) * BLOCK_M + tl.arange(0, BLOCK_M)
    rb = pid // RB  # neighbouring programs share the W1 rows they read
    r = rb * BLOCK_R + tl.arange(0, BLOCK_R)
    pre1 = _fc1(z_ptr, zp_ptr, cp_ptr, cnt_ptr, w1_ptr, b1_ptr, m, r, N, C, R, SPLITS,
                w1_sr, w1_sc, b1_s, (rb == 0) & (SPLITS > 1), True, MAX, HAS_B1, BLOCK_K,
                zp_ptr, False)
    tl.store(h_ptr + m[:, None] * R + r[None, :], _act(pre1, EXCITE),
             mask=(m < N)[:, None] & (r < R)[None, :])


@triton.jit(do_not_specialize=_SMALL_ARGS)  # type: ignore[untyped-decorator]
def _excite_fc2_kernel(  # type: ignore[no-untyped-def]
    h_ptr,  # h (N, R) fp32
    w2_ptr, b2_ptr,  # W2 (C, R), b2 (C,), any float dtype and strides
    s_ptr,  # out: gate s (N, C) fp32
    N, C, R,
    w2_sc, w2_sr, b2_s,  # strides in elements
    RB,  # row blocks
    C_PER,  # output channels per program, a multiple of BLOCK_C
    HAS_B2: tl.constexpr,
    GATE: tl.constexpr,  # activation name
    BLOCK_M: tl.constexpr,  # rows (samples) per program
    BLOCK_R: tl.constexpr,  # >= R: the program's h rows stay in registers
    BLOCK_C: tl.constexpr,  # channels per step
):
    """One program per (row block, channel range): s = GATE(h W2^T + b2), so W2 is read once
    per row block and h once per program."""
    pid = tl.program_id(0)
    m = (pid % RB) * BLOCK_M + tl.arange(0, BLOCK_M)
    pc = pid // RB  # neighbouring programs share the W2 rows they read
    r = tl.arange(0, BLOCK_R)
    m_ok, r_ok = m < N, r < R
    h = tl.load(h_ptr + m[:, None] * R + r[None, :], mask=m_ok[:, None] & r_ok[None, :],
                other=0.0)  # (BLOCK_M, BLOCK_R)
    for step in range(0, C_PER, BLOCK_C):
        c = pc * C_PER + step + tl.arange(0, BLOCK_C)
        c_ok = c < C
        w = tl.load(w2_ptr + c[:, None] * w2_sc + r[None, :] * w2_sr,
                    mask=c_ok[:, None] & r_ok[None, :], other=0.0).to(tl.float32)
        pre2 = tl.sum(h[:, None, :] * w[None, :, :], axis=2)  # (BLOCK_M, BLOCK_C)
        if HAS_B2:
            pre2 += tl.load(b2_ptr + c * b2_s, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(s_ptr + m[:, None] * C + c[None, :], _act(pre2, GATE),
                 mask=m_ok[:, None] & c_ok[None, :])


@triton.jit(do_not_specialize=["W", "HB", "CB"])  # type: ignore[untyped-decorator]
def _scale_kernel(  # type: ignore[no-untyped-def]
    u_ptr,  # U (N, C, H, W), any float dtype and strides (with BN: the BN's input X)
    i_ptr,  # identity, U's shape and dtype, any strides (read only when HAS_IDENTITY)
    s_ptr,  # gate s (N, C) fp32, contiguous
    bn_ptr,  # the folded BN's (scale a, shift b) (2, C) fp32 (read only when BN)
    o_ptr,  # out: ACT(s * U + identity), U's shape and dtype
    NUMEL,  # N * C * H * W
    C,  # channels
    HW,  # H * W
    W,  # width (LAYOUT 3 only)
    u_sn, u_sc, u_sh, u_sw,  # U's strides in elements (unused when FLAT)
    i_sn, i_sc, i_sh, i_sw,  # identity's strides
    o_sn, o_sc, o_sh, o_sw,  # out's strides
    HB, CB,  # hw blocks and channel blocks per sample (unused when FLAT)
    FLAT: tl.constexpr,  # every tensor is contiguous NCHW: one index over the whole tensor
    FLAT_HW: tl.constexpr,  # H * W when FLAT (a constant: the channel is index // FLAT_HW)
    SPAN: tl.constexpr,  # >= channels one FLAT program touches, a power of 2
    U_LAYOUT: tl.constexpr,  # _offsets layout codes of U, identity, out
    I_LAYOUT: tl.constexpr,
    O_LAYOUT: tl.constexpr,
    HAS_IDENTITY: tl.constexpr,  # add identity
    BN: tl.constexpr,  # U = a * X + b: a BN folded in (u_ptr is X)
    ACT: tl.constexpr,  # final activation name
    WIDE: tl.constexpr,  # int64 offsets
    BLOCK_C: tl.constexpr,  # channels per program (1 when FLAT)
    BLOCK_HW: tl.constexpr,  # hw positions per program (elements per program when FLAT)
):
    """One program per tile: out = ACT(s * U + identity), U = a * X + b with a folded BN."""
    pid = tl.program_id(0)
    if FLAT:
        if WIDE:
            pid = pid.to(tl.int64)
        at = pid * BLOCK_HW + tl.arange(0, BLOCK_HW)
        mask = at < NUMEL
        s = _per_channel(s_ptr, pid * BLOCK_HW, at, NUMEL, FLAT_HW, SPAN)
        if BN:
            a = _per_channel_c(bn_ptr, pid * BLOCK_HW, at, NUMEL, C, FLAT_HW, SPAN)
            b = _per_channel_c(bn_ptr + C, pid * BLOCK_HW, at, NUMEL, C, FLAT_HW, SPAN)
        u_at, i_at, o_at = u_ptr + at, i_ptr + at, o_ptr + at
    else:
        n = (pid // (HB * CB)).to(tl.int64)
        c = (pid // HB % CB) * BLOCK_C + tl.arange(0, BLOCK_C)
        hw = pid % HB * BLOCK_HW + tl.arange(0, BLOCK_HW)
        c_ok = c < C
        mask = c_ok[:, None] & (hw < HW)[None, :]
        s = tl.load(s_ptr + n * C + c, mask=c_ok, other=0.0)[:, None]  # (BLOCK_C, 1)
        if BN:
            a = tl.load(bn_ptr + c, mask=c_ok, other=0.0)[:, None]
            b = tl.load(bn_ptr + C + c, mask=c_ok, other=0.0)[:, None]
        u_at = u_ptr + n * u_sn + _offsets(c, hw, W, u_sc, u_sh, u_sw, U_LAYOUT, WIDE)
        i_at = i_ptr + n * i_sn + _offsets(c, hw, W, i_sc, i_sh, i_sw, I_LAYOUT, WIDE)
        o_at = o_ptr + n * o_sn + _offsets(c, hw, W, o_sc, o_sh, o_sw, O_LAYOUT, WIDE)
    u = tl.load(u_at, mask=mask, other=0.0).to(tl.float32)
    if BN:
        u = a * u + b
    y = s * u
    if HAS_IDENTITY:
        y += tl.load(i_at, mask=mask, other=0.0).to(tl.float32)
    tl.store(o_at, _act(y, ACT).to(o_ptr.dtype.element_ty), mask=mask)


# --- backward kernels ---------------------------------------------------------------------------


@triton.jit(do_not_specialize=["N", "W", "CB", "SPLITS", "SPLIT_LEN"])  # type: ignore[untyped-decorator]
def _bwd_reduce_kernel(  # type: ignore[no-untyped-def]
    g_ptr,  # dOut (N, C, H, W), U's dtype, any strides (expanded grads have stride 0)
    u_ptr,  # U (with BN: the BN's input X)
    i_ptr,  # identity (read when HAS_IDENTITY), or the block's output (when FROM_OUT)
    s_ptr,  # gate s (N, C) fp32, contiguous
    bnw_ptr, bnb_ptr,  # the folded BN's weight and bias (C,) (read only when BN)
    st_ptr,  # its (mean, rstd) (2, C) fp32 (read only when BN)
    dsp_ptr,  # out: partial dpre2 = GATE'(s) * sum_hw(dY * U) (SPLITS, N, C) fp32, contiguous
    sgp_ptr,  # out: partial sum_hw(dY) (SPLITS, N, C) fp32 (written only when BN)
    sgxp_ptr,  # out: partial sum_hw(dY * X) (SPLITS, N, C) fp32 (written only when BN)
    xp_ptr,  # out: partial sum_hw(X) / HW (SPLITS, N, C) fp32 (written only when BN)
    ab_ptr,  # out: the BN's (a, b) (2, C) fp32 (written only when BN, by the first sample's)
    gy_ptr,  # out: dY = dOut * ACT'(y) in the identity's dtype (written only when STORE_GY)
    N,  # batch
    C,  # channels
    HW,  # H * W
    W,  # width (LAYOUT 3 only)
    g_sn, g_sc, g_sh, g_sw,  # dOut's strides in elements
    u_sn, u_sc, u_sh, u_sw,  # U's strides
    i_sn, i_sc, i_sh, i_sw,  # identity's strides
    y_sn, y_sc, y_sh, y_sw,  # dY's strides
    CB,  # channel blocks
    SPLITS,  # splits of H*W
    SPLIT_LEN,  # hw positions per split, a multiple of BLOCK_HW
    G_LAYOUT: tl.constexpr,  # _offsets layout codes of dOut, U, identity, dY
    U_LAYOUT: tl.constexpr,
    I_LAYOUT: tl.constexpr,
    Y_LAYOUT: tl.constexpr,
    HAS_IDENTITY: tl.constexpr,  # y = s * U + identity (else s * U)
    BN: tl.constexpr,  # U = a * X + b: a BN folded in (u_ptr is X)
    ACT: tl.constexpr,  # final activation name
    FROM_OUT: tl.constexpr,  # ACT' from the block's output at i_ptr (relu), not from y
    GATE: tl.constexpr,  # the gate's name (one of GATES_FROM_OUTPUT)
    STORE_GY: tl.constexpr,  # write dY (the identity's gradient)
    WIDE: tl.constexpr,  # int64 offsets
    BLOCK_C: tl.constexpr,  # channels per program
    BLOCK_HW: tl.constexpr,  # hw positions per loop step
):
    """One program per (split, channel block, sample): partial dpre2 (ds times the gate's
    derivative, taken from s, so that the excitation's backward needs neither s nor fc2's
    pre-activation) and, with an identity, dIdentity. With a folded BN, ds = a * sum(dY * X) +
    b * sum(dY), both sums kept for the BN's backward, and sum(X) too: the plane means give z
    again (the forward does not keep z, nor the means)."""
    pid = tl.program_id(0)
    sp = pid % SPLITS
    rest = pid // SPLITS
    n = (rest // CB).to(tl.int64)
    c = (rest % CB) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    s_c = tl.load(s_ptr + n * C + c, mask=c_ok, other=0.0)  # (BLOCK_C,)
    s = s_c[:, None]
    if BN:
        a_c, b_c = _bn_affine(bnw_ptr, bnb_ptr, st_ptr, c, c_ok, C)
        first = c_ok & (n == 0) & (sp == 0)
        tl.store(ab_ptr + c, a_c, mask=first)
        tl.store(ab_ptr + C + c, b_c, mask=first)
    acc = tl.zeros((BLOCK_C, BLOCK_HW), tl.float32)  # sum(dY * U), with BN sum(dY * X)
    acc_g = tl.zeros((BLOCK_C, BLOCK_HW), tl.float32)  # sum(dY) (with BN)
    acc_x = tl.zeros((BLOCK_C, BLOCK_HW), tl.float32)  # sum(X) (with BN)
    for step in range(0, SPLIT_LEN, BLOCK_HW):
        hw = sp * SPLIT_LEN + step + tl.arange(0, BLOCK_HW)
        mask = c_ok[:, None] & (hw < HW)[None, :]
        g = tl.load(g_ptr + n * g_sn + _offsets(c, hw, W, g_sc, g_sh, g_sw, G_LAYOUT, WIDE),
                    mask=mask, other=0.0).to(tl.float32)
        u = tl.load(u_ptr + n * u_sn + _offsets(c, hw, W, u_sc, u_sh, u_sw, U_LAYOUT, WIDE),
                    mask=mask, other=0.0).to(tl.float32)
        if FROM_OUT:  # relu: out > 0, as torch's threshold_backward on the result
            i_at = i_ptr + n * i_sn + _offsets(c, hw, W, i_sc, i_sh, i_sw, I_LAYOUT, WIDE)
            g = tl.where(tl.load(i_at, mask=mask, other=0.0).to(tl.float32) > 0.0, g, 0.0)
        elif ACT != "none":
            if BN:  # noqa: SIM108 (a constexpr branch)
                y = s * (a_c[:, None] * u + b_c[:, None])
            else:
                y = s * u
            if HAS_IDENTITY:
                i_at = i_ptr + n * i_sn + _offsets(c, hw, W, i_sc, i_sh, i_sw, I_LAYOUT, WIDE)
                y += tl.load(i_at, mask=mask, other=0.0).to(tl.float32)
            g = g * _act_grad(y, ACT)
        if STORE_GY:
            y_at = gy_ptr + n * y_sn + _offsets(c, hw, W, y_sc, y_sh, y_sw, Y_LAYOUT, WIDE)
            tl.store(y_at, g.to(gy_ptr.dtype.element_ty), mask=mask)
        acc += g * u
        if BN:
            acc_g += g
            acc_x += u
    at = (sp * N + n) * C + c
    ds = tl.sum(acc, axis=1)
    if BN:
        sg = tl.sum(acc_g, axis=1)
        tl.store(sgp_ptr + at, sg, mask=c_ok)
        tl.store(sgxp_ptr + at, ds, mask=c_ok)
        tl.store(xp_ptr + at, tl.sum(acc_x, axis=1) / HW, mask=c_ok)
        ds = a_c * ds + b_c * sg
    tl.store(dsp_ptr + at, ds * _gate_grad(s_c, GATE), mask=c_ok)


@triton.jit(do_not_specialize=_SMALL_ARGS)  # type: ignore[untyped-decorator]
def _excite_bwd_kernel(  # type: ignore[no-untyped-def]
    z_ptr,  # z (N, C) fp32 (with BN: out, z = a * mean_hw(X) + b for the weight gradients)
    xp_ptr,  # with BN: partial mean_hw(X) (SPLITS, N, C) fp32 (the backward reduce's)
    ab_ptr,  # with BN: its (a, b) (2, C) fp32 (the backward reduce's)
    dsp_ptr,  # partial dpre2 (SPLITS, N, C) fp32 (the backward reduce's)
    w1_ptr, b1_ptr,  # W1 (R, C), b1 (R,), any float dtype and strides
    w2_ptr,  # W2 (C, R)
    h_ptr,  # out: h (N, R) fp32
    d1_ptr,  # out: dL/dpre1 (N, R) fp32
    d2_ptr,  # out: dL/dpre2 (N, C) fp32 (written only when SPLITS > 1: else it is the partial)
    N, C, R,
    SPLITS,
    w1_sr, w1_sc, b1_s, w2_sc, w2_sr,  # strides in elements
    HAS_B1: tl.constexpr,
    BN: tl.constexpr,  # a BN folded in: z recomputed from the reduce pass's sums of X
    EXCITE: tl.constexpr,  # activation name
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_R: tl.constexpr,  # >= R
    BLOCK_K: tl.constexpr,  # channels per fc1 step
    BLOCK_C: tl.constexpr,  # channels per dh step
):
    """One program per row block: the excitation's backward from dpre2 to dpre1 (fc1
    recomputed, dh = dpre2 W2), storing what the weight-gradient kernel needs (h, dpre1, and
    dpre2 when it had to be combined); W1 and W2 are read once per row block."""
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    r = tl.arange(0, BLOCK_R)
    m_ok, r_ok = m < N, r < R
    if BN:  # z = a * mean_hw(X) + b from the reduce pass's partial sums, stored for wgrad
        pre1 = _fc1(z_ptr, xp_ptr, xp_ptr, xp_ptr, w1_ptr, b1_ptr, m, r, N, C, R, SPLITS,
                    w1_sr, w1_sc, b1_s, True, True, False, HAS_B1, BLOCK_K, ab_ptr, True)
    else:
        pre1 = _fc1(z_ptr, z_ptr, z_ptr, z_ptr, w1_ptr, b1_ptr, m, r, N, C, R, 1,
                    w1_sr, w1_sc, b1_s, False, False, False, HAS_B1, BLOCK_K, z_ptr, False)
    mr_ok = m_ok[:, None] & r_ok[None, :]
    tl.store(h_ptr + m[:, None] * R + r[None, :], _act(pre1, EXCITE), mask=mr_ok)
    dh = tl.zeros((BLOCK_M, BLOCK_R), tl.float32)
    for start in range(0, C, BLOCK_C):
        c = start + tl.arange(0, BLOCK_C)
        c_ok = c < C
        mc_ok = m_ok[:, None] & c_ok[None, :]
        w = tl.load(w2_ptr + c[:, None] * w2_sc + r[None, :] * w2_sr,
                    mask=c_ok[:, None] & r_ok[None, :], other=0.0).to(tl.float32)
        at = m[:, None] * C + c[None, :]
        d2 = tl.load(dsp_ptr + at, mask=mc_ok, other=0.0)
        if SPLITS > 1:  # else the one partial is dpre2
            for sp in range(1, SPLITS):
                d2 += tl.load(dsp_ptr + sp * N * C + at, mask=mc_ok, other=0.0)
            tl.store(d2_ptr + at, d2, mask=mc_ok)
        dh += tl.sum(d2[:, :, None] * w[None, :, :], axis=1)  # (BLOCK_M, BLOCK_R)
    d1 = tl.where(mr_ok, dh * _act_grad(pre1, EXCITE), 0.0)
    tl.store(d1_ptr + m[:, None] * R + r[None, :], d1, mask=mr_ok)


@triton.jit(do_not_specialize=_SMALL_ARGS)  # type: ignore[untyped-decorator]
def _excite_wgrad_kernel(  # type: ignore[no-untyped-def]
    z_ptr,  # z (N, C) fp32
    h_ptr,  # h (N, R) fp32
    d1_ptr,  # dL/dpre1 (N, R) fp32
    d2_ptr,  # dL/dpre2 (N, C) fp32
    w1_ptr,  # W1 (R, C), any float dtype and strides
    dz_ptr,  # out: dL/dz = dpre1 W1 (N, C) fp32
    dw1_ptr, db1_ptr,  # out: dW1 (R, C), db1 (R,), contiguous, the weights' dtype
    dw2_ptr, db2_ptr,  # out: dW2 (C, R), db2 (C,)
    N, C, R,
    w1_sr, w1_sc,  # W1's strides in elements
    CB,  # channel blocks of the dW1 programs (the first CB programs)
    HAS_B1: tl.constexpr,
    HAS_B2: tl.constexpr,
    BLOCK_R: tl.constexpr,  # >= R
    BLOCK_C1: tl.constexpr,  # channels per dW1 program
    BLOCK_N1: tl.constexpr,  # rows per step of a dW1 program
    BLOCK_C2: tl.constexpr,  # channels per dW2 program
    BLOCK_N2: tl.constexpr,  # rows per step of a dW2 program
):
    """Two kinds of program, each summing over the batch in order (deterministic): the first
    CB take a block of W1's columns (dW1, db1, and dz = dpre1 W1 with their W1 tile kept for
    every row), the rest a block of W2's rows (dW2, db2). Each reads one (N, R) tensor, dpre1 or
    h, so wide blocks (the whole of a program's registers for one gradient tile) read it few
    times."""
    pid = tl.program_id(0)
    r = tl.arange(0, BLOCK_R)
    r_ok = r < R
    if pid < CB:
        c1 = pid * BLOCK_C1 + tl.arange(0, BLOCK_C1)
        c1_ok = c1 < C
        rc1_ok = r_ok[:, None] & c1_ok[None, :]
        w1 = tl.load(w1_ptr + r[:, None] * w1_sr + c1[None, :] * w1_sc, mask=rc1_ok,
                     other=0.0).to(tl.float32)  # (BLOCK_R, BLOCK_C1), kept for every row
        acc1 = tl.zeros((BLOCK_R, BLOCK_C1), tl.float32)
        db1 = tl.zeros((BLOCK_R,), tl.float32)
        for start in range(0, N, BLOCK_N1):
            nn1 = start + tl.arange(0, BLOCK_N1)
            n1_ok = nn1 < N
            d1 = tl.load(d1_ptr + nn1[:, None] * R + r[None, :],
                         mask=n1_ok[:, None] & r_ok[None, :], other=0.0)  # (BLOCK_N1, BLOCK_R)
            nc1_ok = n1_ok[:, None] & c1_ok[None, :]
            z = tl.load(z_ptr + nn1[:, None] * C + c1[None, :], mask=nc1_ok, other=0.0)
            dz = tl.sum(d1[:, :, None] * w1[None, :, :], axis=1)  # (BLOCK_N1, BLOCK_C1)
            tl.store(dz_ptr + nn1[:, None] * C + c1[None, :], dz, mask=nc1_ok)
            acc1 += tl.sum(d1[:, :, None] * z[:, None, :], axis=0)
            db1 += tl.sum(d1, axis=0)
        tl.store(dw1_ptr + r[:, None] * C + c1[None, :], acc1.to(dw1_ptr.dtype.element_ty),
                 mask=rc1_ok)
        if HAS_B1:
            tl.store(db1_ptr + r, db1.to(db1_ptr.dtype.element_ty), mask=r_ok & (pid == 0))
    else:
        c2 = (pid - CB) * BLOCK_C2 + tl.arange(0, BLOCK_C2)
        c2_ok = c2 < C
        acc2 = tl.zeros((BLOCK_C2, BLOCK_R), tl.float32)
        db2 = tl.zeros((BLOCK_C2,), tl.float32)
        for start in range(0, N, BLOCK_N2):
            nn2 = start + tl.arange(0, BLOCK_N2)
            n2_ok = nn2 < N
            h = tl.load(h_ptr + nn2[:, None] * R + r[None, :], mask=n2_ok[:, None] & r_ok[None, :],
                        other=0.0)  # (BLOCK_N2, BLOCK_R)
            d2 = tl.load(d2_ptr + nn2[:, None] * C + c2[None, :],
                         mask=n2_ok[:, None] & c2_ok[None, :], other=0.0)
            acc2 += tl.sum(d2[:, :, None] * h[:, None, :], axis=0)
            db2 += tl.sum(d2, axis=0)
        tl.store(dw2_ptr + c2[:, None] * R + r[None, :], acc2.to(dw2_ptr.dtype.element_ty),
                 mask=c2_ok[:, None] & r_ok[None, :])
        if HAS_B2:
            tl.store(db2_ptr + c2, db2.to(db2_ptr.dtype.element_ty), mask=c2_ok)


@triton.jit(do_not_specialize=["W", "HB", "CB"])  # type: ignore[untyped-decorator]
def _bwd_input_kernel(  # type: ignore[no-untyped-def]
    g_ptr,  # dOut, or dY when not NEED_Y; (N, C, H, W), any strides
    u_ptr,  # U (read only when NEED_Y and not FROM_OUT, or MAX, or BN); with BN the BN's X
    i_ptr,  # identity (read when NEED_Y and HAS_IDENTITY), or the output (NEED_Y, FROM_OUT)
    s_ptr,  # gate s (N, C) fp32, contiguous
    dz_ptr,  # dL/dz (N, C) fp32, contiguous
    z_ptr,  # z (N, C) fp32 (read only when MAX)
    cnt_ptr,  # ties of the maximum (N, C) int32 (read only when MAX)
    bn_ptr,  # the folded BN's (a, b, P, Q) (4, C) fp32 (read only when BN)
    du_ptr,  # out: dU, U's shape and dtype (with BN: dX)
    NUMEL,  # N * C * H * W
    C,  # channels
    HW,  # H * W
    W,  # width (LAYOUT 3 only)
    g_sn, g_sc, g_sh, g_sw,  # g's strides in elements (unused when FLAT)
    u_sn, u_sc, u_sh, u_sw,  # U's strides
    i_sn, i_sc, i_sh, i_sw,  # identity's strides
    d_sn, d_sc, d_sh, d_sw,  # dU's strides
    HB, CB,  # hw blocks and channel blocks per sample (unused when FLAT)
    FLAT: tl.constexpr,  # every tensor is contiguous NCHW: one index over the whole tensor
    FLAT_HW: tl.constexpr,  # H * W when FLAT
    SPAN: tl.constexpr,  # >= channels one FLAT program touches, a power of 2
    G_LAYOUT: tl.constexpr,  # _offsets layout codes of g, U, identity, dU
    U_LAYOUT: tl.constexpr,
    I_LAYOUT: tl.constexpr,
    D_LAYOUT: tl.constexpr,
    NEED_Y: tl.constexpr,  # g is dOut: apply ACT' (else g is dY already)
    HAS_IDENTITY: tl.constexpr,  # y = s * U + identity (else s * U)
    BN: tl.constexpr,  # a BN folded in: dX = a * dU - P * X - Q
    ACT: tl.constexpr,  # final activation name
    FROM_OUT: tl.constexpr,  # ACT' from the block's output at i_ptr (relu), not from y
    MAX: tl.constexpr,  # max squeeze: dz split between the maxima (else dz / HW everywhere)
    L2: tl.constexpr,  # z = sum_hw U^2 (GCT): squeeze'(dz) = 2 dz U
    WIDE: tl.constexpr,  # int64 offsets
    BLOCK_C: tl.constexpr,  # channels per program (1 when FLAT)
    BLOCK_HW: tl.constexpr,  # hw positions per program (elements per program when FLAT)
):
    """One program per tile: dU = dY * s + squeeze'(dz); with a folded BN (in training, P and
    Q carry the batch statistics' share) dX = a * dU - P * X - Q."""
    pid = tl.program_id(0)
    if FLAT:
        if WIDE:
            pid = pid.to(tl.int64)
        at = pid * BLOCK_HW + tl.arange(0, BLOCK_HW)
        mask = at < NUMEL
        s = _per_channel(s_ptr, pid * BLOCK_HW, at, NUMEL, FLAT_HW, SPAN)
        dz = _per_channel(dz_ptr, pid * BLOCK_HW, at, NUMEL, FLAT_HW, SPAN)
        if MAX:
            z = _per_channel(z_ptr, pid * BLOCK_HW, at, NUMEL, FLAT_HW, SPAN)
            ties = _per_channel(cnt_ptr, pid * BLOCK_HW, at, NUMEL, FLAT_HW, SPAN)
        if BN:
            a = _per_channel_c(bn_ptr, pid * BLOCK_HW, at, NUMEL, C, FLAT_HW, SPAN)
            b = _per_channel_c(bn_ptr + C, pid * BLOCK_HW, at, NUMEL, C, FLAT_HW, SPAN)
            p = _per_channel_c(bn_ptr + 2 * C, pid * BLOCK_HW, at, NUMEL, C, FLAT_HW, SPAN)
            q = _per_channel_c(bn_ptr + 3 * C, pid * BLOCK_HW, at, NUMEL, C, FLAT_HW, SPAN)
        g_at, u_at, i_at, d_at = g_ptr + at, u_ptr + at, i_ptr + at, du_ptr + at
    else:
        n = (pid // (HB * CB)).to(tl.int64)
        c = (pid // HB % CB) * BLOCK_C + tl.arange(0, BLOCK_C)
        hw = pid % HB * BLOCK_HW + tl.arange(0, BLOCK_HW)
        c_ok = c < C
        mask = c_ok[:, None] & (hw < HW)[None, :]
        nc = (n * C + c)[:, None]
        s = tl.load(s_ptr + nc, mask=c_ok[:, None], other=0.0)  # (BLOCK_C, 1)
        dz = tl.load(dz_ptr + nc, mask=c_ok[:, None], other=0.0)
        if MAX:
            z = tl.load(z_ptr + nc, mask=c_ok[:, None], other=0.0)
            ties = tl.load(cnt_ptr + nc, mask=c_ok[:, None], other=1)
        if BN:
            a = tl.load(bn_ptr + c, mask=c_ok, other=0.0)[:, None]
            b = tl.load(bn_ptr + C + c, mask=c_ok, other=0.0)[:, None]
            p = tl.load(bn_ptr + 2 * C + c, mask=c_ok, other=0.0)[:, None]
            q = tl.load(bn_ptr + 3 * C + c, mask=c_ok, other=0.0)[:, None]
        g_at = g_ptr + n * g_sn + _offsets(c, hw, W, g_sc, g_sh, g_sw, G_LAYOUT, WIDE)
        u_at = u_ptr + n * u_sn + _offsets(c, hw, W, u_sc, u_sh, u_sw, U_LAYOUT, WIDE)
        i_at = i_ptr + n * i_sn + _offsets(c, hw, W, i_sc, i_sh, i_sw, I_LAYOUT, WIDE)
        d_at = du_ptr + n * d_sn + _offsets(c, hw, W, d_sc, d_sh, d_sw, D_LAYOUT, WIDE)
    g = tl.load(g_at, mask=mask, other=0.0).to(tl.float32)
    if (NEED_Y and not FROM_OUT) or MAX or BN or L2:
        u = tl.load(u_at, mask=mask, other=0.0).to(tl.float32)
    if NEED_Y and FROM_OUT:  # relu: out > 0, as torch's threshold_backward on the result
        g = tl.where(tl.load(i_at, mask=mask, other=0.0).to(tl.float32) > 0.0, g, 0.0)
    elif NEED_Y:
        if BN:  # noqa: SIM108 (a constexpr branch)
            y = s * (a * u + b)
        else:
            y = s * u
        if HAS_IDENTITY:
            y += tl.load(i_at, mask=mask, other=0.0).to(tl.float32)
        g = g * _act_grad(y, ACT)
    du = g * s
    if MAX:  # torch.amax's rule: dz / ties at each maximum; NaN everywhere when z is NaN
        du += tl.where(u == z, dz, 0.0) / ties.to(tl.float32)
    elif L2:
        du += 2.0 * dz * u
    else:
        du += dz / HW
    if BN:
        du = a * du - p * u - q
    tl.store(d_at, du.to(du_ptr.dtype.element_ty), mask=mask)


# --- the folded BN's statistics ------------------------------------------------------------------


@triton.jit  # type: ignore[untyped-decorator]
def _plane_stats(zp_ptr, qp_ptr, k_ptr, nn, c, ok, N, C,  # type: ignore[no-untyped-def]
                 SPLITS, SQ: tl.constexpr):
    """(mean, biased variance) of X over each (n, c) plane of the (nn[:, None], c[None, :])
    tile, from the squeeze's shifted partial sums (the variance only when SQ)."""
    at = nn[:, None] * C + c[None, :]
    k = tl.load(k_ptr + at, mask=ok, other=0.0)
    d = tl.zeros(at.shape, tl.float32)  # E[X - K]
    q = tl.zeros(at.shape, tl.float32)  # E[(X - K)^2]
    for sp in range(0, SPLITS):
        d += tl.load(zp_ptr + sp * N * C + at, mask=ok, other=0.0)
        if SQ:
            q += tl.load(qp_ptr + sp * N * C + at, mask=ok, other=0.0)
    return k + d, tl.maximum(q - d * d, 0.0)


@triton.jit(do_not_specialize=["N", "C", "SPLITS", "HW"])  # type: ignore[untyped-decorator]
def _bn_stats_kernel(  # type: ignore[no-untyped-def]
    zp_ptr,  # the squeeze's partial E[X - K] (SPLITS, N, C) fp32
    qp_ptr,  # ... and E[(X - K)^2] (SPLITS, N, C) fp32 (read only when TRAINING)
    k_ptr,  # the shifts K (N, C) fp32
    w_ptr, bias_ptr,  # the BN's weight and bias (C,), any float dtype
    rm_ptr, rv_ptr,  # its running mean and variance (C,)
    nbt_ptr,  # its num_batches_tracked, int64
    rm_out_ptr, rv_out_ptr, nbt_out_ptr,  # out (when TRAINING): the updated running mean,
    # variance and count: the buffers themselves (in place) or new tensors
    z_ptr,  # out: z = mean_hw(BN(X)) = a * mean_hw(X) + b (N, C) fp32
    ab_ptr,  # out: (a, b) (2, C) fp32: BN(X) = a * X + b (for the scale pass)
    st_ptr,  # out: (mean, rstd) (2, C) fp32 (what backward keeps, as BN's own backward does)
    N, C, SPLITS,
    HW,  # H * W
    momentum, eps,
    TRAINING: tl.constexpr,  # batch statistics (and the running ones updated), else running
    BLOCK_N: tl.constexpr,  # samples per step
    BLOCK_C: tl.constexpr,  # channels per program
):
    """One program per channel block, over all samples: the BN's statistics as
    nn.BatchNorm2d computes them (biased variance to normalise; the running variance gets the
    unbiased one, momentum-weighted), from the squeeze pass's per-plane sums (the law of total
    variance over the planes: no second pass over X), then z for the excitation."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    rows = tl.arange(0, BLOCK_N)
    if TRAINING:
        total = tl.zeros((BLOCK_C,), tl.float32)
        for start in range(0, N, BLOCK_N):
            nn = start + rows
            ok = (nn < N)[:, None] & c_ok[None, :]
            m, _ = _plane_stats(zp_ptr, qp_ptr, k_ptr, nn, c, ok, N, C, SPLITS, False)
            total += tl.sum(tl.where(ok, m, 0.0), axis=0)
        mean = total / N
        spread = tl.zeros((BLOCK_C,), tl.float32)
        for start in range(0, N, BLOCK_N):
            nn = start + rows
            ok = (nn < N)[:, None] & c_ok[None, :]
            m, v = _plane_stats(zp_ptr, qp_ptr, k_ptr, nn, c, ok, N, C, SPLITS, True)
            spread += tl.sum(tl.where(ok, v + (m - mean[None, :]) * (m - mean[None, :]), 0.0),
                             axis=0)
        var = spread / N
        count = N * HW
        rm = tl.load(rm_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        rv = tl.load(rv_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        tl.store(rm_out_ptr + c, ((1.0 - momentum) * rm + momentum * mean).to(
            rm_out_ptr.dtype.element_ty), mask=c_ok)
        unbiased = var * count / (count - 1)
        tl.store(rv_out_ptr + c, ((1.0 - momentum) * rv + momentum * unbiased).to(
            rv_out_ptr.dtype.element_ty), mask=c_ok)
        if tl.program_id(0) == 0:  # no other program reads it: momentum is a number
            tl.store(nbt_out_ptr, tl.load(nbt_ptr) + 1)
    else:
        mean = tl.load(rm_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        var = tl.load(rv_ptr + c, mask=c_ok, other=1.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(var + eps)
    a = tl.load(w_ptr + c, mask=c_ok, other=0.0).to(tl.float32) * rstd
    b = tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32) - mean * a
    tl.store(ab_ptr + c, a, mask=c_ok)
    tl.store(ab_ptr + C + c, b, mask=c_ok)
    tl.store(st_ptr + c, mean, mask=c_ok)
    tl.store(st_ptr + C + c, rstd, mask=c_ok)
    for start in range(0, N, BLOCK_N):
        nn = start + rows
        ok = (nn < N)[:, None] & c_ok[None, :]
        m, _ = _plane_stats(zp_ptr, qp_ptr, k_ptr, nn, c, ok, N, C, SPLITS, False)
        tl.store(z_ptr + nn[:, None] * C + c[None, :], a[None, :] * m + b[None, :], mask=ok)


@triton.jit(do_not_specialize=["N", "C", "SPLITS", "HW"])  # type: ignore[untyped-decorator]
def _bn_bwd_kernel(  # type: ignore[no-untyped-def]
    sgp_ptr,  # partial sum_hw(dY) (SPLITS, N, C) fp32 (the backward reduce's)
    sgxp_ptr,  # partial sum_hw(dY * X) (SPLITS, N, C) fp32
    xp_ptr,  # partial sum_hw(X) / HW (SPLITS, N, C) fp32
    s_ptr,  # gate s (N, C) fp32
    dz_ptr,  # dL/dz (N, C) fp32
    bnw_ptr, bnb_ptr,  # the BN's weight and bias (C,)
    st_ptr,  # the forward's (mean, rstd) (2, C) fp32
    dw_ptr, db_ptr,  # out: the BN's weight and bias gradients (C,), their dtype
    coef_ptr,  # out: (a, b, P, Q) (4, C) fp32 for the input pass: dX = a * dU - P * X - Q
    N, C, SPLITS,
    HW,  # H * W
    TRAINING: tl.constexpr,  # the forward normalised by batch statistics
    BLOCK_N: tl.constexpr,  # samples per step
    BLOCK_C: tl.constexpr,  # channels per program
):
    """One program per channel block, over all samples: the BN's backward from per-plane sums
    alone. dU = dY * s + dz / HW (avg squeeze), so sum_hw dU = s * sum(dY) + dz and
    sum_hw dU * Xhat = rstd * (s * (sum(dY * X) - mean * sum(dY)) + dz * (mean_hw X - mean));
    dbeta and dgamma are their sums over the batch, and in training
    dX = a * (dU - dbeta / M - Xhat * dgamma / M) = a * dU - P * X - Q, M = N * H * W."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    a, b = _bn_affine(bnw_ptr, bnb_ptr, st_ptr, c, c_ok, C)
    mean = tl.load(st_ptr + c, mask=c_ok, other=0.0)
    rstd = tl.load(st_ptr + C + c, mask=c_ok, other=0.0)
    dbeta = tl.zeros((BLOCK_C,), tl.float32)
    dgam = tl.zeros((BLOCK_C,), tl.float32)  # dgamma / rstd
    for start in range(0, N, BLOCK_N):
        nn = start + tl.arange(0, BLOCK_N)
        ok = (nn < N)[:, None] & c_ok[None, :]
        at = nn[:, None] * C + c[None, :]
        sg = tl.zeros((BLOCK_N, BLOCK_C), tl.float32)
        sgx = tl.zeros((BLOCK_N, BLOCK_C), tl.float32)
        xbar = tl.zeros((BLOCK_N, BLOCK_C), tl.float32)
        for sp in range(0, SPLITS):
            sg += tl.load(sgp_ptr + sp * N * C + at, mask=ok, other=0.0)
            sgx += tl.load(sgxp_ptr + sp * N * C + at, mask=ok, other=0.0)
            xbar += tl.load(xp_ptr + sp * N * C + at, mask=ok, other=0.0)
        s = tl.load(s_ptr + at, mask=ok, other=0.0)
        dz = tl.load(dz_ptr + at, mask=ok, other=0.0)
        dbeta += tl.sum(s * sg + dz, axis=0)
        dgam += tl.sum(s * (sgx - mean[None, :] * sg) + dz * (xbar - mean[None, :]), axis=0)
    dgamma = dgam * rstd
    tl.store(dw_ptr + c, dgamma.to(dw_ptr.dtype.element_ty), mask=c_ok)
    tl.store(db_ptr + c, dbeta.to(db_ptr.dtype.element_ty), mask=c_ok)
    if TRAINING:
        count = N * HW
        p = a * rstd * dgamma / count
        q = a * dbeta / count - p * mean
    else:
        p = tl.zeros((BLOCK_C,), tl.float32)
        q = tl.zeros((BLOCK_C,), tl.float32)
    tl.store(coef_ptr + c, a, mask=c_ok)
    tl.store(coef_ptr + C + c, b, mask=c_ok)
    tl.store(coef_ptr + 2 * C + c, p, mask=c_ok)
    tl.store(coef_ptr + 3 * C + c, q, mask=c_ok)


# --- autotuned entry points (num_warps only; one config under the interpreter) ------------------

_squeeze_tuned = triton.autotune(_configs(4, 8), key=["C", "HW", "CB", "SPLITS"])(_squeeze_kernel)
_scale_tuned = triton.autotune(_configs(8, 4), key=["NUMEL", "C", "HW"])(_scale_kernel)
_bwd_reduce_tuned = triton.autotune(_configs(8, 4), key=["C", "HW", "CB", "SPLITS"])(
    _bwd_reduce_kernel)
_bwd_input_tuned = triton.autotune(_configs(8, 4), key=["NUMEL", "C", "HW"])(_bwd_input_kernel)


# --- launchers ----------------------------------------------------------------------------------


Meta = tuple[tuple[int, ...], tuple[int, ...]]  # a tensor's (shape, strides): what plans key on


def meta(t: Tensor) -> Meta:
    return tuple(t.shape), t.stride()


def layout(t: Tensor) -> tuple[int, int, int, int, int]:
    """(LAYOUT code, sn, sc, sh, sw) of a 4-D tensor for `_offsets`; codes 0-2 flatten h and w
    into one index whose stride sw carries."""
    return _layout(meta(t))


def _layout(m: Meta) -> tuple[int, int, int, int, int]:
    (_, c, h, w), (sn, sc, sh, sw) = m
    if h == 1 or w == 1 or sh == w * sw:
        shw = sh if w == 1 else sw
        if shw == 1 or h * w == 1:
            return 0, sn, sc, 0, 1
        if sc == 1 or c == 1:
            return 1, sn, 1, 0, shw
        return 2, sn, sc, 0, shw
    return 3, sn, sc, sh, sw


def wide(*tensors: Tensor) -> bool:
    """True when an element offset of one of the tensors does not fit in int32."""
    return _wide(*map(meta, tensors))


def _wide(*metas: Meta) -> bool:
    return any(sum((d - 1) * abs(st) for d, st in zip(shape, stride, strict=True))
               > _INT32_MAX or math.prod(shape) > _INT32_MAX for shape, stride in metas)


def _contiguous(m: Meta) -> bool:
    """Tensor.is_contiguous() from (shape, strides): row-major, size-1 dims anything."""
    shape, stride = m
    want = 1
    for d, st in zip(reversed(shape), reversed(stride), strict=True):
        if d != 1 and st != want:
            return False
        want *= d
    return True


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def stream_tile(c: int, hw: int, c_contiguous: bool, itemsize: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_HW) of the elementwise kernels on strided tensors: _STREAM_BYTES of U,
    long along the unit-stride axis; channels_last rows of 128 bytes (one cache line), so a
    program spans many positions and loads its per-channel values (s, dz) once for them."""
    elems = min(_STREAM_BYTES // itemsize, _STREAM_ELEMS)
    if c_contiguous:
        bc = min(_pow2(c), 128 // itemsize)
        return bc, min(_pow2(hw), max(1, elems // bc))
    bhw = min(_pow2(hw), 1024)
    return min(_pow2(c), max(1, elems // bhw)), bhw


def reduce_tile(c: int, hw: int, c_contiguous: bool, itemsize: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_HW) of the reducing kernels: _REDUCE_BYTES of U per loop step, at most
    _REDUCE_ELEMS elements."""
    elems = min(_REDUCE_BYTES // itemsize, _REDUCE_ELEMS)
    if c_contiguous:
        bc = min(_pow2(c), 64)
        return bc, min(_pow2(hw), max(1, elems // bc))
    bhw = min(_pow2(hw), 256)
    return min(_pow2(c), max(1, elems // bhw)), bhw


def splits(n: int, cb: int, hw: int, bhw: int) -> tuple[int, int]:
    """(SPLITS, SPLIT_LEN): split H*W until the reduction has _REDUCE_PROGRAMS programs, each
    split looping over at least _SPLIT_STEPS tiles; partial results are summed in order by the
    next kernel (deterministic, no atomics)."""
    steps = _cdiv(hw, bhw)
    want = min(_cdiv(_REDUCE_PROGRAMS, n * cb), max(1, steps // _SPLIT_STEPS))
    split_len = _cdiv(steps, max(want, 1)) * bhw
    return _cdiv(hw, split_len), split_len


def fc1_tiles(n: int, c: int, r: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_R, BLOCK_K) of the fc1 GEMM (`_excite_fc1_kernel`): BLOCK_M samples by
    all R fc1 outputs (up to _FC_ROWS elements) per program, so the partials are read once and
    W1 ceil(N / BLOCK_M) times (BLOCK_M = 2048 / R: 16 at R = 128, as the backward's row
    tiles), BLOCK_K channels per step at _PRODUCT."""
    br = min(_pow2(r), _FC_ROWS)
    bm = max(1, min(_pow2(n), _FC_ROWS // br))
    return bm, br, max(1, min(_pow2(c), _PRODUCT // (bm * br)))


def fc2_tiles(n: int, c: int, r: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_R, BLOCK_C, C_PER) of the fc2 GEMM (`_excite_fc2_kernel`): BLOCK_M rows
    of h (all R of them, _FC_ROWS elements at most) stay in registers while the program walks
    C_PER channels; W2 is read ceil(N / BLOCK_M) times. Channel ranges split the launch into up
    to _EXCITE_PROGRAMS programs, each at least 8 * BLOCK_M channels long so that its W2 rows
    outweigh the h rows it loads."""
    br = _pow2(r)
    bm = max(1, min(_pow2(n), _FC_ROWS // br))
    bc = max(1, min(_pow2(c), _PRODUCT // (bm * br)))
    pc = max(1, min(_cdiv(c, bc), _excite_programs() // _cdiv(n, bm), _cdiv(c, 8 * bm)))
    return bm, br, bc, _cdiv(_cdiv(c, pc), bc) * bc


def bwd_tiles(n: int, c: int, r: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_R, BLOCK_K = BLOCK_C) of `_excite_bwd_kernel`: BLOCK_M rows of pre1 and
    dh (all R, _FC_ROWS elements at most each) stay in registers; W1 and W2 are read
    ceil(N / BLOCK_M) times."""
    br = _pow2(r)
    bm = max(1, min(_pow2(n), _FC_ROWS // br))
    return bm, br, max(1, min(_pow2(c), _PRODUCT // (bm * br)))


def wgrad_tiles(n: int, c: int, r: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_R, BLOCK_C1, BLOCK_N1, BLOCK_C2, BLOCK_N2) of `_excite_wgrad_kernel`: a dW1
    program keeps two (all R, BLOCK_C1) tiles (dW1 and its W1 columns, _WGRAD_TILE / 2 elements
    each), a dW2 program one (dW2, _WGRAD_TILE), at _BWD_WARPS warps. Every program reads all
    of one (N, R) tensor, so those are read ceil(C / BLOCK_C1) + ceil(C / BLOCK_C2) times in
    all: 48 (N, R) reads, 3 (N, C)'s worth, at R = 128 and C = 2048, where 32-channel blocks of
    both made 128. BLOCK_N rows per step, _PRODUCT elements in each product tile where R and
    the block allow (one row otherwise)."""
    br, cc = _pow2(r), _pow2(c)
    bc1 = max(1, min(cc, _WGRAD_TILE // 2 // br))
    bc2 = max(1, min(cc, _WGRAD_TILE // br))
    rows = [max(1, min(_pow2(n), _PRODUCT // (br * bc))) for bc in (bc1, bc2)]
    return br, bc1, rows[0], bc2, rows[1]


def excite_bytes(n: int, c: int, r: int, splits: int, wsize: int, bias: bool,
                 squeeze_max: bool, backward: bool) -> dict[str, tuple[int, int]]:
    """Bytes each excitation launch loads and stores, as (activations, weights and biases),
    from the tiles above; `wsize` is the weights' element size, `splits` the squeeze's (or the
    backward reduce's) partials. tests/kernels_interpret_cases.py checks these against the
    interpreter's count of every load and store."""
    bsize = wsize if bias else 0
    nc, nr = n * c * 4, n * r * 4  # an (N, C) and an (N, R) fp32 tensor
    if not backward:
        bm, br, _ = fc1_tiles(n, c, r)
        combine = splits > 1  # else the partials are z (and the ties) themselves
        per_z = 2 if squeeze_max else 1  # z and the ties (int32)
        fc1 = (_cdiv(r, br) * splits * nc + combine * (per_z - 1) * splits * nc
               + combine * per_z * nc + nr,  # partials per output block; ties; z; h
               _cdiv(n, bm) * (r * c * wsize + r * bsize))
        bm, _, _, c_per = fc2_tiles(n, c, r)
        fc2 = (_cdiv(c, c_per) * nr + nc, _cdiv(n, bm) * (c * r * wsize + c * bsize))
        return {"_excite_fc1_kernel": fc1, "_excite_fc2_kernel": fc2}
    bm, _, _ = bwd_tiles(n, c, r)
    bwd = (nc + splits * nc + (splits > 1) * nc + 2 * nr,  # z, partial dpre2; dpre2, h, dpre1
           _cdiv(n, bm) * (2 * r * c * wsize + r * bsize))
    _, bc1, _, bc2, _ = wgrad_tiles(n, c, r)
    wgrad = ((_cdiv(c, bc1) + _cdiv(c, bc2)) * nr + 3 * nc,  # dpre1 or h per program; z,
             # dpre2; dz
             3 * r * c * wsize + r * bsize + c * bsize)  # W1; dW1, dW2, db1, db2
    return {"_excite_bwd_kernel": bwd, "_excite_wgrad_kernel": wgrad}


# --- plans: every launch's grid, integer arguments and constexprs, cached per shape -------------
#
# A plan depends only on shapes, strides, element sizes and the block's choices, so each is
# computed once per shape and kept (functools.lru_cache): a call then costs a dictionary lookup
# and its launches (sedsl.pytorch.kernels.launch), not the tile arithmetic and Triton's argument
# binding again (bench/se_host_overhead.py measures it).


def _tunables() -> tuple[Any, ...]:
    """The tile sizes and thresholds above (tests change some) and the interpreter switch: part
    of every plan's cache key."""
    return (_STREAM_BYTES, _STREAM_ELEMS, _REDUCE_BYTES, _REDUCE_ELEMS, _REDUCE_PROGRAMS,
            _SPLIT_STEPS, _EXCITE_PROGRAMS, _PRODUCT, _FC_ROWS, _WGRAD_TILE, _INT32_MAX,
            _FLAT_MIN_HW, _INTERPRET)


_plan = functools.lru_cache(maxsize=4096)


def elsewhere(t: Tensor) -> bool:
    """Whether t is on a GPU other than the current one (Triton launches on the current
    device: the caller switches with torch.cuda.device)."""
    return t.is_cuda and t.get_device() != torch.cuda.current_device()


@_plan
def _squeeze_plan(um: Meta, itemsize: int, is_max: bool, shift: bool, sq: bool,
                  _tun: tuple[Any, ...]) -> tuple[Launch, int]:
    """(the squeeze launch on (U, partial z, partial ties, partial squares, shifts), number of
    splits S)."""
    n, c, h, w = um[0]
    code, sn, sc, sh, sw = _layout(um)
    bc, bhw = reduce_tile(c, h * w, code == 1, itemsize)
    cb = _cdiv(c, bc)
    s, split_len = splits(n, cb, h * w, bhw)
    launch = Launch(_squeeze_tuned, s * cb * n, (n, c, h * w, w, sn, sc, sh, sw, cb, s, split_len),
                    {"U_LAYOUT": code, "MAX": is_max, "SHIFT": shift, "SQ": sq,
                     "WIDE": _wide(um), "BLOCK_C": bc, "BLOCK_HW": bhw})
    return launch, s


def _squeeze_partials(u: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """Partial squeezes (S, N, C) fp32 and, for "max", partial tie counts (S, N, C) int32."""
    launch, s = _squeeze_plan(meta(u), u.element_size(), mode == "max", False, False,
                              _tunables())
    n, c = u.shape[:2]
    zp = u.new_empty((s, n, c), dtype=torch.float32)
    cp = u.new_empty((s, n, c) if mode == "max" else (0,), dtype=torch.int32)
    launch(u, zp, cp, zp, zp)
    return zp, cp


def squeeze(u: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """(z (N, C) fp32, ties (N, C) int32 for "max", else empty) of U (N, C, H, W): the squeeze
    kernel, then the partials combined in torch (the forward combines them in
    _excite_fc1_kernel)."""
    zp, cp = _squeeze_partials(u, mode)
    if mode == "avg":
        return zp.sum(0), cp
    z = torch.where(zp.isnan().any(0), float("nan"), zp.amax(0))
    return z, torch.where(zp == z, cp, 0).sum(0, dtype=torch.int32)


Weights = tuple[tuple[int, int], int | None, tuple[int, int], int | None]  # W1, b1, W2, b2 strides


def _weights(w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None) -> Weights:
    """The weights' strides (None for an absent bias): what the excitation plans key on. W1
    and W2 may be 1x1 conv weights (R, C, 1, 1) and (C, R, 1, 1): their first two strides are
    the matrix's."""
    return ((w1.stride(0), w1.stride(1)), None if b1 is None else b1.stride(0),
            (w2.stride(0), w2.stride(1)), None if b2 is None else b2.stride(0))


@_plan
def _excite_plan(n: int, c: int, r: int, sp: int, ws: Weights, is_max: bool, excite_act: str,
                 gate: str, _tun: tuple[Any, ...]) -> tuple[Launch, Launch]:
    """The fc1 launch on (partials, partial ties, z, ties, W1, b1, h) and the fc2 launch on
    (h, W2, b2, s)."""
    (w1_sr, w1_sc), b1_s, (w2_sc, w2_sr), b2_s = ws
    bm, br, bk = fc1_tiles(n, c, r)
    rb = _cdiv(n, bm)
    fc1 = Launch(_excite_fc1_kernel, rb * _cdiv(r, br), (n, c, r, sp, w1_sr, w1_sc, b1_s or 0, rb),
                 {"MAX": is_max, "HAS_B1": b1_s is not None, "EXCITE": excite_act,
                  "BLOCK_M": bm, "BLOCK_R": br, "BLOCK_K": bk})
    bm, br, bc, c_per = fc2_tiles(n, c, r)
    rb = _cdiv(n, bm)
    fc2 = Launch(_excite_fc2_kernel, rb * _cdiv(c, c_per),
                 (n, c, r, w2_sc, w2_sr, b2_s or 0, rb, c_per),
                 {"HAS_B2": b2_s is not None, "GATE": gate, "BLOCK_M": bm, "BLOCK_R": br,
                  "BLOCK_C": bc})
    return fc1, fc2


def excite(zp: Tensor, cp: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor,
           b2: Tensor | None, squeeze_mode: str, excite_act: str,
           gate: str) -> tuple[Tensor, Tensor, Tensor]:
    """(z, ties, s) from the squeeze partials: two GEMM-tiled launches, fc1 (with the combine
    and the excite activation) and fc2 (with the gate). With one split the partials are z and
    the ties themselves (views, nothing copied)."""
    sp, n, c = zp.shape
    r = w1.shape[0]
    is_max = squeeze_mode == "max"
    fc1, fc2 = _excite_plan(n, c, r, sp, _weights(w1, b1, w2, b2), is_max, excite_act, gate,
                            _tunables())
    z = zp[0] if sp == 1 else zp.new_empty((n, c))
    cnt = (cp[0] if sp == 1 else cp.new_empty((n, c))) if is_max else cp
    h, s = zp.new_empty((n, r)), zp.new_empty((n, c))
    fc1(zp, cp, z, cnt, w1, w1 if b1 is None else b1, h)
    fc2(h, w2, w2 if b2 is None else b2, s)
    return z, cnt, s


def _excite_programs() -> int:
    """_EXCITE_PROGRAMS, or 4 under the interpreter (which runs programs one after another)."""
    return 4 if _INTERPRET else _EXCITE_PROGRAMS


def _stream_grid(um: Meta, itemsize: int,
                 flat: bool) -> tuple[int, tuple[int, int], dict[str, int]]:
    """(grid, (HB, CB), tile constexprs) of an elementwise launch over U's shape."""
    n, c, h, w = um[0]
    if flat:
        numel = n * c * h * w
        block = min(_pow2(numel), _STREAM_BYTES // itemsize, _STREAM_ELEMS)
        span = _pow2(_cdiv(block, h * w) + 1)
        return _cdiv(numel, block), (1, 1), {"FLAT_HW": h * w, "SPAN": span, "BLOCK_C": 1,
                                              "BLOCK_HW": block}
    bc, bhw = stream_tile(c, h * w, _layout(um)[0] == 1, itemsize)
    hb, cb = _cdiv(h * w, bhw), _cdiv(c, bc)
    return n * cb * hb, (hb, cb), {"FLAT_HW": 0, "SPAN": 1, "BLOCK_C": bc, "BLOCK_HW": bhw}


def _flat(*metas: Meta) -> bool:
    """Whether the elementwise kernels may index the tensors as one flat NCHW array: all
    contiguous, and planes of at least _FLAT_MIN_HW (smaller ones would touch too many
    channels per program)."""
    _, _, h, w = metas[0][0]
    return all(map(_contiguous, metas)) and h * w >= _FLAT_MIN_HW


@_plan
def _scale_plan(um: Meta, im: Meta, om: Meta, itemsize: int, has_identity: bool, bn: bool,
                act: str, _tun: tuple[Any, ...]) -> Launch:
    """The scale launch on (U, identity or U, s, BN (a, b) or s, out)."""
    n, c, h, w = um[0]
    ucode, *ust = _layout(um)
    icode, *ist = _layout(im)
    ocode, *ost = _layout(om)
    flat = _flat(um, im, om)
    grid, (hb, cb), tiles = _stream_grid(um, itemsize, flat)
    return Launch(_scale_tuned, grid, (n * c * h * w, c, h * w, w, *ust, *ist, *ost, hb, cb),
                  {"FLAT": flat, "U_LAYOUT": ucode, "I_LAYOUT": icode, "O_LAYOUT": ocode,
                   "HAS_IDENTITY": has_identity, "BN": bn, "ACT": act,
                   "WIDE": _wide(um, im, om), **tiles})


def scale(u: Tensor, s: Tensor, identity: Tensor | None, act: str,
          bn: Tensor | None = None) -> Tensor:
    """act(s[:, :, None, None] * U + identity) in U's dtype and layout; with a folded BN's
    (a, b) (2, C), U = a * X + b for u = X."""
    out = torch.empty_like(u)
    ident = identity if identity is not None else u
    launch = _scale_plan(meta(u), meta(ident), meta(out), u.element_size(),
                         identity is not None, bn is not None, act, _tunables())
    launch(u, ident, s, s if bn is None else bn, out)
    return out


def forward(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
            identity: Tensor | None, squeeze_mode: str, excite_act: str, gate: str,
            act: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The op's outputs (out, z, s, ties) by the four forward launches."""
    if elsewhere(u):
        with torch.cuda.device(u.device):
            return forward(u, w1, b1, w2, b2, identity, squeeze_mode, excite_act, gate, act)
    if EXCITATION == "torch":
        z, cnt = squeeze(u, squeeze_mode)
        with torch.autocast(u.device.type, enabled=False):  # s in fp32
            s = reference.excitation(z, w1.flatten(1), b1, w2.flatten(1), b2, excite_act, gate)
    else:
        zp, cp = _squeeze_partials(u, squeeze_mode)
        z, cnt, s = excite(zp, cp, w1, b1, w2, b2, squeeze_mode, excite_act, gate)
    return scale(u, s, identity, act), z, s, cnt


def gate_grad(s: Tensor, gate: str) -> Tensor:
    """dGATE/dx from the gate's output s, in torch (`_gate_grad` in the kernels)."""
    if gate == "none":
        return torch.ones_like(s)
    if gate == "sigmoid":
        return s * (1.0 - s)
    if gate == "tanh":
        return 1.0 - s * s
    if gate == "relu":
        return (s > 0.0).to(s.dtype)
    return ((s > 0.0) & (s < 1.0)).to(s.dtype) / 6.0


@_plan
def _reduce_plan(gm: Meta, um: Meta, im: Meta, ym: Meta, itemsize: int, has_identity: bool,
                 bn: bool, act: str, from_out: bool, gate: str, store_gy: bool,
                 _tun: tuple[Any, ...]) -> tuple[Launch, int]:
    """(the backward reduce launch on (dOut, U, identity or output or U, s, BN weight, bias,
    (mean, rstd), partial dpre2, sum(dY), sum(dY * X), mean(X), (a, b), dY or U), number of
    splits S)."""
    n, c, h, w = um[0]
    gcode, *gst = _layout(gm)
    ucode, *ust = _layout(um)
    icode, *ist = _layout(im)
    ycode, *yst = _layout(ym)
    bc, bhw = reduce_tile(c, h * w, ucode == 1, itemsize)
    cb = _cdiv(c, bc)
    sp, split_len = splits(n, cb, h * w, bhw)
    big = _wide(gm, um, im, *([ym] if store_gy else []))
    launch = Launch(_bwd_reduce_tuned, sp * cb * n,
                    (n, c, h * w, w, *gst, *ust, *ist, *yst, cb, sp, split_len),
                    {"G_LAYOUT": gcode, "U_LAYOUT": ucode, "I_LAYOUT": icode, "Y_LAYOUT": ycode,
                     "HAS_IDENTITY": has_identity, "BN": bn, "ACT": act, "FROM_OUT": from_out,
                     "GATE": gate, "STORE_GY": store_gy, "WIDE": big, "BLOCK_C": bc,
                     "BLOCK_HW": bhw})
    return launch, sp


def reduce_backward(grad: Tensor, u: Tensor, identity: Tensor | None, out: Tensor | None,
                    s: Tensor, gate: str, act: str, store_gy: bool,
                    bn: tuple[Tensor, Tensor, Tensor] | None = None
                    ) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor, Tensor, Tensor]]:
    """(partial dpre2 (S, N, C) fp32, dY when `store_gy`, and with a folded BN's (weight,
    bias, (mean, rstd)) the partial sum(dY), sum(dY * X) and mean(X) (S, N, C) and its (a, b)
    (2, C), else empty); act' from `out`, the block's output, when given (ACTS_FROM_OUTPUT),
    else from y = s * U + identity."""
    n, c = u.shape[:2]
    other = out if out is not None else identity
    gy = torch.empty_like(other if other is not None else u) if store_gy else None
    ident = other if other is not None else u
    gyt = u if gy is None else gy
    launch, sp = _reduce_plan(meta(grad), meta(u), meta(ident), meta(gyt), u.element_size(),
                              identity is not None, bn is not None, act, out is not None, gate,
                              store_gy, _tunables())
    dsp = u.new_empty((sp, n, c), dtype=torch.float32)
    size = (sp, n, c) if bn is not None else (0,)
    sums = (dsp.new_empty(size), dsp.new_empty(size), dsp.new_empty(size),
            dsp.new_empty((2, c) if bn is not None else (0,)))
    launch(grad, u, ident, s, *(bn or (s, s, s)), dsp, *sums, gyt)
    return dsp, gy, sums


@_plan
def _excite_backward_plan(n: int, c: int, r: int, sp: int, ws: Weights, excite_act: str,
                          bn: bool, _tun: tuple[Any, ...]) -> tuple[Launch, Launch]:
    """The row-block launch on (z, partial mean(X), BN (a, b), partial dpre2, W1, b1, W2, h,
    dpre1, dpre2) and the weight-gradient launch on (z, h, dpre1, dpre2, W1, dz, dW1, db1,
    dW2, db2)."""
    (w1_sr, w1_sc), b1_s, (w2_sc, w2_sr), b2_s = ws
    bm, br, bk = bwd_tiles(n, c, r)
    _, bc1, bn1, bc2, bn2 = wgrad_tiles(n, c, r)
    cb = _cdiv(c, bc1)
    rows = Launch(_excite_bwd_kernel, _cdiv(n, bm),
                  (n, c, r, sp, w1_sr, w1_sc, b1_s or 0, w2_sc, w2_sr),
                  {"HAS_B1": b1_s is not None, "BN": bn, "EXCITE": excite_act, "BLOCK_M": bm,
                   "BLOCK_R": br, "BLOCK_K": bk, "BLOCK_C": bk},
                  # with BN (z recombined from partials), 4 warps spilled 8 bytes at 2 x 128
                  # rows (sm_90, C = 1823): 8 warps, 64 registers, none
                  {"num_warps": _BWD_WARPS if bm * br >= 1024 or bn else 4})
    wgrad = Launch(_excite_wgrad_kernel, cb + _cdiv(c, bc2), (n, c, r, w1_sr, w1_sc, cb),
                   {"HAS_B1": b1_s is not None, "HAS_B2": b2_s is not None, "BLOCK_R": br,
                    "BLOCK_C1": bc1, "BLOCK_N1": bn1, "BLOCK_C2": bc2, "BLOCK_N2": bn2},
                   {"num_warps": _BWD_WARPS})
    return rows, wgrad


def excite_backward(z: Tensor, dsp: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor,
                    b2: Tensor | None, excite_act: str,
                    bn: tuple[Tensor, Tensor] | None = None
                    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor | None]:
    """(dz, dW1, db1, dW2, db2) from the partial dpre2: two launches, per row block (fc1
    recomputed, dpre2 back through fc2 and excite to dpre1) and per channel block (dz and the
    weight gradients). With a folded BN, `bn` = (partial mean(X), (a, b)) and z is an
    output: the row-block launch computes it from them."""
    n, c = z.shape
    r = w1.shape[0]
    rows, wgrad = _excite_backward_plan(n, c, r, dsp.shape[0], _weights(w1, b1, w2, b2),
                                        excite_act, bn is not None, _tunables())
    dz = z.new_empty((n, c))
    d2 = dsp[0] if dsp.shape[0] == 1 else z.new_empty((n, c))  # one split: dpre2 itself
    h, d1 = z.new_empty((n, r)), z.new_empty((n, r))
    dw1 = w1.new_empty((r, c))
    dw2 = w2.new_empty((c, r))
    db1 = None if b1 is None else b1.new_empty((r,))
    db2 = None if b2 is None else b2.new_empty((c,))
    rows(z, *(bn or (z, z)), dsp, w1, w1 if b1 is None else b1, w2, h, d1, d2)
    wgrad(z, h, d1, d2, w1, dz, dw1, dw1 if db1 is None else db1, dw2,
          dw2 if db2 is None else db2)
    return dz, dw1, db1, dw2, db2


@_plan
def _input_plan(gm: Meta, um: Meta, im: Meta, dm: Meta, itemsize: int, has_identity: bool,
                bn: bool, act: str, from_out: bool, is_max: bool, is_l2: bool,
                _tun: tuple[Any, ...]) -> Launch:
    """The input-gradient launch on (g, U, identity or output or U, s, dz, z, ties or dz,
    BN coefficients (a, b, P, Q) or s, dU)."""
    n, c, h, w = um[0]
    gcode, *gst = _layout(gm)
    ucode, *ust = _layout(um)
    icode, *ist = _layout(im)
    dcode, *dst = _layout(dm)
    flat = _flat(gm, um, im, dm)
    grid, (hb, cb), tiles = _stream_grid(um, itemsize, flat)
    return Launch(_bwd_input_tuned, grid,
                  (n * c * h * w, c, h * w, w, *gst, *ust, *ist, *dst, hb, cb),
                  {"FLAT": flat, "G_LAYOUT": gcode, "U_LAYOUT": ucode, "I_LAYOUT": icode,
                   "D_LAYOUT": dcode, "NEED_Y": act != "none", "HAS_IDENTITY": has_identity,
                   "BN": bn, "ACT": act, "FROM_OUT": from_out, "MAX": is_max, "L2": is_l2,
                   "WIDE": _wide(gm, um, im, dm), **tiles})


def input_backward(g: Tensor, u: Tensor, identity: Tensor | None, s: Tensor, dz: Tensor,
                   z: Tensor, ties: Tensor, squeeze_mode: str, act: str,
                   out: Tensor | None = None, bn: Tensor | None = None) -> Tensor:
    """dU (U's dtype and layout) from g = dOut when act != "none" (act' from `out` when given,
    else from y = s * U + identity), else g = dY; squeeze_mode "l2": z = sum_hw U^2 (GCT); with
    a folded BN's coefficients (a, b, P, Q) (4, C), dX = a * dU - P * X - Q for u = X."""
    du = torch.empty_like(u)
    other = out if out is not None else identity
    ident = other if other is not None else u
    is_max = squeeze_mode == "max"
    launch = _input_plan(meta(g), meta(u), meta(ident), meta(du), u.element_size(),
                         identity is not None, bn is not None, act, out is not None, is_max,
                         squeeze_mode == "l2", _tunables())
    launch(g, u, ident, s, dz, z, ties if is_max else dz, s if bn is None else bn, du)
    return du


def backward(grad: Tensor, u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor,
             b2: Tensor | None, identity: Tensor | None, out: Tensor | None, z: Tensor,
             s: Tensor, idx: Tensor, grad_z: Tensor | None, grad_s: Tensor | None,
             squeeze_mode: str, excite_act: str, gate: str, act: str,
             has_identity: bool) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None,
                                          Tensor, Tensor | None]:
    """(dU, dIdentity, dW1, db1, dW2, db2); dIdentity = dY when the block has an identity
    (`has_identity`) and an activation. act's derivative comes from `out`, the block's output,
    for reference.ACTS_FROM_OUTPUT (then `identity` is None), else from y = s * U + identity
    (`reference.for_act_grad`); `idx` is the tie count of the max squeeze."""
    if elsewhere(u):
        with torch.cuda.device(u.device):
            return backward(grad, u, w1, b1, w2, b2, identity, out, z, s, idx, grad_z, grad_s,
                            squeeze_mode, excite_act, gate, act, has_identity)
    store_gy = has_identity and act != "none"
    dsp, gy, _ = reduce_backward(grad, u, identity, out, s, gate, act, store_gy)
    if grad_s is not None:  # only when s itself is used: autograd passes None otherwise
        dsp[0] += grad_s * gate_grad(s, gate)
    dz, dw1, db1, dw2, db2 = excite_backward(z, dsp, w1, b1, w2, b2, excite_act)
    if grad_z is not None:
        dz += grad_z
    if gy is not None:  # dY is stored: the input pass needs neither the identity nor act'
        du = input_backward(gy, u, None, s, dz, z, idx, squeeze_mode, "none")
    else:
        du = input_backward(grad, u, identity, s, dz, z, idx, squeeze_mode, act, out)
    return du, gy, dw1, db1, dw2, db2


# --- the SE block with the BatchNorm before it folded in ------------------------------------------
#
# X (the conv output) -> BN -> U -> SE (avg squeeze) [-> + identity [-> act]]: the squeeze pass
# over X also gives the BN's per-plane statistics; one small launch turns them into the BN's
# scale and shift (and updates its running statistics); the scale pass applies BN on the fly.
# Backward, the reduce pass keeps sum(dY) and sum(dY * X) per plane, from which one small
# launch gives dgamma, dbeta and the coefficients of dX = a * dU - P * X - Q. Nothing the size
# of U is stored: the op saves X (which the BN saves anyway) and O(N * C) vectors.


def _bn_tiles(n: int, c: int) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_C) of the BN statistics kernels: 64 channels a program (C / 64
    programs, each over the whole batch), 16 samples a step."""
    return max(1, min(_pow2(n), 16)), max(1, min(_pow2(c), 64))


@_plan
def _bn_stats_plan(n: int, c: int, sp: int, hw: int, momentum: float, eps: float,
                   training: bool, _tun: tuple[Any, ...]) -> Launch:
    """The statistics launch on (partials, squares, shifts, weight, bias, running mean,
    variance and count, their updates, z, (a, b), (mean, rstd))."""
    bn_, bc = _bn_tiles(n, c)
    return Launch(_bn_stats_kernel, _cdiv(c, bc), (n, c, sp, hw, momentum, eps),
                  {"TRAINING": training, "BLOCK_N": bn_, "BLOCK_C": bc})


@_plan
def _bn_bwd_plan(n: int, c: int, sp: int, hw: int, training: bool,
                 _tun: tuple[Any, ...]) -> Launch:
    """The BN backward launch on (partial sum(dY), sum(dY * X), mean(X), s, dz, weight, bias,
    (mean, rstd), dgamma, dbeta, coefficients)."""
    bn_, bc = _bn_tiles(n, c)
    return Launch(_bn_bwd_kernel, _cdiv(c, bc), (n, c, sp, hw),
                  {"TRAINING": training, "BLOCK_N": bn_, "BLOCK_C": bc})


def bn_forward(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor,
               running_var: Tensor, num_batches_tracked: Tensor, w1: Tensor, b1: Tensor | None,
               w2: Tensor, b2: Tensor | None, identity: Tensor | None, training: bool,
               momentum: float, eps: float, excite_act: str, gate: str, act: str,
               updated: tuple[Tensor, Tensor, Tensor] | None = None
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(out, z, s, (mean, rstd) (2, C)) of act(SE(BN(X)) + identity), avg squeeze, in five
    launches. In training the updated running mean, variance and count go to `updated` (new
    tensors), or into the BN's buffers in place when it is None."""
    if elsewhere(x):
        with torch.cuda.device(x.device):
            return bn_forward(x, weight, bias, running_mean, running_var, num_batches_tracked,
                              w1, b1, w2, b2, identity, training, momentum, eps, excite_act,
                              gate, act, updated)
    n, c, h, w = x.shape
    launch, sp = _squeeze_plan(meta(x), x.element_size(), False, True, training, _tunables())
    zp = x.new_empty((sp, n, c), dtype=torch.float32)
    qp = zp.new_empty((sp, n, c) if training else (0,))
    kp = zp.new_empty((n, c))
    launch(x, zp, zp, qp, kp)
    z, ab, st = zp.new_empty((n, c)), zp.new_empty((2, c)), zp.new_empty((2, c))
    state = (running_mean, running_var, num_batches_tracked)
    stats = _bn_stats_plan(n, c, sp, h * w, momentum, eps, training, _tunables())
    stats(zp, qp, kp, weight, bias, *state, *(updated or state), z, ab, st)
    _, _, s = excite(z[None], zp, w1, b1, w2, b2, "avg", excite_act, gate)
    return scale(x, s, identity, act, ab), z, s, st


def bn_backward(grad: Tensor, x: Tensor, weight: Tensor, bias: Tensor, w1: Tensor,
                b1: Tensor | None, w2: Tensor, b2: Tensor | None, identity: Tensor | None,
                out: Tensor | None, s: Tensor, stats: Tensor, grad_z: Tensor | None,
                grad_s: Tensor | None, training: bool, excite_act: str, gate: str, act: str,
                has_identity: bool) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor,
                                             Tensor | None, Tensor, Tensor | None]:
    """(dX, dIdentity, dgamma, dbeta, dW1, db1, dW2, db2) of `bn_forward` from X, s and the
    BN's (mean, rstd), five launches: z and the plane means are recomputed in the reduce pass
    (its sums of X), U = a * X + b wherever it is needed; act' from `out` or from y
    recomputed, as in `backward`."""
    if elsewhere(x):
        with torch.cuda.device(x.device):
            return bn_backward(grad, x, weight, bias, w1, b1, w2, b2, identity, out, s, stats,
                               grad_z, grad_s, training, excite_act, gate, act, has_identity)
    n, c, h, w = x.shape
    store_gy = has_identity and act != "none"
    dsp, gy, (sgp, sgxp, xp, ab) = reduce_backward(grad, x, identity, out, s, gate, act,
                                                   store_gy, (weight, bias, stats))
    if grad_s is not None:
        dsp[0] += grad_s * gate_grad(s, gate)
    z = s.new_empty((n, c))  # written by the row-block launch
    dz, dw1, db1, dw2, db2 = excite_backward(z, dsp, w1, b1, w2, b2, excite_act, (xp, ab))
    if grad_z is not None:
        dz += grad_z
    dgamma, dbeta, coef = weight.new_empty((c,)), weight.new_empty((c,)), s.new_empty((4, c))
    _bn_bwd_plan(n, c, dsp.shape[0], h * w, training, _tunables())(
        sgp, sgxp, xp, s, dz, weight, bias, stats, dgamma, dbeta, coef)
    if gy is not None:
        dx = input_backward(gy, x, None, s, dz, z, dz, "avg", "none", None, coef)
    else:
        dx = input_backward(grad, x, identity, s, dz, z, dz, "avg", act, out, coef)
    return dx, gy, dgamma, dbeta, dw1, db1, dw2, db2


# --- the channel-attention family: a 1-D convolution over channels as the transform (ECA) ---------
#
# ECA (Wang et al., 2020; timm's EcaModule / CecaModule) replaces the SE block's MLP by a 1-D
# convolution of size k over the squeezed vector, without bias: s = gate(conv1d(z, w)), zero or
# circular padding. The statistic (the squeeze kernel), the gate and the apply pass (the scale
# kernel, with the shortcut add and activation) are the SE block's; only the transform differs,
# so it is one kernel each way here: forward 3 launches, backward 3 (and a sum of k partials).


@triton.jit  # type: ignore[untyped-decorator]
def _shifted(v_ptr, m, c, shift, ok, N, C, SPLITS,  # type: ignore[no-untyped-def]
             CIRCULAR: tl.constexpr):
    """v[m, c + shift] summed over SPLITS partials (SPLITS, N, C): 0 outside [0, C) (zero
    padding), or the channel index taken mod C (circular)."""
    idx = c + shift
    if CIRCULAR:
        idx = (idx % C + C) % C
        inside = ok
    else:
        inside = ok & (idx >= 0)[None, :] & (idx < C)[None, :]
    at = m[:, None] * C + idx[None, :]
    acc = tl.zeros(at.shape, tl.float32)
    for sp in range(0, SPLITS):
        acc += tl.load(v_ptr + sp * N * C + at, mask=inside, other=0.0)
    return acc


@triton.jit(do_not_specialize=["N", "C", "SPLITS"])  # type: ignore[untyped-decorator]
def _channel_conv_kernel(  # type: ignore[no-untyped-def]
    zp_ptr,  # the squeeze's partial means (SPLITS, N, C) fp32
    w_ptr,  # the convolution's weight (K,), any float dtype
    z_ptr,  # out: z (N, C) fp32 (written only when SPLITS > 1: else the partials are z)
    s_ptr,  # out: s = GATE(conv1d(z, w)) (N, C) fp32
    N, C, SPLITS,
    K: tl.constexpr,  # kernel size (odd)
    CIRCULAR: tl.constexpr,  # circular padding (CecaModule), else zero padding (EcaModule)
    GATE: tl.constexpr,  # the gate's name
    HAS_W: tl.constexpr,  # False: no weight (K = 1, w = 1): s = GATE(z), Gather-Excite's mean
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_C: tl.constexpr,  # channels per program
):
    """One program per (row block, channel block): s = GATE(sum_j w[j] z[:, c + j - K // 2]),
    reading the (K - 1)-channel halo of its block from the partials."""
    pid = tl.program_id(0)
    cb = tl.cdiv(C, BLOCK_C)
    m = (pid // cb) * BLOCK_M + tl.arange(0, BLOCK_M)
    c = (pid % cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = (m < N)[:, None] & (c < C)[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_C), tl.float32)
    for j in tl.static_range(K):
        tap = _shifted(zp_ptr, m, c, j - K // 2, ok, N, C, SPLITS, CIRCULAR)
        if HAS_W:
            tap = tl.load(w_ptr + j).to(tl.float32) * tap
        acc += tap
    at = m[:, None] * C + c[None, :]
    if SPLITS > 1:
        tl.store(z_ptr + at, _shifted(zp_ptr, m, c, 0, ok, N, C, SPLITS, CIRCULAR), mask=ok)
    tl.store(s_ptr + at, _act(acc, GATE), mask=ok)


@triton.jit(do_not_specialize=["N", "C", "SPLITS"])  # type: ignore[untyped-decorator]
def _channel_conv_bwd_kernel(  # type: ignore[no-untyped-def]
    dsp_ptr,  # partial dpre = GATE'(s) * ds (SPLITS, N, C) fp32 (the backward reduce's)
    z_ptr,  # z (N, C) fp32
    w_ptr,  # the weight (K,)
    dz_ptr,  # out: dL/dz = sum_j w[j] dpre[:, c - j + K // 2] (N, C) fp32
    dwp_ptr,  # out: this program's share of dL/dw (programs, K) fp32
    N, C, SPLITS,
    K: tl.constexpr,
    CIRCULAR: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,  # >= K, a power of 2
):
    """One program per (row block, channel block): dz (the transposed convolution, same
    padding) and the program's partial weight gradient sum_(n, c) dpre[n, c] z[n, c + j - K // 2],
    summed over programs in order by the caller (deterministic, no atomics)."""
    pid = tl.program_id(0)
    cb = tl.cdiv(C, BLOCK_C)
    m = (pid // cb) * BLOCK_M + tl.arange(0, BLOCK_M)
    c = (pid % cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = (m < N)[:, None] & (c < C)[None, :]
    at = m[:, None] * C + c[None, :]
    dpre = _shifted(dsp_ptr, m, c, 0, ok, N, C, SPLITS, CIRCULAR)
    dz = tl.zeros((BLOCK_M, BLOCK_C), tl.float32)
    taps = tl.arange(0, BLOCK_K)
    dw = tl.zeros((BLOCK_K,), tl.float32)
    for j in tl.static_range(K):
        w = tl.load(w_ptr + j).to(tl.float32)
        dz += w * _shifted(dsp_ptr, m, c, K // 2 - j, ok, N, C, SPLITS, CIRCULAR)
        part = tl.sum(tl.sum(dpre * _shifted(z_ptr, m, c, j - K // 2, ok, N, C, 1, CIRCULAR),
                             axis=1), axis=0)
        dw += tl.where(taps == j, part, 0.0)
    tl.store(dz_ptr + at, dz, mask=ok)
    tl.store(dwp_ptr + pid * K + taps, dw, mask=taps < K)


def _conv_tiles(n: int, c: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_C) of the channel convolution kernels: up to 1024 (N, C) entries a
    program, channels first."""
    bc = min(_pow2(c), 1024)
    return max(1, min(_pow2(n), 1024 // bc)), bc


@_plan
def _channel_conv_plan(n: int, c: int, sp: int, k: int, circular: bool, gate: str,
                       _tun: tuple[Any, ...]) -> Launch:
    """The forward launch on (partials, w, z, s); k = 0: no weight, s = gate(z)."""
    bm, bc = _conv_tiles(n, c)
    return Launch(_channel_conv_kernel, _cdiv(n, bm) * _cdiv(c, bc), (n, c, sp),
                  {"K": max(k, 1), "CIRCULAR": circular, "GATE": gate, "HAS_W": k > 0,
                   "BLOCK_M": bm, "BLOCK_C": bc})


@_plan
def _channel_conv_bwd_plan(n: int, c: int, sp: int, k: int, circular: bool,
                           _tun: tuple[Any, ...]) -> tuple[Launch, int]:
    """(the backward launch on (partial dpre, z, w, dz, partial dw), programs)."""
    bm, bc = _conv_tiles(n, c)
    programs = _cdiv(n, bm) * _cdiv(c, bc)
    return Launch(_channel_conv_bwd_kernel, programs, (n, c, sp),
                  {"K": k, "CIRCULAR": circular, "BLOCK_M": bm, "BLOCK_C": bc,
                   "BLOCK_K": _pow2(k)}), programs


def eca_forward(u: Tensor, w: Tensor, identity: Tensor | None, circular: bool, gate: str,
                act: str) -> tuple[Tensor, Tensor, Tensor]:
    """(out, z, s) of act(U * gate(conv1d(mean_hw U, w)) + identity): three launches."""
    if elsewhere(u):
        with torch.cuda.device(u.device):
            return eca_forward(u, w, identity, circular, gate, act)
    n, c = u.shape[:2]
    zp, _ = _squeeze_partials(u, "avg")
    sp = zp.shape[0]
    z = zp[0] if sp == 1 else zp.new_empty((n, c))
    s = zp.new_empty((n, c))
    _channel_conv_plan(n, c, sp, w.numel(), circular, gate, _tunables())(zp, w, z, s)
    return scale(u, s, identity, act), z, s


def eca_backward(grad: Tensor, u: Tensor, w: Tensor, identity: Tensor | None,
                 out: Tensor | None, z: Tensor, s: Tensor, grad_z: Tensor | None,
                 grad_s: Tensor | None, circular: bool, gate: str, act: str,
                 has_identity: bool) -> tuple[Tensor, Tensor | None, Tensor]:
    """(dU, dIdentity, dw) of `eca_forward`; act' from `out` or from y, as in `backward`."""
    if elsewhere(u):
        with torch.cuda.device(u.device):
            return eca_backward(grad, u, w, identity, out, z, s, grad_z, grad_s, circular,
                                gate, act, has_identity)
    n, c = u.shape[:2]
    store_gy = has_identity and act != "none"
    dsp, gy, _ = reduce_backward(grad, u, identity, out, s, gate, act, store_gy)
    if grad_s is not None:
        dsp[0] += grad_s * gate_grad(s, gate)
    launch, programs = _channel_conv_bwd_plan(n, c, dsp.shape[0], w.numel(), circular,
                                              _tunables())
    dz, dwp = z.new_empty((n, c)), z.new_empty((programs, w.numel()))
    launch(dsp, z, w, dz, dwp)
    if grad_z is not None:
        dz += grad_z
    dw = dwp.sum(0).to(w.dtype).view(w.shape)  # in program order: deterministic
    if gy is not None:
        du = input_backward(gy, u, None, s, dz, z, dz, "avg", "none")
    else:
        du = input_backward(grad, u, identity, s, dz, z, dz, "avg", act, out)
    return du, gy, dw


# --- Gather-Excite's parameter-free form: s = gate(mean_hw U) -----------------------------------
#
# No transform at all: the channel convolution's kernel without a weight computes s = gate(z)
# (and combines the partials into z), the rest is ECA's. Forward 3 launches; backward 2 (the
# reduce pass's dpre is dz, summed over its splits) and that sum when H*W was split.


def ge_forward(u: Tensor, identity: Tensor | None, gate: str,
               act: str) -> tuple[Tensor, Tensor, Tensor]:
    """(out, z, s) of act(U * gate(mean_hw U) + identity): three launches."""
    if elsewhere(u):
        with torch.cuda.device(u.device):
            return ge_forward(u, identity, gate, act)
    n, c = u.shape[:2]
    zp, _ = _squeeze_partials(u, "avg")
    sp = zp.shape[0]
    z = zp[0] if sp == 1 else zp.new_empty((n, c))
    s = zp.new_empty((n, c))
    _channel_conv_plan(n, c, sp, 0, False, gate, _tunables())(zp, zp, z, s)
    return scale(u, s, identity, act), z, s


def ge_backward(grad: Tensor, u: Tensor, identity: Tensor | None, out: Tensor | None,
                z: Tensor, s: Tensor, grad_z: Tensor | None, grad_s: Tensor | None, gate: str,
                act: str, has_identity: bool) -> tuple[Tensor, Tensor | None]:
    """(dU, dIdentity) of `ge_forward`; act' from `out` or from y, as in `backward`."""
    if elsewhere(u):
        with torch.cuda.device(u.device):
            return ge_backward(grad, u, identity, out, z, s, grad_z, grad_s, gate, act,
                               has_identity)
    store_gy = has_identity and act != "none"
    dsp, gy, _ = reduce_backward(grad, u, identity, out, s, gate, act, store_gy)
    if grad_s is not None:
        dsp[0] += grad_s * gate_grad(s, gate)
    dz = dsp[0] if dsp.shape[0] == 1 else dsp.sum(0)  # in split order: deterministic
    if grad_z is not None:
        dz = dz + grad_z
    if gy is not None:
        du = input_backward(gy, u, None, s, dz, z, dz, "avg", "none")
    else:
        du = input_backward(grad, u, identity, s, dz, z, dz, "avg", act, out)
    return du, gy


# --- GCT: the L2 embedding, normalised across channels ------------------------------------------
#
# z = sum_hw U^2 per (n, c) (the squeeze kernel's sum of squares), then per sample
# emb = alpha * sqrt(z + eps), t = emb * gamma / sqrt(mean_c emb^2 + eps) + beta and
# s = 1 + GATE(t) (official GCT: 1 + tanh). The cross-channel mean makes the transform a
# per-sample one: `_gct_kernel` takes one sample a program, two loops over its channels.
# Backward: the reduce pass with no gate derivative (dpre = ds), `_gct_bwd_kernel` (three loops
# a sample: the mean, the normalisation's gradient through it, then dz and the per-sample
# parameter gradients, summed over the batch in order by torch), and the input pass with
# squeeze'(dz) = 2 dz U. Forward 3 launches, backward 3 (and the sum of the parameter shares).


@triton.jit  # type: ignore[untyped-decorator]
def _gct_embedding(qp_ptr, z_ptr, a_ptr, n, c, ok, N, C, SPLITS, HW, eps,  # type: ignore[no-untyped-def]
                   FROM_Z: tl.constexpr):
    """(z, sqrt(z + eps), emb) of channels c of sample n: z from the squeeze's partial
    sum(U^2) / HW (SPLITS, N, C), or read back (FROM_Z)."""
    if FROM_Z:
        z = tl.load(z_ptr + n * C + c, mask=ok, other=0.0)
    else:
        z = tl.zeros(c.shape, tl.float32)
        for sp in range(0, SPLITS):
            z += tl.load(qp_ptr + (sp * N + n) * C + c, mask=ok, other=0.0)
        z = z * HW
    r = tl.sqrt(z + eps)
    emb = tl.load(a_ptr + c, mask=ok, other=0.0).to(tl.float32) * r
    return z, r, tl.where(ok, emb, 0.0)


@triton.jit(do_not_specialize=["N", "C", "SPLITS", "HW"])  # type: ignore[untyped-decorator]
def _gct_kernel(  # type: ignore[no-untyped-def]
    qp_ptr,  # the squeeze's partial sum(U^2) / HW (SPLITS, N, C) fp32
    a_ptr, g_ptr, b_ptr,  # alpha, gamma, beta (C,), any float dtype
    z_ptr,  # out: z = sum_hw U^2 (N, C) fp32
    s_ptr,  # out: s = 1 + GATE(t) (N, C) fp32
    N, C, SPLITS, HW,
    eps,  # GCT's epsilon (in the root of the embedding and of the mean square)
    GATE: tl.constexpr,  # the gate's name
    BLOCK_C: tl.constexpr,  # channels per loop step
):
    """One program per sample: the mean over channels of emb^2, then s."""
    n = tl.program_id(0).to(tl.int64)
    lanes = tl.arange(0, BLOCK_C)
    acc = tl.zeros((BLOCK_C,), tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + lanes
        ok = c < C
        z, _, emb = _gct_embedding(qp_ptr, z_ptr, a_ptr, n, c, ok, N, C, SPLITS, HW, eps, False)
        tl.store(z_ptr + n * C + c, z, mask=ok)
        acc += emb * emb
    q = tl.sqrt(tl.sum(acc, axis=0) / C + eps)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + lanes
        ok = c < C
        _, _, emb = _gct_embedding(qp_ptr, z_ptr, a_ptr, n, c, ok, N, C, SPLITS, HW, eps, False)
        gamma = tl.load(g_ptr + c, mask=ok, other=0.0).to(tl.float32)
        beta = tl.load(b_ptr + c, mask=ok, other=0.0).to(tl.float32)
        tl.store(s_ptr + n * C + c, 1.0 + _act(emb * (gamma / q) + beta, GATE), mask=ok)


@triton.jit  # type: ignore[untyped-decorator]
def _gct_dt(dsp_ptr, s_ptr, n, c, ok, N, C, SPLITS,  # type: ignore[no-untyped-def]
            GATE: tl.constexpr):
    """dL/dt of channels c of sample n: ds (the partials summed) * GATE'(t), from s - 1."""
    ds = tl.zeros(c.shape, tl.float32)
    for sp in range(0, SPLITS):
        ds += tl.load(dsp_ptr + (sp * N + n) * C + c, mask=ok, other=0.0)
    return ds * _gate_grad(tl.load(s_ptr + n * C + c, mask=ok, other=1.0) - 1.0, GATE)


@triton.jit(do_not_specialize=["N", "C", "SPLITS"])  # type: ignore[untyped-decorator]
def _gct_bwd_kernel(  # type: ignore[no-untyped-def]
    dsp_ptr,  # partial ds = sum_hw dY * U (SPLITS, N, C) fp32 (the backward reduce's)
    z_ptr,  # z (N, C) fp32
    s_ptr,  # s = 1 + GATE(t) (N, C) fp32
    a_ptr, g_ptr, b_ptr,  # alpha, gamma, beta (C,)
    dz_ptr,  # out: dL/dz (N, C) fp32
    dp_ptr,  # out: this sample's share of dalpha, dgamma, dbeta (3, N, C) fp32
    N, C, SPLITS,
    eps,
    GATE: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """One program per sample: dt = ds * GATE'(t) (from s - 1), then back through the
    normalisation (its mean square couples the channels) and the embedding to dz."""
    n = tl.program_id(0).to(tl.int64)
    lanes = tl.arange(0, BLOCK_C)
    acc = tl.zeros((BLOCK_C,), tl.float32)  # emb^2
    for c0 in range(0, C, BLOCK_C):
        c = c0 + lanes
        ok = c < C
        _, _, emb = _gct_embedding(z_ptr, z_ptr, a_ptr, n, c, ok, N, C, 1, 1, eps, True)
        acc += emb * emb
    q = tl.sqrt(tl.sum(acc, axis=0) / C + eps)
    acc = tl.zeros((BLOCK_C,), tl.float32)  # dt * emb * gamma
    for c0 in range(0, C, BLOCK_C):
        c = c0 + lanes
        ok = c < C
        _, _, emb = _gct_embedding(z_ptr, z_ptr, a_ptr, n, c, ok, N, C, 1, 1, eps, True)
        dt = _gct_dt(dsp_ptr, s_ptr, n, c, ok, N, C, SPLITS, GATE)
        gamma = tl.load(g_ptr + c, mask=ok, other=0.0).to(tl.float32)
        acc += tl.where(ok, dt * emb * gamma, 0.0)
    dm = -tl.sum(acc, axis=0) / (2.0 * q * q * q)  # dL/d mean_c(emb^2)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + lanes
        ok = c < C
        _, r, emb = _gct_embedding(z_ptr, z_ptr, a_ptr, n, c, ok, N, C, 1, 1, eps, True)
        dt = _gct_dt(dsp_ptr, s_ptr, n, c, ok, N, C, SPLITS, GATE)
        tl.store(dp_ptr + 2 * N * C + n * C + c, dt, mask=ok)  # dbeta's share: dt itself
        alpha = tl.load(a_ptr + c, mask=ok, other=0.0).to(tl.float32)
        gamma = tl.load(g_ptr + c, mask=ok, other=0.0).to(tl.float32)
        demb = dt * gamma / q + dm * 2.0 * emb / C
        tl.store(dp_ptr + n * C + c, demb * r, mask=ok)
        tl.store(dp_ptr + N * C + n * C + c, dt * emb / q, mask=ok)
        tl.store(dz_ptr + n * C + c, demb * alpha / (2.0 * r), mask=ok)


def _gct_tile(c: int) -> int:
    """Channels per loop step of the GCT kernels."""
    return min(_pow2(c), 1024)


@_plan
def _gct_plan(n: int, c: int, sp: int, hw: int, eps: float, gate: str,
              _tun: tuple[Any, ...]) -> Launch:
    """The forward launch on (partial sum of squares, alpha, gamma, beta, z, s)."""
    return Launch(_gct_kernel, n, (n, c, sp, hw, eps), {"GATE": gate, "BLOCK_C": _gct_tile(c)})


@_plan
def _gct_bwd_plan(n: int, c: int, sp: int, eps: float, gate: str,
                  _tun: tuple[Any, ...]) -> Launch:
    """The backward launch on (partial ds, z, s, alpha, gamma, beta, dz, parameter shares)."""
    return Launch(_gct_bwd_kernel, n, (n, c, sp, eps), {"GATE": gate, "BLOCK_C": _gct_tile(c)})


def gct_forward(u: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor, identity: Tensor | None,
                eps: float, gate: str, act: str) -> tuple[Tensor, Tensor, Tensor]:
    """(out, z, s) of act(U * (1 + gate(GCT's normalised embedding)) + identity): three
    launches."""
    if elsewhere(u):
        with torch.cuda.device(u.device):
            return gct_forward(u, alpha, gamma, beta, identity, eps, gate, act)
    n, c, h, w = u.shape
    launch, sp = _squeeze_plan(meta(u), u.element_size(), False, False, True, _tunables())
    zp = u.new_empty((sp, n, c), dtype=torch.float32)
    qp = torch.empty_like(zp)
    launch(u, zp, zp, qp, zp)
    z, s = zp.new_empty((n, c)), zp.new_empty((n, c))
    _gct_plan(n, c, sp, h * w, float(eps), gate, _tunables())(qp, alpha, gamma, beta, z, s)
    return scale(u, s, identity, act), z, s


def gct_backward(grad: Tensor, u: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor,
                 identity: Tensor | None, out: Tensor | None, z: Tensor, s: Tensor,
                 grad_z: Tensor | None, grad_s: Tensor | None, eps: float, gate: str, act: str,
                 has_identity: bool) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor]:
    """(dU, dIdentity, dalpha, dgamma, dbeta) of `gct_forward`; act' from `out` or from y, as
    in `backward`."""
    if elsewhere(u):
        with torch.cuda.device(u.device):
            return gct_backward(grad, u, alpha, gamma, beta, identity, out, z, s, grad_z,
                                grad_s, eps, gate, act, has_identity)
    n, c = u.shape[:2]
    store_gy = has_identity and act != "none"
    dsp, gy, _ = reduce_backward(grad, u, identity, out, s, "none", act, store_gy)
    if grad_s is not None:
        dsp[0] += grad_s
    dz, dp = z.new_empty((n, c)), z.new_empty((3, n, c))
    _gct_bwd_plan(n, c, dsp.shape[0], float(eps), gate, _tunables())(
        dsp, z, s, alpha, gamma, beta, dz, dp)
    if grad_z is not None:
        dz += grad_z
    dalpha, dgamma, dbeta = (g.to(p.dtype).view(p.shape)
                             for g, p in zip(dp.sum(1), (alpha, gamma, beta), strict=True))
    if gy is not None:
        du = input_backward(gy, u, None, s, dz, z, dz, "l2", "none")
    else:
        du = input_backward(grad, u, identity, s, dz, z, dz, "l2", act, out)
    return du, gy, dalpha, dgamma, dbeta


# --- the generic transform: statistic and apply kernels, the transform in torch between them -----
#
# sedsl::channel_stats and sedsl::channel_apply (sedsl.pytorch.kernels.steps_op): the squeeze
# kernel gives the statistic (the mean; or with its shifted sums, the mean and the unbiased
# std, SRM's), the plain lowering's own modules compute s from it in torch, and the scale kernel
# applies it with the shortcut add and the activation. Backward: the reduce pass (ds, with no gate
# derivative: the gate is one of the torch modules) and the input pass (dU = dY * s) for the
# apply; for the std, one input pass dU = u * dstd / ((HW - 1) std) + (dmean / HW - that times
# the mean), the mean's share alone being a broadcast that costs no pass.


def stats_forward(u: Tensor, statistic: str) -> Tensor:
    """(N, C, 1, K) fp32: the mean over H*W ("avg", K = 1), or the mean and the unbiased std
    ("avgstd", K = 2, from the squeeze kernel's shifted sums: no cancellation)."""
    if elsewhere(u):
        with torch.cuda.device(u.device):
            return stats_forward(u, statistic)
    if statistic == "avg":
        return squeeze(u, "avg")[0][:, :, None, None]
    n, c, h, w = u.shape
    launch, sp = _squeeze_plan(meta(u), u.element_size(), False, True, True, _tunables())
    zp = u.new_empty((sp, n, c), dtype=torch.float32)
    qp, k = torch.empty_like(zp), zp.new_empty((n, c))
    launch(u, zp, zp, qp, k)
    d, m2 = zp.sum(0), qp.sum(0)  # E[U - K], E[(U - K)^2], in split order
    var = (m2 - d * d).clamp_min(0.0) * (h * w / (h * w - 1) if h * w > 1 else math.nan)
    return torch.stack((k + d, var.sqrt()), -1)[:, :, None, :]


def stats_backward(grad: Tensor, u: Tensor, stats: Tensor) -> Tensor:
    """dU of "avgstd" from its gradient (N, C, 1, 2): one input pass."""
    if elsewhere(u):
        with torch.cuda.device(u.device):
            return stats_backward(grad, u, stats)
    hw = u.shape[2] * u.shape[3]
    dmean, dstd = grad[:, :, 0, 0].float(), grad[:, :, 0, 1].float()
    mean, std = stats[:, :, 0, 0], stats[:, :, 0, 1]
    coef = (dstd / ((hw - 1) * std)).contiguous()
    dz = (dmean - hw * coef * mean).contiguous()  # du = u * coef + dz / HW
    return input_backward(u, u, None, coef, dz, dz, dz, "avg", "none")


def apply_forward(u: Tensor, s: Tensor, identity: Tensor | None, act: str) -> Tensor:
    """act(s * U + identity), s (N, C) fp32: the scale kernel."""
    if elsewhere(u):
        with torch.cuda.device(u.device):
            return apply_forward(u, s, identity, act)
    return scale(u, s, identity, act)


def apply_backward(grad: Tensor, u: Tensor, identity: Tensor | None, out: Tensor | None,
                   s: Tensor, act: str, has_identity: bool
                   ) -> tuple[Tensor, Tensor | None, Tensor]:
    """(dU, dIdentity, ds (N, C) fp32) of `apply_forward`; act' from `out` or from y, as in
    `backward`."""
    if elsewhere(u):
        with torch.cuda.device(u.device):
            return apply_backward(grad, u, identity, out, s, act, has_identity)
    store_gy = has_identity and act != "none"
    dsp, gy, _ = reduce_backward(grad, u, identity, out, s, "none", act, store_gy)
    ds = dsp[0] if dsp.shape[0] == 1 else dsp.sum(0)  # in split order: deterministic
    zero = torch.zeros_like(ds)  # nothing reaches U through a squeeze here
    if gy is not None:
        du = input_backward(gy, u, None, s, zero, zero, zero, "avg", "none")
    else:
        du = input_backward(grad, u, identity, s, zero, zero, zero, "avg", act, out)
    return du, gy, ds
