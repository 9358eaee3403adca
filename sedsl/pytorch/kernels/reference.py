"""The SE block in plain torch: the semantics of sedsl.pytorch.kernels and the op's path off the
GPU.

    z   = squeeze_hw(U)                          # (N, C): mean ("avg") or max ("max") over H*W
    h   = excite(z @ W1.T + b1)                  # (N, R)
    s   = gate(h @ W2.T + b2)                    # (N, C)
    out = act(s[:, :, None, None] * U + identity)

Everything is computed in float32 (float64 for float64 inputs) and `out` is rounded once to U's
dtype, like the Triton kernels do. `forward` / `backward` are the op's implementation when it
does not run the Triton kernels; `backward` spells out the same gradient formulas the kernels
use, with torch's own activation derivatives (`activation_grad`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from sedsl.ir import vocab


def _resolve(path: str) -> Callable[..., Any]:
    """`torch.nn.functional.relu` -> that function."""
    root, *names = path.split(".")
    assert root == "torch", f"vocabulary paths start at torch: {path}"
    found: Any = torch
    for name in names:
        found = getattr(found, name)
    return cast(Callable[..., Any], found)


# Every table below derives from the vocabulary (sedsl.ir.vocab): one entry per name there.
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    name: _resolve(a.functional) for name, a in vocab.ACTIVATIONS.items()}
SQUEEZES = tuple(vocab.SQUEEZES)
EXCITES = tuple(ACTIVATIONS)
GATES = vocab.GATES
ACTS = ("none", *ACTIVATIONS)


# Post-activations whose derivative the backward takes from the block's output, as torch's own
# relu backward takes it from its result (threshold_backward): the op saves its output (which
# the next layer saves anyway), not the identity, and the mask is the plain lowering's.
ACTS_FROM_OUTPUT = frozenset({"relu"})


def for_act_grad(identity: Tensor | None, out: Tensor,
                 act: str) -> tuple[Tensor | None, Tensor | None]:
    """(identity, output) as the backward needs them for act's derivative: the output for
    ACTS_FROM_OUTPUT, the identity (y = s * U + identity is recomputed) for another act,
    neither for "none"."""
    if act == "none":
        return None, None
    return (None, out) if act in ACTS_FROM_OUTPUT else (identity, None)


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the block computes in: float32, or float64 for float64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def activate(name: str, x: Tensor) -> Tensor:
    """`name`(x) with torch.nn's semantics; "none" is the identity."""
    return x if name == "none" else ACTIVATIONS[name](x)


def activation_grad(name: str, x: Tensor, grad: Tensor) -> Tensor:
    """grad * d`name`(x)/dx by torch's own backward of the activation (so every entry of the
    vocabulary has one, with torch's values at the kinks). The ATen backward ops, not
    torch.func.vjp: the op's implementation runs below the autograd key, and under a dispatch
    mode (FlopCounterMode) functorch's transforms fail there."""
    if name == "none":
        return grad
    return ACTIVATION_GRADS[name](x, grad)


_aten = torch.ops.aten
ACTIVATION_GRADS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "relu": lambda x, g: _aten.threshold_backward(g, x, 0),
    "relu6": lambda x, g: _aten.hardtanh_backward(g, x, 0.0, 6.0),
    "silu": lambda x, g: _aten.silu_backward(g, x),
    "hardswish": lambda x, g: _aten.hardswish_backward(g, x),
    "sigmoid": lambda x, g: _aten.sigmoid_backward(g, torch.sigmoid(x)),
    "hardsigmoid": lambda x, g: _aten.hardsigmoid_backward(g, x),
    "tanh": lambda x, g: _aten.tanh_backward(g, torch.tanh(x)),
    "gelu": lambda x, g: _aten.gelu_backward(g, x),
    "mish": lambda x, g: _aten.mish_backward(g, x),
}


def activate_(name: str, x: Tensor) -> Tensor:
    """`name`(x), in place where torch has an in-place form (x must be a fresh tensor that
    autograd does not keep); the result either way."""
    if name == "none":
        return x
    inplace = vocab.ACTIVATIONS[name].inplace
    if inplace is None:  # no in-place form: a new tensor (never copy_ over what autograd saved)
        return ACTIVATIONS[name](x)
    _resolve(inplace)(x)
    return x


