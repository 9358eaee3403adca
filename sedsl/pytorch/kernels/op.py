"""The fused SE block as a torch.library op, `torch.ops.sedsl.se_block`, and its module.

    sedsl::se_block(Tensor u, Tensor w1, Tensor? b1, Tensor w2, Tensor? b2, Tensor? identity,
                    str squeeze, str excite, str gate, str act) -> (Tensor, Tensor, Tensor, Tensor)

returns (out, z, s, idx): the block's output in U's dtype and layout, the squeezed z (N, C) and
the gate s (N, C) in the accumulate dtype (float32; float64 for float64 U) whatever autocast
says, and for "max" the int32 (N, C) count of the positions equal to the maximum (else an empty
tensor): max squeeze's gradient follows torch.amax, split evenly between tied maxima. z and s
are what backward needs; they are outputs so that autograd can save them, and they are
differentiable like `out`.
`sedsl::se_block_backward` is the backward, an op of its own so that torch.compile and
torch.export trace through both directions with the fake implementations below.

Which code runs is decided by `use_triton`, the one switch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sedsl.ir import vocab
from sedsl.pytorch.kernels import reference
from sedsl.pytorch.kernels.interpret import interpreting

TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def use_triton(u: Tensor) -> bool:
    """The switch: Triton kernels for CUDA tensors, and for any tensor under TRITON_INTERPRET=1;
    the plain-torch reference otherwise (and for float64 or empty U)."""
    return (u.is_cuda or interpreting()) and u.dtype in TRITON_DTYPES and u.numel() > 0


def check_names(squeeze: str, excite: str, gate: str, act: str) -> None:
    """Raise ValueError unless the kernels implement the four choices (sedsl.ir.vocab's
    `kernel`)."""
    acts = tuple(n for n in reference.EXCITES if n in vocab.KERNEL_ACTIVATIONS)
    squeezes = tuple(n for n in reference.SQUEEZES if n in vocab.KERNEL_SQUEEZES)
    gates = tuple(n for n in reference.GATES if n in acts)
    for what, name, allowed in (("squeeze", squeeze, squeezes), ("excite", excite, acts),
                                ("gate", gate, gates), ("act", act, ("none", *acts))):
        if name not in allowed:
            raise ValueError(f"{what} must be one of {', '.join(allowed)}; got {name!r}")


def check(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
          identity: Tensor | None, squeeze: str, excite: str, gate: str, act: str) -> None:
    """Raise ValueError unless the arguments describe an SE block (w1 (R, C), w2 (C, R))."""
    check_names(squeeze, excite, gate, act)
    if u.dim() != 4 or not u.is_floating_point():
        raise ValueError(f"u must be a floating (N, C, H, W) tensor; got {tuple(u.shape)}")
    c, r = u.shape[1], w1.shape[0]
    shapes = {"w1": (w1, (r, c)), "w2": (w2, (c, r)), "b1": (b1, (r,)), "b2": (b2, (c,)),
              "identity": (identity, tuple(u.shape))}
    for name, (t, want) in shapes.items():
        if t is not None and tuple(t.shape) != want:
            raise ValueError(f"{name} must have shape {want}; got {tuple(t.shape)}")
        if t is not None and t.device != u.device:
            raise ValueError(f"{name} is on {t.device}, u on {u.device}")
    if identity is not None and identity.dtype != u.dtype:
        raise ValueError(f"identity must have u's dtype {u.dtype}; got {identity.dtype}")
    if squeeze == "max" and u.shape[2] * u.shape[3] == 0 and u.shape[0] * u.shape[1] > 0:
        raise ValueError(f"max squeeze needs H*W > 0; got u of shape {tuple(u.shape)}")


@torch.library.custom_op("sedsl::se_block", mutates_args=())
def se_block_op(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
                identity: Tensor | None, squeeze: str, excite: str, gate: str,
                act: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(out, z, s, idx) of the SE block; see the module docstring."""
    check(u, w1, b1, w2, b2, identity, squeeze, excite, gate, act)
    with torch.autocast(u.device.type, enabled=False):  # s in fp32, as the fake promises
        if use_triton(u):
            from sedsl.pytorch.kernels import triton_se  # imports triton: only when kernels run

            return triton_se.forward(u, w1, b1, w2, b2, identity, squeeze, excite, gate, act)
        return reference.forward(u, w1, b1, w2, b2, identity, squeeze, excite, gate, act)


