"""Gather-Excite's parameter-free form as one op, `torch.ops.sedsl.ge_block`: the
channel-attention family with no transform at all (theta-minus at global extent).

    sedsl::ge_block(Tensor u, Tensor? identity, str gate, str act)
        -> (Tensor out, Tensor z, Tensor s)

computes act(U * gate(mean_hw U) + identity); z and s fp32 (N, C). The statistic, the gate and
the apply pass are the SE block's kernels (sedsl.pytorch.kernels.triton_se: `ge_forward`,
`ge_backward`); like sedsl::eca_block the op saves U, the output for relu (else the identity),
z and s, and eager calls skip the dispatcher. It has no parameters.
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


def check_ge(u: Tensor, identity: Tensor | None, gate: str, act: str) -> None:
    """Raise ValueError unless the arguments describe a Gather-Excite block on u (N, C, H, W)."""
    check_names("avg", "relu", gate, act)
    if u.dim() != 4 or not u.is_floating_point():
        raise ValueError(f"u must be a floating (N, C, H, W) tensor; got {tuple(u.shape)}")
    if identity is not None and (identity.shape != u.shape or identity.dtype != u.dtype
                                 or identity.device != u.device):
        raise ValueError(f"identity must be like u {tuple(u.shape)} {u.dtype}")


def _forward(u: Tensor, identity: Tensor | None, gate: str,
             act: str) -> tuple[Tensor, Tensor, Tensor]:
    check_ge(u, identity, gate, act)
    if use_triton(u):
        result: tuple[Tensor, Tensor, Tensor] = kernels().ge_forward(u, identity, gate, act)
        return result
    with torch.autocast(u.device.type, enabled=False):
        return reference.ge_forward(u, identity, gate, act)


@torch.library.custom_op("sedsl::ge_block", mutates_args=())
def ge_block_op(u: Tensor, identity: Tensor | None, gate: str,
                act: str) -> tuple[Tensor, Tensor, Tensor]:
    """(out, z, s) of the Gather-Excite block; see the module docstring."""
    return _forward(u, identity, gate, act)


@ge_block_op.register_fake
def _ge_block_fake(u: Tensor, identity: Tensor | None, gate: str,
                   act: str) -> tuple[Tensor, Tensor, Tensor]:
    check_ge(u, identity, gate, act)
    acc = reference.accumulate_dtype(u.dtype)
    nc = tuple(u.shape[:2])
    return torch.empty_like(u), u.new_empty(nc, dtype=acc), u.new_empty(nc, dtype=acc)


@torch.library.custom_op("sedsl::ge_block_backward", mutates_args=())
def ge_block_backward_op(grad: Tensor, u: Tensor, identity: Tensor | None, out: Tensor | None,
                         z: Tensor, s: Tensor, grad_z: Tensor | None, grad_s: Tensor | None,
                         gate: str, act: str, has_identity: bool) -> tuple[Tensor, Tensor]:
    """(dU, dIdentity or empty)."""
    du, di = _backward_impl(grad, u, identity, out, z, s, grad_z, grad_s, gate, act,
                            has_identity)
    return du, u.new_empty((0,)) if di is None else di


@ge_block_backward_op.register_fake
def _ge_block_backward_fake(grad: Tensor, u: Tensor, identity: Tensor | None,
                            out: Tensor | None, z: Tensor, s: Tensor, grad_z: Tensor | None,
                            grad_s: Tensor | None, gate: str, act: str,
                            has_identity: bool) -> tuple[Tensor, Tensor]:
    like = identity if identity is not None else out if out is not None else u
    di = torch.empty_like(like) if has_identity else u.new_empty((0,))
    return torch.empty_like(u), di


def _backward_impl(grad: Tensor, u: Tensor, identity: Tensor | None, out: Tensor | None,
                   z: Tensor, s: Tensor, grad_z: Tensor | None, grad_s: Tensor | None,
                   gate: str, act: str, has_identity: bool) -> tuple[Tensor, Tensor | None]:
    args = (grad, u, identity, out, z, s, grad_z, grad_s, gate, act, has_identity)
    if use_triton(u):
        du, di = kernels().ge_backward(*args)
    else:
        with torch.autocast(u.device.type, enabled=False):
            du, di = reference.ge_backward(*args)
    return du, di


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    u, identity, gate, act = inputs
    out, z, s = output
    ctx.save_for_backward(u, *reference.for_act_grad(identity, out, act), z, s)
    ctx.config = (gate, act)
    ctx.set_materialize_grads(False)
    ctx.has_identity = identity is not None


def _backward(ctx: Any, grad: Tensor | None, grad_z: Tensor | None,
              grad_s: Tensor | None) -> tuple[Tensor | None, ...]:
    u, identity, out, z, s = ctx.saved_tensors
    if grad is None:
        grad = torch.zeros_like(u)
    args = (grad, u, identity, out, z, s, grad_z, grad_s, *ctx.config, ctx.has_identity)
    if getattr(ctx, "direct", False):
        du, di = _backward_impl(*args)
    else:
        du, di = torch.ops.sedsl.ge_block_backward(*args)
    if ctx.has_identity and ctx.config[1] == "none":  # dIdentity = dOut
        di = grad
    return du, di if ctx.has_identity else None, None, None


ge_block_op.register_autograd(_backward, setup_context=_setup_context)
install_flop_formulas()  # FlopCounterMode counts it as the plain lowering: nothing


_Direct = direct_autograd("_Direct", _forward, _setup_context, _backward)


def ge_block(u: Tensor, identity: Tensor | None = None, *, gate: str = "sigmoid",
             act: str = "none") -> Tensor:
    """act(U * gate(mean_hw U) + identity), one fused op."""
    return call_ge(u, identity, gate, act)[0]


def call_ge(u: Tensor, identity: Tensor | None, gate: str,
            act: str) -> tuple[Tensor, Tensor, Tensor]:
    """The op's (out, z, s): eager calls on the Triton path skip the dispatcher (_Direct)."""
    if use_triton(u) and direct_ok(u, identity):
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                           for t in (u, identity)):
            direct: tuple[Tensor, Tensor, Tensor] = _Direct.apply(u, identity, gate, act)
            return direct
        return _forward(u, identity, gate, act)
    result: tuple[Tensor, Tensor, Tensor] = torch.ops.sedsl.ge_block(u, identity, gate, act)
    return result