def squeeze_hw(u: Tensor, squeeze: str) -> Tensor:
    """(N, C, H, W) -> (N, C) in the accumulate dtype: mean or max over H*W."""
    acc = accumulate_dtype(u.dtype)
    if squeeze == "avg":
        return u.mean((2, 3), dtype=acc)
    return u.amax((2, 3)).to(acc)


def excitation(z: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
           excite: str, gate: str) -> Tensor:
    """(N, C) squeezed -> (N, C) gate s = gate(excite(z W1^T + b1) W2^T + b2)."""
    h = activate(excite, F.linear(z, w1.to(z.dtype), _opt(b1, z)))  # (N, R)
    return activate(gate, F.linear(h, w2.to(z.dtype), _opt(b2, z)))  # (N, C)


def scale(u: Tensor, s: Tensor, identity: Tensor | None, act: str) -> Tensor:
    """act(s[:, :, None, None] * U + identity) in the accumulate dtype of s."""
    y = s[:, :, None, None] * u.to(s.dtype)  # (N, C, H, W)
    if identity is not None:
        y = y + identity.to(s.dtype)
    return activate(act, y)


def se_block_reference(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor,
                       b2: Tensor | None, identity: Tensor | None = None, *,
                       squeeze: str = "avg", excite: str = "relu", gate: str = "sigmoid",
                       act: str = "none") -> Tensor:
    """The SE block in differentiable torch ops; w1 (R, C) and w2 (C, R) matrices."""
    s = excitation(squeeze_hw(u, squeeze), w1, b1, w2, b2, excite, gate)
    return scale(u, s, identity, act).to(u.dtype)


def forward(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
            identity: Tensor | None, squeeze: str, excite: str, gate: str,
            act: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The op's outputs (out, z, s, idx); idx: int32 (N, C) tie count for "max" (`ties`)."""
    z = squeeze_hw(u, squeeze)  # (N, C)
    s = excitation(z, w1, b1, w2, b2, excite, gate)  # (N, C)
    out = torch.empty_like(u)  # the layout of U, as the kernels and the fake impl have it
    if u.dtype == s.dtype:  # float32 / float64: one pass over U into `out`, no temporaries
        torch.mul(u, s[:, :, None, None], out=out)
        if identity is not None:
            out.add_(identity)
        out = activate_(act, out)
    else:
        out.copy_(scale(u, s, identity, act))
    return out, z, s, ties(u, z, squeeze)


def ties(u: Tensor, z: Tensor, squeeze: str) -> Tensor:
    """For "max": int32 (N, C) count of the positions equal to the maximum z (0 when z is NaN);
    else an empty tensor."""
    if squeeze != "max":
        return u.new_empty((0,), dtype=torch.int32)
    return (u.to(z.dtype) == z[:, :, None, None]).sum((2, 3), dtype=torch.int32)


def excite_backward(z: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
                    ds: Tensor, excite: str,
                    gate: str) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor | None]:
    """Gradients (dz, dW1, db1, dW2, db2) of the excitation given ds = dL/ds, in z's dtype;
    recomputes the two small FCs (O(N*C*R)) instead of saving their pre-activations."""
    w1a, w2a = w1.to(z.dtype), w2.to(z.dtype)
    pre1 = F.linear(z, w1a, _opt(b1, z))  # (N, R)
    h = activate(excite, pre1)
    pre2 = F.linear(h, w2a, _opt(b2, z))  # (N, C)
    dpre2 = activation_grad(gate, pre2, ds)  # (N, C)
    dpre1 = activation_grad(excite, pre1, dpre2 @ w2a)  # (N, R)
    db1 = None if b1 is None else dpre1.sum(0).to(b1.dtype)
    db2 = None if b2 is None else dpre2.sum(0).to(b2.dtype)
    return dpre1 @ w1a, (dpre1.T @ z).to(w1.dtype), db1, (dpre2.T @ h).to(w2.dtype), db2


def squeeze_grad(dz: Tensor, z: Tensor, idx: Tensor, u: Tensor, squeeze: str) -> Tensor:
    """(N, C) dL/dz -> its (N, C, H, W) contribution to dL/dU. avg: spread evenly; max:
    torch.amax's rule, dz split between the `idx` positions equal to the maximum z (NaN
    everywhere when z is NaN, as 0 / 0)."""
    n, c, hh, ww = u.shape
    if squeeze == "avg":
        return (dz / (hh * ww))[:, :, None, None].expand(n, c, hh, ww)
    hit = u.to(z.dtype) == z[:, :, None, None]  # (N, C, H, W)
    return torch.where(hit, dz[:, :, None, None], 0.0) / idx.to(dz.dtype)[:, :, None, None]


