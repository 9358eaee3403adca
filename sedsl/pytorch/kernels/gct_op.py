"""GCT (Gated Channel Transformation, official code z-x-yang/GCT) as one op,
`torch.ops.sedsl.gct_block`: the channel-attention family with an L2 statistic and a
normalisation across channels as the transform.

    sedsl::gct_block(Tensor u, Tensor alpha, Tensor gamma, Tensor beta, Tensor? identity,
                     float eps, str gate, str act) -> (Tensor out, Tensor z, Tensor s)

computes, per sample n and channel c, z = sum_hw U^2, emb = alpha * sqrt(z + eps),
t = emb * gamma / sqrt(mean_c emb^2 + eps) + beta, s = 1 + gate(t) (the release: tanh), and
out = act(U * s + identity); alpha, gamma, beta (C,) or GCT's (1, C, 1, 1); z and s fp32 (N, C).
The statistic is the squeeze kernel's sum of squares, the transform one per-sample kernel each
way, the apply pass the SE block's (sedsl.pytorch.kernels.triton_se: `gct_forward`,
`gct_backward`). Like sedsl::eca_block the op saves U, the output for relu (else the identity),
z and s; eager calls skip the dispatcher.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sedsl.pytorch.flops import install_flop_formulas
from sedsl.pytorch.kernels import reference
from sedsl.pytorch.kernels.op import (
    check_names,
    direct_autograd,
    direct_ok,
    hooked,
    kernels,
    use_triton,
)


def check_gct(u: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor, identity: Tensor | None,
              gate: str, act: str) -> None:
    """Raise ValueError unless the arguments describe a GCT block on u (N, C, H, W)."""
    check_names("avg", "relu", gate, act)
    if u.dim() != 4 or not u.is_floating_point():
        raise ValueError(f"u must be a floating (N, C, H, W) tensor; got {tuple(u.shape)}")
    for name, p in (("alpha", alpha), ("gamma", gamma), ("beta", beta)):
        if p.numel() != u.shape[1] or p.device != u.device:
            raise ValueError(f"{name} must hold one value per channel ({u.shape[1]}) on "
                             f"{u.device}; got {tuple(p.shape)}")
    if identity is not None and (identity.shape != u.shape or identity.dtype != u.dtype
                                 or identity.device != u.device):
        raise ValueError(f"identity must be like u {tuple(u.shape)} {u.dtype}")


def _forward(u: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor, identity: Tensor | None,
             eps: float, gate: str, act: str) -> tuple[Tensor, Tensor, Tensor]:
    check_gct(u, alpha, gamma, beta, identity, gate, act)
    params = (alpha.reshape(-1), gamma.reshape(-1), beta.reshape(-1))
    if use_triton(u):
        result: tuple[Tensor, Tensor, Tensor] = kernels().gct_forward(u, *params, identity, eps,
                                                                       gate, act)
        return result
    with torch.autocast(u.device.type, enabled=False):
        return reference.gct_forward(u, *params, identity, eps, gate, act)


@torch.library.custom_op("sedsl::gct_block", mutates_args=())
def gct_block_op(u: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor, identity: Tensor | None,
                 eps: float, gate: str, act: str) -> tuple[Tensor, Tensor, Tensor]:
    """(out, z, s) of the GCT block; see the module docstring."""
    return _forward(u, alpha, gamma, beta, identity, eps, gate, act)


@gct_block_op.register_fake
def _gct_block_fake(u: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor,
                    identity: Tensor | None, eps: float, gate: str,
                    act: str) -> tuple[Tensor, Tensor, Tensor]:
    check_gct(u, alpha, gamma, beta, identity, gate, act)
    acc = reference.accumulate_dtype(u.dtype)
    nc = tuple(u.shape[:2])
    return torch.empty_like(u), u.new_empty(nc, dtype=acc), u.new_empty(nc, dtype=acc)


@torch.library.custom_op("sedsl::gct_block_backward", mutates_args=())
def gct_block_backward_op(grad: Tensor, u: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor,
                          identity: Tensor | None, out: Tensor | None, z: Tensor, s: Tensor,
                          grad_z: Tensor | None, grad_s: Tensor | None, eps: float, gate: str,
                          act: str, has_identity: bool
                          ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dU, dIdentity or empty, dalpha, dgamma, dbeta)."""
    du, di, da, dg, db = _backward_impl(grad, u, alpha, gamma, beta, identity, out, z, s, grad_z,
                                        grad_s, eps, gate, act, has_identity)
    return du, u.new_empty((0,)) if di is None else di, da, dg, db


@gct_block_backward_op.register_fake
def _gct_block_backward_fake(grad: Tensor, u: Tensor, alpha: Tensor, gamma: Tensor,
                             beta: Tensor, identity: Tensor | None, out: Tensor | None,
                             z: Tensor, s: Tensor, grad_z: Tensor | None, grad_s: Tensor | None,
                             eps: float, gate: str, act: str, has_identity: bool
                             ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    like = identity if identity is not None else out if out is not None else u
    di = torch.empty_like(like) if has_identity else u.new_empty((0,))
    return (torch.empty_like(u), di, torch.empty_like(alpha), torch.empty_like(gamma),
            torch.empty_like(beta))


def _backward_impl(grad: Tensor, u: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor,
                   identity: Tensor | None, out: Tensor | None, z: Tensor, s: Tensor,
                   grad_z: Tensor | None, grad_s: Tensor | None, eps: float, gate: str,
                   act: str, has_identity: bool
                   ) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor]:
    params = (alpha.reshape(-1), gamma.reshape(-1), beta.reshape(-1))
    args = (grad, u, *params, identity, out, z, s, grad_z, grad_s, eps, gate, act, has_identity)
    if use_triton(u):
        du, di, da, dg, db = kernels().gct_backward(*args)
    else:
        with torch.autocast(u.device.type, enabled=False):
            du, di, da, dg, db = reference.gct_backward(*args)
    return du, di, da.view(alpha.shape), dg.view(gamma.shape), db.view(beta.shape)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    u, alpha, gamma, beta, identity, eps, gate, act = inputs
    out, z, s = output
    ctx.save_for_backward(u, alpha, gamma, beta, *reference.for_act_grad(identity, out, act), z,
                          s)
    ctx.config = (eps, gate, act)
    ctx.set_materialize_grads(False)
    ctx.has_identity = identity is not None