class GatherExcite(nn.Module):
    """Gather-Excite's parameter-free form (theta-minus at global extent: timm's GatherExcite
    with extent 0 and no MLP) [+ shortcut add [+ activation]] as one op: x * gate(mean_hw x).
    No parameters, so no state-dict keys, as the plain lowering. What generated fused models
    use for the `ge` variant with gather = mean and no MLP (sedsl.ir.ops.TRANSFORMS,
    identity)."""

    def __init__(self, gate: str = "sigmoid", act: str = "none") -> None:
        super().__init__()
        check_names("avg", "relu", gate, act)
        self.gate, self.act = gate, act
        # Sees the gate s (N, C, 1, 1) that produced the output (sedsl excite's forward hook),
        # as SqueezeExcite.probe. Parameterless, so no state-dict keys.
        self.probe = nn.Identity()

    def forward(self, u: Tensor, identity: Tensor | None = None) -> Tensor:
        if not use_triton(u):
            return self.plain(u, identity)
        out, _, s = call_ge(u, identity, self.gate, self.act)
        if hooked(self.probe):
            self.probe(s[:, :, None, None])  # the op's own s, as a view
        return out

    def plain(self, u: Tensor, identity: Tensor | None = None) -> Tensor:
        """As the unfused lowering computes it, bit for bit: mean, gate, scale; then the
        shortcut and the activation."""
        s = self.probe(reference.activate(self.gate, u.mean((2, 3), keepdim=True)))
        x = u * s  # (N, C, H, W), fresh
        if identity is not None:
            x += identity
        return reference.activate_(self.act, x)

    def extra_repr(self) -> str:
        return f"gate={self.gate!r}, act={self.act!r}"