def scale_grad(grad: Tensor, u: Tensor, s: Tensor, identity: Tensor | None, out: Tensor | None,
               grad_s: Tensor | None, act: str) -> tuple[Tensor, Tensor]:
    """The apply step's backward, (dL/dy, dL/ds) in s's dtype, y = s * U + identity: act's
    derivative from `out` (the block's output) when given, as torch's relu backward takes it
    from its result, else from y recomputed; plus the gradient reaching s itself (`grad_s`)."""
    g = grad.to(s.dtype)  # (N, C, H, W)
    if out is not None:
        g = activation_grad(act, out.to(s.dtype), g)  # relu: the output's sign is y's
    elif act != "none":
        g = activation_grad(act, scale(u, s, identity, "none"), g)
    ds = (g * u.to(s.dtype)).sum((2, 3))  # (N, C)
    return g, ds if grad_s is None else ds + grad_s


def input_grads(g: Tensor, s: Tensor, through_squeeze: Tensor, u: Tensor,
                identity: Tensor | None, out: Tensor | None,
                has_identity: bool) -> tuple[Tensor, Tensor | None]:
    """(dU, dIdentity): dU = g * s + the squeeze's derivative, in U's dtype and layout;
    dIdentity = g where the block has an identity, in its dtype (the output's when only the
    output is kept)."""
    du = torch.empty_like(u)
    du.copy_(g * s[:, :, None, None] + through_squeeze)
    di = None
    if has_identity:
        di = torch.empty_like(identity if identity is not None else out if out is not None
                              else u)
        di.copy_(g)
    return du, di


def backward(grad: Tensor, u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor,
             b2: Tensor | None, identity: Tensor | None, out: Tensor | None, z: Tensor,
             s: Tensor, idx: Tensor, grad_z: Tensor | None, grad_s: Tensor | None,
             squeeze: str, excite: str, gate: str, act: str,
             has_identity: bool) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None, Tensor,
                                          Tensor | None]:
    """(dU, dIdentity, dW1, db1, dW2, db2); dIdentity when the block has an identity. act's
    derivative from `out` (the block's output) when given, as torch's relu backward takes it
    from its result, else from y = s * U + identity recomputed."""
    g, ds = scale_grad(grad, u, s, identity, out, grad_s, act)
    dz, dw1, db1, dw2, db2 = excite_backward(z, w1, b1, w2, b2, ds, excite, gate)
    if grad_z is not None:
        dz = dz + grad_z
    du, di = input_grads(g, s, squeeze_grad(dz, z, idx, u, squeeze), u, identity, out,
                         has_identity)
    return du, di, dw1, db1, dw2, db2


def _opt(t: Tensor | None, like: Tensor) -> Tensor | None:
    return None if t is None else t.to(like.dtype)


# --- the SE block with the BatchNorm before it folded in (sedsl::se_bn_block) ---------------------


def bn_outputs(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor,
               running_var: Tensor, num_batches_tracked: Tensor, w1: Tensor, b1: Tensor | None,
               w2: Tensor, b2: Tensor | None, identity: Tensor | None, training: bool,
               momentum: float, eps: float, excite: str, gate: str, act: str
               ) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[Tensor, Tensor, Tensor] | None]:
    """(out, z, s, (mean, rstd) (2, C), the updated running mean, variance and count in
    training) of act(SE(BN(X)) + identity), avg squeeze, BN(X) = a * X + b, without side
    effects (export's decomposition): BN with batch statistics in training, updated as
    nn.BatchNorm2d does (momentum-weighted; unbiased running variance)."""
    acc = accumulate_dtype(x.dtype)
    xf = x.to(acc)
    new = None
    if training:
        mean, var = xf.mean((0, 2, 3)), xf.var((0, 2, 3), unbiased=False)
        count = x.numel() // x.shape[1]
        new = ((running_mean.to(acc) * (1 - momentum) + mean * momentum).to(running_mean.dtype),
               (running_var.to(acc) * (1 - momentum)
                + var * (count / (count - 1)) * momentum).to(running_var.dtype),
               num_batches_tracked + 1)
    else:
        mean, var = running_mean.to(acc), running_var.to(acc)
    rstd = torch.rsqrt(var + eps)
    a = weight.to(acc) * rstd
    b = bias.to(acc) - mean * a
    xbar = xf.mean((2, 3))  # (N, C)
    z = a * xbar + b
    s = excitation(z, w1, b1, w2, b2, excite, gate)
    out = scale(xf * a[:, None, None] + b[:, None, None], s, identity, act).to(x.dtype)
    return out, z, s, torch.stack([mean, rstd]), new


