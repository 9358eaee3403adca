"""ECA as one op, `torch.ops.sedsl.eca_block`: the channel-attention family with a 1-D
convolution over channels as the transform.

    sedsl::eca_block(Tensor u, Tensor w, Tensor? identity, str padding, str gate, str act)
        -> (Tensor out, Tensor z, Tensor s)

computes act(U * gate(conv1d(mean_hw U, w)) + identity), w (K,) without bias, K odd, padding
"zero" (timm's EcaModule) or "circular" (CecaModule); z and s fp32 (N, C). The statistic, gate
and apply pass are the SE block's kernels, the transform one kernel each way
(sedsl.pytorch.kernels.triton_se: `_channel_conv_kernel`). Like sedsl::se_block the op saves U,
the output for relu (else the identity), z and s; eager calls skip the dispatcher.
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

PADDINGS = ("zero", "circular")


def check_eca(u: Tensor, w: Tensor, identity: Tensor | None, padding: str, gate: str,
              act: str) -> None:
    """Raise ValueError unless the arguments describe an ECA block on u (N, C, H, W)."""
    check_names("avg", "relu", gate, act)
    if u.dim() != 4 or not u.is_floating_point():
        raise ValueError(f"u must be a floating (N, C, H, W) tensor; got {tuple(u.shape)}")
    if w.numel() % 2 != 1 or w.numel() != w.shape[-1] or w.device != u.device:
        raise ValueError(f"w must hold an odd number of taps (K,) on {u.device}; got "
                         f"{tuple(w.shape)}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}; got {padding!r}")
    if identity is not None and (identity.shape != u.shape or identity.dtype != u.dtype
                                 or identity.device != u.device):
        raise ValueError(f"identity must be like u {tuple(u.shape)} {u.dtype}")


def _forward(u: Tensor, w: Tensor, identity: Tensor | None, padding: str, gate: str,
             act: str) -> tuple[Tensor, Tensor, Tensor]:
    check_eca(u, w, identity, padding, gate, act)
    w = w.reshape(-1)
    circular = padding == "circular"
    if use_triton(u):
        result: tuple[Tensor, Tensor, Tensor] = kernels().eca_forward(u, w, identity, circular,
                                                                       gate, act)
        return result
    with torch.autocast(u.device.type, enabled=False):
        return reference.eca_forward(u, w, identity, circular, gate, act)


@torch.library.custom_op("sedsl::eca_block", mutates_args=())
def eca_block_op(u: Tensor, w: Tensor, identity: Tensor | None, padding: str, gate: str,
                 act: str) -> tuple[Tensor, Tensor, Tensor]:
    """(out, z, s) of the ECA block; see the module docstring."""
    return _forward(u, w, identity, padding, gate, act)


@eca_block_op.register_fake
def _eca_block_fake(u: Tensor, w: Tensor, identity: Tensor | None, padding: str, gate: str,
                    act: str) -> tuple[Tensor, Tensor, Tensor]:
    check_eca(u, w, identity, padding, gate, act)
    acc = reference.accumulate_dtype(u.dtype)
    nc = tuple(u.shape[:2])
    return torch.empty_like(u), u.new_empty(nc, dtype=acc), u.new_empty(nc, dtype=acc)


@torch.library.custom_op("sedsl::eca_block_backward", mutates_args=())
def eca_block_backward_op(grad: Tensor, u: Tensor, w: Tensor, identity: Tensor | None,
                          out: Tensor | None, z: Tensor, s: Tensor, grad_z: Tensor | None,
                          grad_s: Tensor | None, padding: str, gate: str, act: str,
                          has_identity: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(dU, dIdentity or empty, dw)."""
    du, di, dw = _backward_impl(grad, u, w, identity, out, z, s, grad_z, grad_s, padding, gate,
                                act, has_identity)
    return du, u.new_empty((0,)) if di is None else di, dw


@eca_block_backward_op.register_fake
def _eca_block_backward_fake(grad: Tensor, u: Tensor, w: Tensor, identity: Tensor | None,
                             out: Tensor | None, z: Tensor, s: Tensor, grad_z: Tensor | None,
                             grad_s: Tensor | None, padding: str, gate: str, act: str,
                             has_identity: bool) -> tuple[Tensor, Tensor, Tensor]:
    like = identity if identity is not None else out if out is not None else u
    di = torch.empty_like(like) if has_identity else u.new_empty((0,))
    return torch.empty_like(u), di, torch.empty_like(w)


def _backward_impl(grad: Tensor, u: Tensor, w: Tensor, identity: Tensor | None,
                   out: Tensor | None, z: Tensor, s: Tensor, grad_z: Tensor | None,
                   grad_s: Tensor | None, padding: str, gate: str, act: str,
                   has_identity: bool) -> tuple[Tensor, Tensor | None, Tensor]:
    args = (grad, u, w.reshape(-1), identity, out, z, s, grad_z, grad_s, padding == "circular",
            gate, act, has_identity)
    if use_triton(u):
        du, di, dw = kernels().eca_backward(*args)
    else:
        with torch.autocast(u.device.type, enabled=False):
            du, di, dw = reference.eca_backward(*args)
    return du, di, dw.view(w.shape)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    u, w, identity, padding, gate, act = inputs
    out, z, s = output
    ctx.save_for_backward(u, w, *reference.for_act_grad(identity, out, act), z, s)
    ctx.config = (padding, gate, act)
    ctx.set_materialize_grads(False)
    ctx.has_identity = identity is not None