def _backward(ctx: Any, grad: Tensor | None, grad_z: Tensor | None,
              grad_s: Tensor | None) -> tuple[Tensor | None, ...]:
    u, alpha, gamma, beta, identity, out, z, s = ctx.saved_tensors
    if grad is None:
        grad = torch.zeros_like(u)
    args = (grad, u, alpha, gamma, beta, identity, out, z, s, grad_z, grad_s, *ctx.config,
            ctx.has_identity)
    if getattr(ctx, "direct", False):
        du, di, da, dg, db = _backward_impl(*args)
    else:
        du, di, da, dg, db = torch.ops.sedsl.gct_block_backward(*args)
    if ctx.has_identity and ctx.config[2] == "none":  # dIdentity = dOut
        di = grad
    return du, da, dg, db, di if ctx.has_identity else None, None, None, None


gct_block_op.register_autograd(_backward, setup_context=_setup_context)
install_flop_formulas()  # FlopCounterMode counts it as the plain lowering: nothing


_Direct = direct_autograd("_Direct", _forward, _setup_context, _backward)


def gct_block(u: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor,
              identity: Tensor | None = None, *, eps: float = 1e-5, gate: str = "tanh",
              act: str = "none") -> Tensor:
    """act(U * (1 + gate(GCT's normalised L2 embedding)) + identity), one fused op."""
    return call_gct(u, alpha, gamma, beta, identity, eps, gate, act)[0]


def call_gct(u: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor, identity: Tensor | None,
             eps: float, gate: str, act: str) -> tuple[Tensor, Tensor, Tensor]:
    """The op's (out, z, s): eager calls on the Triton path skip the dispatcher (_Direct)."""
    args = (u, alpha, gamma, beta, identity, float(eps), gate, act)
    if use_triton(u) and direct_ok(u, identity):
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                           for t in (u, alpha, gamma, beta, identity)):
            direct: tuple[Tensor, Tensor, Tensor] = _Direct.apply(*args)
            return direct
        return _forward(*args)
    result: tuple[Tensor, Tensor, Tensor] = torch.ops.sedsl.gct_block(*args)
    return result


class GCTParameters(nn.Module):
    """GCT's per-channel alpha (ones), gamma and beta (zeros), (1, C, 1, 1) as the release has
    them: the plain lowering's GCTNorm keys (`<block>.se.norm.alpha`, ...)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))


class GatedChannelTransformation(nn.Module):
    """GCT [+ shortcut add [+ activation]] as one op: x * (1 + gate(t)), t GCT's normalised L2
    embedding; its parameters at `norm.alpha`, `norm.gamma`, `norm.beta` as the plain lowering
    has them. What generated fused models use for the `gct` variant (sedsl.ir.ops.TRANSFORMS,
    gct_norm)."""

    def __init__(self, channels: int, eps: float = 1e-5, gate: str = "tanh",
                 act: str = "none") -> None:
        super().__init__()
        check_names("avg", "relu", gate, act)
        self.norm = GCTParameters(channels)
        self.eps, self.gate, self.act = eps, gate, act
        # Sees the gate's output (s - 1: what the plain lowering's gate layer outputs) (N, C,
        # 1, 1), as SqueezeExcite.probe. Parameterless, so no state-dict keys.
        self.probe = nn.Identity()

    def forward(self, u: Tensor, identity: Tensor | None = None) -> Tensor:
        if not use_triton(u):
            return self.plain(u, identity)
        p = self.norm
        out, _, s = call_gct(u, p.alpha, p.gamma, p.beta, identity, self.eps, self.gate,
                             self.act)
        if hooked(self.probe):
            self.probe(s[:, :, None, None] - 1.0)
        return out

    def plain(self, u: Tensor, identity: Tensor | None = None) -> Tensor:
        """As the official code and the unfused lowering compute it, bit for bit: the L2
        embedding, its normalisation across channels, the gate, x * (1 + gate); then the
        shortcut and the activation."""
        p = self.norm
        embedding = (u.pow(2).sum((2, 3), keepdim=True) + self.eps).pow(0.5) * p.alpha
        norm = p.gamma / (embedding.pow(2).mean(dim=1, keepdim=True) + self.eps).pow(0.5)
        g = self.probe(reference.activate(self.gate, embedding * norm + p.beta))
        x = u * (1.0 + g)  # (N, C, H, W), fresh
        if identity is not None:
            x += identity
        return reference.activate_(self.act, x)

    def extra_repr(self) -> str:
        return f"eps={self.eps!r}, gate={self.gate!r}, act={self.act!r}"