def bn_forward(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor,
               running_var: Tensor, num_batches_tracked: Tensor, w1: Tensor, b1: Tensor | None,
               w2: Tensor, b2: Tensor | None, identity: Tensor | None, training: bool,
               momentum: float, eps: float, excite: str, gate: str, act: str,
               updated: tuple[Tensor, Tensor, Tensor] | None = None
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`bn_outputs` as the op returns them: out in X's layout, and in training the updated
    running statistics written into `updated`, or into the buffers in place when it is None."""
    state = (running_mean, running_var, num_batches_tracked)
    out, z, s, stats, new = bn_outputs(x, weight, bias, *state, w1, b1, w2, b2, identity,
                                       training, momentum, eps, excite, gate, act)
    if new is not None:
        for target, value in zip(updated or state, new, strict=True):
            target.copy_(value)
    result = torch.empty_like(x)
    result.copy_(out)
    return result, z, s, stats


def bn_backward(grad: Tensor, x: Tensor, weight: Tensor, bias: Tensor, w1: Tensor,
                b1: Tensor | None, w2: Tensor, b2: Tensor | None, identity: Tensor | None,
                out: Tensor | None, s: Tensor, stats: Tensor, grad_z: Tensor | None,
                grad_s: Tensor | None, training: bool, excite: str, gate: str, act: str,
                has_identity: bool) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor,
                                             Tensor | None, Tensor, Tensor | None]:
    """(dX, dIdentity, dgamma, dbeta, dW1, db1, dW2, db2) of `bn_forward` from X, s and the
    BN's (mean, rstd): U = a * X + b and z recomputed, the SE block's backward, then BN's (with
    the batch statistics' share in training)."""
    mean, rstd = stats
    a = weight.to(stats.dtype) * rstd
    b = bias.to(stats.dtype) - mean * a
    xf = x.to(stats.dtype)
    u = xf * a[:, None, None] + b[:, None, None]
    z = a * xf.mean((2, 3)) + b
    du, di, dw1, db1, dw2, db2 = backward(
        grad, u, w1, b1, w2, b2, identity, out, z, s, u.new_empty((0,), dtype=torch.int32),
        grad_z, grad_s, "avg", excite, gate, act, has_identity)
    xhat = (xf - mean[:, None, None]) * rstd[:, None, None]
    dbeta, dgamma = du.sum((0, 2, 3)), (du * xhat).sum((0, 2, 3))
    if training:
        count = x.numel() // x.shape[1]
        du = du - (dbeta / count)[:, None, None] - xhat * (dgamma / count)[:, None, None]
    dx = torch.empty_like(x)
    dx.copy_(du * a[:, None, None])
    return dx, di, dgamma.to(weight.dtype), dbeta.to(weight.dtype), dw1, db1, dw2, db2


# --- the ECA block: a 1-D convolution over channels as the transform (sedsl::eca_block) ---------


def channel_conv(z: Tensor, w: Tensor, circular: bool) -> Tensor:
    """conv1d of the (N, C) squeezed vector with w (K,), no bias, as timm's EcaModule (zero
    padding) and CecaModule (circular) compute it on (N, 1, C)."""
    k = w.numel()
    pad = (k - 1) // 2
    x = z[:, None]  # (N, 1, C)
    if circular:
        return F.conv1d(F.pad(x, (pad, pad), mode="circular"), w.view(1, 1, k).to(z.dtype))[:, 0]
    return F.conv1d(x, w.view(1, 1, k).to(z.dtype), padding=pad)[:, 0]


def eca_forward(u: Tensor, w: Tensor, identity: Tensor | None, circular: bool, gate: str,
                act: str) -> tuple[Tensor, Tensor, Tensor]:
    """(out, z, s) of act(U * gate(conv1d(mean_hw U, w)) + identity); z, s in the accumulate
    dtype, out in U's dtype and layout."""
    z = squeeze_hw(u, "avg")  # (N, C)
    s = activate(gate, channel_conv(z, w, circular))  # (N, C)
    out = torch.empty_like(u)
    out.copy_(scale(u, s, identity, act))
    return out, z, s


def channel_conv_backward(dpre: Tensor, z: Tensor, w: Tensor,
                          circular: bool) -> tuple[Tensor, Tensor]:
    """(dz, dw) of `channel_conv` given dL/d(its output) (N, C): dz by the transposed
    convolution (the same padding), dw[j] = sum over (n, c) of dpre[n, c] * z[n, c + j - K//2]."""
    k = w.numel()
    pad = (k - 1) // 2
    n, c = z.shape
    zpad = F.pad(z[:, None], (pad, pad), mode="circular" if circular else "constant")[:, 0]
    dw = (dpre[:, :, None] * zpad.unfold(1, k, 1)).sum((0, 1))  # (K,)
    dzpad = z.new_zeros((n, c + 2 * pad))
    for j in range(k):
        dzpad[:, j:j + c] += w[j].to(z.dtype) * dpre
    dz = dzpad[:, pad:pad + c].clone()
    if circular and pad:  # the padding was the other end's channels
        dz[:, :pad] += dzpad[:, pad + c:]
        dz[:, c - pad:] += dzpad[:, :pad]
    return dz, dw


def eca_backward(grad: Tensor, u: Tensor, w: Tensor, identity: Tensor | None,
                 out: Tensor | None, z: Tensor, s: Tensor, grad_z: Tensor | None,
                 grad_s: Tensor | None, circular: bool, gate: str, act: str,
                 has_identity: bool) -> tuple[Tensor, Tensor | None, Tensor]:
    """(dU, dIdentity, dw) of `eca_forward`, act' as in `backward`."""
    g, ds = scale_grad(grad, u, s, identity, out, grad_s, act)
    dpre = ds * _gate_grad(s, gate)
    dz, dw = channel_conv_backward(dpre, z, w, circular)
    if grad_z is not None:
        dz = dz + grad_z
    du, di = input_grads(g, s, squeeze_grad(dz, z, u.new_empty((0,)), u, "avg"), u, identity,
                         out, has_identity)
    return du, di, dw.to(w.dtype).view(w.shape)


# --- Gather-Excite's parameter-free form: the gate of the mean (sedsl::ge_block) -----------------


def ge_forward(u: Tensor, identity: Tensor | None, gate: str,
               act: str) -> tuple[Tensor, Tensor, Tensor]:
    """(out, z, s) of act(U * gate(mean_hw U) + identity); z, s in the accumulate dtype, out in
    U's dtype and layout."""
    z = squeeze_hw(u, "avg")  # (N, C)
    s = activate(gate, z)
    out = torch.empty_like(u)
    out.copy_(scale(u, s, identity, act))
    return out, z, s


def ge_backward(grad: Tensor, u: Tensor, identity: Tensor | None, out: Tensor | None,
                z: Tensor, s: Tensor, grad_z: Tensor | None, grad_s: Tensor | None, gate: str,
                act: str, has_identity: bool) -> tuple[Tensor, Tensor | None]:
    """(dU, dIdentity) of `ge_forward`, act' as in `backward`."""
    g, ds = scale_grad(grad, u, s, identity, out, grad_s, act)
    dz = ds * _gate_grad(s, gate)
    if grad_z is not None:
        dz = dz + grad_z
    du, di = input_grads(g, s, squeeze_grad(dz, z, u.new_empty((0,)), u, "avg"), u, identity,
                         out, has_identity)
    return du, di


# --- GCT: the L2 embedding normalised across channels (sedsl::gct_block) --------------------------


def gct_transform(z: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
    """t (N, C) from z = sum_hw U^2 (N, C), as the official GCT code computes it:
    emb = alpha * sqrt(z + eps), t = emb * gamma / sqrt(mean_c emb^2 + eps) + beta."""
    emb = alpha.to(z.dtype).reshape(-1) * (z + eps).pow(0.5)
    norm = gamma.to(z.dtype).reshape(-1) / (emb.pow(2).mean(1, keepdim=True) + eps).pow(0.5)
    return emb * norm + beta.to(z.dtype).reshape(-1)


def gct_forward(u: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor, identity: Tensor | None,
                eps: float, gate: str, act: str) -> tuple[Tensor, Tensor, Tensor]:
    """(out, z, s) of act(U * (1 + gate(t)) + identity), z = sum_hw U^2 and s = 1 + gate(t) in
    the accumulate dtype, out in U's dtype and layout."""
    z = u.to(accumulate_dtype(u.dtype)).pow(2).sum((2, 3))  # (N, C)
    s = 1.0 + activate(gate, gct_transform(z, alpha, gamma, beta, eps))
    out = torch.empty_like(u)
    out.copy_(scale(u, s, identity, act))
    return out, z, s


def gct_backward(grad: Tensor, u: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor,
                 identity: Tensor | None, out: Tensor | None, z: Tensor, s: Tensor,
                 grad_z: Tensor | None, grad_s: Tensor | None, eps: float, gate: str, act: str,
                 has_identity: bool) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor]:
    """(dU, dIdentity, dalpha, dgamma, dbeta) of `gct_forward`, act' as in `backward`: the
    normalisation's mean square couples the channels (dm), and the squeeze's derivative is
    2 dz U."""
    g, ds = scale_grad(grad, u, s, identity, out, grad_s, act)
    a, gm = alpha.to(z.dtype).reshape(-1), gamma.to(z.dtype).reshape(-1)
    r = (z + eps).sqrt()
    emb = a * r
    q = (emb.pow(2).mean(1, keepdim=True) + eps).sqrt()  # (N, 1)
    dt = ds * _gate_grad(s - 1.0, gate)
    dm = -(dt * emb * gm).sum(1, keepdim=True) / (2.0 * q.pow(3))
    demb = dt * gm / q + dm * 2.0 * emb / z.shape[1]
    dz = demb * a / (2.0 * r)
    if grad_z is not None:
        dz = dz + grad_z
    du, di = input_grads(g, s, 2.0 * dz[:, :, None, None] * u.to(s.dtype), u, identity, out,
                         has_identity)  # the sum of squares' derivative: 2 dz U
    grads = ((demb * r).sum(0), (dt * emb / q).sum(0), dt.sum(0))
    dalpha, dgamma, dbeta = (d.to(p.dtype).view(p.shape)
                             for d, p in zip(grads, (alpha, gamma, beta), strict=True))
    return du, di, dalpha, dgamma, dbeta


def _gate_grad(s: Tensor, gate: str) -> Tensor:
    """dGATE/dx from the gate's output s (the gates the kernels take: sigmoid, tanh, relu,
    hardsigmoid)."""
    if gate == "sigmoid":
        return s * (1.0 - s)
    if gate == "tanh":
        return 1.0 - s * s
    if gate == "relu":
        return (s > 0.0).to(s.dtype)
    return ((s > 0.0) & (s < 1.0)).to(s.dtype) / 6.0


# --- the generic transform's statistic and apply (sedsl::channel_stats, sedsl::channel_apply) ----


def stats_forward(u: Tensor, statistic: str) -> Tensor:
    """(N, C, 1, K) in the accumulate dtype: the mean ("avg"), or the mean and the unbiased
    std ("avgstd")."""
    x = u.to(accumulate_dtype(u.dtype))
    mean = x.mean((2, 3), keepdim=True)
    return mean if statistic == "avg" else torch.cat([mean, x.std((2, 3), keepdim=True)], 3)


def stats_backward(grad: Tensor, u: Tensor, stats: Tensor) -> Tensor:
    """dU of "avgstd": dmean / HW + dstd * (U - mean) / ((HW - 1) std), in U's dtype."""
    hw = u.shape[2] * u.shape[3]
    x = u.to(stats.dtype)
    g = grad.to(stats.dtype)
    du = g[..., :1] / hw + g[..., 1:] * (x - stats[..., :1]) / ((hw - 1) * stats[..., 1:])
    out = torch.empty_like(u)
    out.copy_(du)
    return out


def apply_forward(u: Tensor, s: Tensor, identity: Tensor | None, act: str) -> Tensor:
    """act(s * U + identity) in U's dtype and layout, s (N, C)."""
    out = torch.empty_like(u)
    out.copy_(scale(u, s, identity, act))
    return out


def apply_backward(grad: Tensor, u: Tensor, identity: Tensor | None, out: Tensor | None,
                   s: Tensor, act: str, has_identity: bool
                   ) -> tuple[Tensor, Tensor | None, Tensor]:
    """(dU, dIdentity, ds) of `apply_forward`, act' as in `backward`."""
    g, ds = scale_grad(grad, u, s, identity, out, None, act)
    du, di = input_grads(g, s, torch.zeros((), dtype=s.dtype, device=s.device), u, identity,
                         out, has_identity)
    return du, di, ds