@se_block_op.register_fake
def _se_block_fake(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
                   identity: Tensor | None, squeeze: str, excite: str, gate: str,
                   act: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    check(u, w1, b1, w2, b2, identity, squeeze, excite, gate, act)
    nc = tuple(u.shape[:2])
    acc = reference.accumulate_dtype(u.dtype)
    idx = u.new_empty(nc if squeeze == "max" else (0,), dtype=torch.int32)
    return torch.empty_like(u), u.new_empty(nc, dtype=acc), u.new_empty(nc, dtype=acc), idx


@torch.library.custom_op("sedsl::se_block_backward", mutates_args=())
def se_block_backward_op(grad: Tensor, u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor,
                         b2: Tensor | None, identity: Tensor | None, z: Tensor, s: Tensor,
                         idx: Tensor, grad_z: Tensor | None, grad_s: Tensor | None,
                         squeeze: str, excite: str, gate: str,
                         act: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dU, dIdentity, dW1, db1, dW2, db2); absent inputs get empty tensors."""
    args = (grad, u, w1, b1, w2, b2, identity, z, s, idx, grad_z, grad_s,
            squeeze, excite, gate, act)
    with torch.autocast(u.device.type, enabled=False):
        if use_triton(u):
            from sedsl.pytorch.kernels import triton_se

            grads = triton_se.backward(*args)
        else:
            grads = reference.backward(*args)
    du, di, dw1, db1, dw2, db2 = grads
    return du, _or_empty(di, u), dw1, _or_empty(db1, u), dw2, _or_empty(db2, u)


@se_block_backward_op.register_fake
def _se_block_backward_fake(grad: Tensor, u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor,
                            b2: Tensor | None, identity: Tensor | None, z: Tensor, s: Tensor,
                            idx: Tensor, grad_z: Tensor | None, grad_s: Tensor | None,
                            squeeze: str, excite: str, gate: str,
                            act: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    def like(t: Tensor | None) -> Tensor:
        return u.new_empty((0,)) if t is None else torch.empty_like(t)

    return like(u), like(identity), like(w1), like(b1), like(w2), like(b2)


def _or_empty(t: Tensor | None, like: Tensor) -> Tensor:
    return like.new_empty((0,)) if t is None else t


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    u, w1, b1, w2, b2, identity, squeeze, excite, gate, act = inputs
    _, z, s, idx = output
    # y = s * U + identity is recomputed in backward; identity is only needed for act'(y)
    ctx.save_for_backward(u, w1, b1, w2, b2, identity if act != "none" else None, z, s, idx)
    ctx.config = (squeeze, excite, gate, act)
    ctx.set_materialize_grads(False)  # unused z and s get None, not (N, C) zeros to add
    ctx.has = (b1 is not None, b2 is not None, identity is not None)


def _backward(ctx: Any, grad: Tensor, grad_z: Tensor | None, grad_s: Tensor | None,
              _grad_idx: Tensor | None) -> tuple[Tensor | None, ...]:
    u, w1, b1, w2, b2, identity, z, s, idx = ctx.saved_tensors
    if grad is None:  # only z or s was used
        grad = torch.zeros_like(u)
    du, di, dw1, db1, dw2, db2 = torch.ops.sedsl.se_block_backward(
        grad, u, w1, b1, w2, b2, identity, z, s, idx, grad_z, grad_s, *ctx.config)
    has_b1, has_b2, has_identity = ctx.has
    if has_identity and identity is None:  # act == "none": dIdentity = dOut
        di = grad
    return (du, dw1, db1 if has_b1 else None, dw2, db2 if has_b2 else None,
            di if has_identity else None, None, None, None, None)


se_block_op.register_autograd(_backward, setup_context=_setup_context)


def se_block(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
             identity: Tensor | None = None, *, squeeze: str = "avg", excite: str = "relu",
             gate: str = "sigmoid", act: str = "none") -> Tensor:
    """act(gate(excite(squeeze_hw(U) W1^T + b1) W2^T + b2) * U + identity), one fused op;
    w1/w2 as (R, C)/(C, R) matrices or (R, C, 1, 1)/(C, R, 1, 1) 1x1 conv weights."""
    w1 = w1.flatten(1) if w1.dim() == 4 else w1  # (R, C)
    w2 = w2.flatten(1) if w2.dim() == 4 else w2  # (C, R)
    out: Tensor = torch.ops.sedsl.se_block(u, w1, b1, w2, b2, identity, squeeze, excite, gate,
                                           act)[0]
    return out


class SqueezeExcite(nn.Module):
    """SE block [+ shortcut add [+ activation]] as one op; fc1/fc2 state-dict keys as timm's."""

    def __init__(self, channels: int, rd_channels: int, bias: bool = True, squeeze: str = "avg",
                 excite: str = "relu", gate: str = "sigmoid", act: str = "none") -> None:
        super().__init__()
        check_names(squeeze, excite, gate, act)
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=bias)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=bias)
        self.squeeze, self.excite, self.gate, self.act = squeeze, excite, gate, act
        # Sees the gate s (N, C, 1, 1) that produced the output: a forward hook here records
        # the excitation (sedsl excite). Parameterless, so no state-dict keys.
        self.probe = nn.Identity()

    def forward(self, u: Tensor, identity: Tensor | None = None) -> Tensor:
        if not use_triton(u):
            return self.plain(u, identity)
        out, _, s, _ = torch.ops.sedsl.se_block(
            u, self.fc1.weight.flatten(1), self.fc1.bias, self.fc2.weight.flatten(1),
            self.fc2.bias, identity, self.squeeze, self.excite, self.gate, self.act)
        self.probe(s[:, :, None, None])  # the op's own s, as a view
        result: Tensor = out
        return result

    def plain(self, u: Tensor, identity: Tensor | None = None) -> Tensor:
        """The block as ordinary torch ops: where the kernels do not run (the CPU), eager mode,
        autograd and torch.compile's inductor all do best with these (the op's CPU
        implementation would hide them from inductor's fusion), and the results are those of
        the unfused lowering, bit for bit."""
        z = u.mean((2, 3), keepdim=True) if self.squeeze == "avg" else u.amax((2, 3), keepdim=True)
        h = reference.activate(self.excite, self.fc1(z))  # (N, R, 1, 1)
        x = u * self.probe(reference.activate(self.gate, self.fc2(h)))  # (N, C, H, W), fresh
        if identity is not None:
            x += identity
        return reference.activate_(self.act, x)

    def extra_repr(self) -> str:
        return (f"squeeze={self.squeeze!r}, excite={self.excite!r}, gate={self.gate!r}, "
                f"act={self.act!r}")