def _backward(ctx: Any, grad: Tensor | None, grad_z: Tensor | None,
              grad_s: Tensor | None) -> tuple[Tensor | None, ...]:
    u, w, identity, out, z, s = ctx.saved_tensors
    if grad is None:
        grad = torch.zeros_like(u)
    args = (grad, u, w, identity, out, z, s, grad_z, grad_s, *ctx.config, ctx.has_identity)
    if getattr(ctx, "direct", False):
        du, di, dw = _backward_impl(*args)
    else:
        du, di, dw = torch.ops.sedsl.eca_block_backward(*args)
    if ctx.has_identity and ctx.config[2] == "none":  # dIdentity = dOut
        di = grad
    return du, dw, di if ctx.has_identity else None, None, None, None


eca_block_op.register_autograd(_backward, setup_context=_setup_context)
install_flop_formulas()  # FlopCounterMode counts it as the plain lowering's conv1d


_Direct = direct_autograd("_Direct", _forward, _setup_context, _backward)


def eca_block(u: Tensor, w: Tensor, identity: Tensor | None = None, *, padding: str = "zero",
              gate: str = "sigmoid", act: str = "none") -> Tensor:
    """act(U * gate(conv1d(mean_hw U, w)) + identity), one fused op; w (K,) or a Conv1d's
    (1, 1, K) weight."""
    return call_eca(u, w, identity, padding, gate, act)[0]


def call_eca(u: Tensor, w: Tensor, identity: Tensor | None, padding: str, gate: str,
             act: str) -> tuple[Tensor, Tensor, Tensor]:
    """The op's (out, z, s): eager calls on the Triton path skip the dispatcher (_Direct)."""
    if use_triton(u) and direct_ok(u, identity):
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                           for t in (u, w, identity)):
            direct: tuple[Tensor, Tensor, Tensor] = _Direct.apply(u, w, identity, padding, gate,
                                                                  act)
            return direct
        return _forward(u, w, identity, padding, gate, act)
    result: tuple[Tensor, Tensor, Tensor] = torch.ops.sedsl.eca_block(u, w, identity, padding,
                                                                      gate, act)
    return result


class EfficientChannelAttention(nn.Module):
    """ECA [+ shortcut add [+ activation]] as one op; the `conv.weight` state-dict key of
    timm's EcaModule / CecaModule (a Conv1d(1, 1, K) without bias). What generated fused
    models use for the `eca` and `ceca` variants (sedsl.ir.ops.TRANSFORMS, channel_conv)."""

    def __init__(self, kernel_size: int = 3, padding: str = "zero", gate: str = "sigmoid",
                 act: str = "none") -> None:
        super().__init__()
        check_names("avg", "relu", gate, act)
        if kernel_size % 2 != 1 or padding not in PADDINGS:
            raise ValueError(f"an odd kernel size and padding in {PADDINGS}; got "
                             f"{kernel_size}, {padding!r}")
        self.conv = nn.Conv1d(1, 1, kernel_size, bias=False)
        self.padding, self.gate, self.act = padding, gate, act
        # Sees the gate s (N, C, 1, 1) that produced the output (sedsl excite's forward hook),
        # as SqueezeExcite.probe. Parameterless, so no state-dict keys.
        self.probe = nn.Identity()

    def forward(self, u: Tensor, identity: Tensor | None = None) -> Tensor:
        if not use_triton(u):
            return self.plain(u, identity)
        out, _, s = call_eca(u, self.conv.weight, identity, self.padding, self.gate, self.act)
        if hooked(self.probe):
            self.probe(s[:, :, None, None])  # the op's own s, as a view
        return out

    def plain(self, u: Tensor, identity: Tensor | None = None) -> Tensor:
        """As timm computes it, and as the unfused lowering does, bit for bit: mean, conv1d
        over (N, 1, C) (circular padding by F.pad, zero padding by the conv), gate, scale; then
        the shortcut and the activation."""
        k = self.conv.weight.shape[-1]
        z = u.mean((2, 3))[:, None]  # (N, 1, C)
        if self.padding == "circular":
            z = nn.functional.pad(z, ((k - 1) // 2, (k - 1) // 2), mode="circular")
            y = nn.functional.conv1d(z, self.conv.weight)
        else:
            y = nn.functional.conv1d(z, self.conv.weight, padding=(k - 1) // 2)
        s = self.probe(reference.activate(self.gate, y).view(u.shape[0], -1, 1, 1))
        x = u * s  # (N, C, H, W), fresh
        if identity is not None:
            x += identity
        return reference.activate_(self.act, x)
