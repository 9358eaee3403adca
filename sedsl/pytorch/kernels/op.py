"""The fused SE block as a torch.library op, `torch.ops.sedsl.se_block` (the module that
generated models use, SqueezeExcite, is sedsl.pytorch.kernels.module).

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

Which code runs is decided by `use_triton`, the one switch. Eager calls on the Triton path skip
torch.library's dispatch (`call_op`, `_Fused`); whatever traces or watches the op
(`direct_ok`) gets it.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from sedsl.ir import vocab
from sedsl.pytorch.flops import install_flop_formulas
from sedsl.pytorch.kernels import reference
from sedsl.pytorch.kernels.interpret import interpreting

TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The Triton path for CPU tensors too: for bench/se_host_overhead.py, whose stub driver runs
# Triton's host path and launches nothing. Read by `use_triton`, which every op calls.
FORCE_TRITON = False


def use_triton(u: Tensor) -> bool:
    """The switch: Triton kernels for CUDA tensors, and for any tensor under TRITON_INTERPRET=1;
    the plain-torch reference otherwise (and for float64 or empty U)."""
    return ((u.is_cuda or interpreting() or FORCE_TRITON) and u.dtype in TRITON_DTYPES
            and u.numel() > 0)


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


_CHECKED: set[tuple[Any, ...]] = set()  # argument signatures `check` has passed


def _signature(t: Tensor | None) -> tuple[Any, ...] | None:
    return None if t is None else (t.shape, t.dtype, t.device)


def checked(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
            identity: Tensor | None, squeeze: str, excite: str, gate: str, act: str) -> None:
    """`check`, once per signature (shapes, dtypes, devices, names: all it looks at), so that
    the calls of a training loop skip the validation; w1 and w2 may be 1x1 conv weights."""
    key = (*map(_signature, (u, w1, b1, w2, b2, identity)), squeeze, excite, gate, act)
    if key not in _CHECKED:
        check(u, as_matrix(w1), b1, as_matrix(w2), b2, identity, squeeze, excite, gate, act)
        if len(_CHECKED) > 4096:
            _CHECKED.clear()
        _CHECKED.add(key)


def as_matrix(w: Tensor) -> Tensor:
    """A 1x1 conv weight (O, I, 1, 1) as its (O, I) matrix, a view."""
    return w.flatten(1) if w.dim() == 4 else w


def _forward(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
             identity: Tensor | None, squeeze: str, excite: str, gate: str,
             act: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The op's forward: the Triton kernels or the reference, after `checked`."""
    if use_triton(u):
        return _forward_triton(u, w1, b1, w2, b2, identity, squeeze, excite, gate, act)
    checked(u, w1, b1, w2, b2, identity, squeeze, excite, gate, act)
    with torch.autocast(u.device.type, enabled=False):  # s in fp32, as the fake promises
        return reference.forward(u, as_matrix(w1), b1, as_matrix(w2), b2, identity, squeeze, excite,
                                 gate, act)


def _forward_triton(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
                    identity: Tensor | None, squeeze: str, excite: str, gate: str,
                    act: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    checked(u, w1, b1, w2, b2, identity, squeeze, excite, gate, act)
    out: tuple[Tensor, Tensor, Tensor, Tensor] = kernels().forward(
        u, w1, b1, w2, b2, identity, squeeze, excite, gate, act)
    return out


_TRITON_SE: list[Any] = []


def kernels() -> Any:
    """sedsl.pytorch.kernels.triton_se, imported on first use (it imports triton)."""
    if not _TRITON_SE:
        from sedsl.pytorch.kernels import triton_se

        _TRITON_SE.append(triton_se)
    return _TRITON_SE[0]


@torch.library.custom_op("sedsl::se_block", mutates_args=())
def se_block_op(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
                identity: Tensor | None, squeeze: str, excite: str, gate: str,
                act: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(out, z, s, idx) of the SE block; see the module docstring."""
    if w1.dim() != 2 or w2.dim() != 2:  # the schema's w1 (R, C), w2 (C, R)
        check(u, w1, b1, w2, b2, identity, squeeze, excite, gate, act)
    return _forward(u, w1, b1, w2, b2, identity, squeeze, excite, gate, act)


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
                         b2: Tensor | None, identity: Tensor | None, out: Tensor | None,
                         z: Tensor, s: Tensor, idx: Tensor, grad_z: Tensor | None,
                         grad_s: Tensor | None, squeeze: str, excite: str, gate: str, act: str,
                         has_identity: bool
                         ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dU, dIdentity, dW1, db1, dW2, db2); absent ones are empty tensors. act's derivative
    from `out` (the block's output) when given, else from y = s * U + identity."""
    du, di, dw1, db1, dw2, db2 = _backward_impl(grad, u, w1, b1, w2, b2, identity, out, z, s,
                                                idx, grad_z, grad_s, squeeze, excite, gate, act,
                                                has_identity)
    return du, _or_empty(di, u), dw1, _or_empty(db1, u), dw2, _or_empty(db2, u)


def _backward_impl(grad: Tensor, u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor,
                   b2: Tensor | None, identity: Tensor | None, out: Tensor | None, z: Tensor,
                   s: Tensor, idx: Tensor, grad_z: Tensor | None, grad_s: Tensor | None,
                   squeeze: str, excite: str, gate: str, act: str,
                   has_identity: bool) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None,
                                                Tensor, Tensor | None]:
    """The op's backward: the Triton kernels or the reference; gradients of 1x1 conv weights
    come back in their shapes."""
    args = (grad, u, w1, b1, w2, b2, identity, out, z, s, idx, grad_z, grad_s, squeeze, excite,
            gate, act, has_identity)
    if use_triton(u):
        grads = kernels().backward(*args)
    else:
        with torch.autocast(u.device.type, enabled=False):
            grads = reference.backward(grad, u, as_matrix(w1), b1, as_matrix(w2), b2, *args[6:])
    du, di, dw1, db1, dw2, db2 = grads
    return du, di, dw1.view(w1.shape), db1, dw2.view(w2.shape), db2


@se_block_backward_op.register_fake
def _se_block_backward_fake(grad: Tensor, u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor,
                            b2: Tensor | None, identity: Tensor | None, out: Tensor | None,
                            z: Tensor, s: Tensor, idx: Tensor, grad_z: Tensor | None,
                            grad_s: Tensor | None, squeeze: str, excite: str, gate: str,
                            act: str, has_identity: bool
                            ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    def like(t: Tensor | None) -> Tensor:
        return u.new_empty((0,)) if t is None else torch.empty_like(t)

    di = like(identity if identity is not None else u) if has_identity else like(None)
    return like(u), di, like(w1), like(b1), like(w2), like(b2)


def _or_empty(t: Tensor | None, like: Tensor) -> Tensor:
    return like.new_empty((0,)) if t is None else t


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    u, w1, b1, w2, b2, identity, squeeze, excite, gate, act = inputs
    out, z, s, idx = output
    # Backward recomputes y = s * U + identity only for act'(y); relu's derivative comes from
    # the output (reference.ACTS_FROM_OUTPUT), which the next layer saves anyway.
    ctx.save_for_backward(u, w1, b1, w2, b2, *reference.for_act_grad(identity, out, act), z, s,
                          idx)
    ctx.config = (squeeze, excite, gate, act)
    ctx.set_materialize_grads(False)  # unused z and s get None, not (N, C) zeros to add
    ctx.has = (b1 is not None, b2 is not None, identity is not None)


def _backward(ctx: Any, grad: Tensor, grad_z: Tensor | None, grad_s: Tensor | None,
              _grad_idx: Tensor | None) -> tuple[Tensor | None, ...]:
    u, w1, b1, w2, b2, identity, out, z, s, idx = ctx.saved_tensors
    if grad is None:  # only z or s was used
        grad = torch.zeros_like(u)
    has_b1, has_b2, has_identity = ctx.has
    args = (grad, u, w1, b1, w2, b2, identity, out, z, s, idx, grad_z, grad_s, *ctx.config,
            has_identity)
    if getattr(ctx, "direct", False):  # the eager path (_Fused): no dispatcher
        du, di, dw1, db1, dw2, db2 = _backward_impl(*args)
    else:
        du, di, dw1, db1, dw2, db2 = torch.ops.sedsl.se_block_backward(*args)
    if has_identity and ctx.config[3] == "none":  # dIdentity = dOut
        di = grad
    return (du, dw1, db1 if has_b1 else None, dw2, db2 if has_b2 else None,
            di if has_identity else None, None, None, None, None)


se_block_op.register_autograd(_backward, setup_context=_setup_context)
install_flop_formulas()  # FlopCounterMode counts the op as the plain lowering's convolutions


def direct_autograd(name: str, forward: Callable[..., Tensor | tuple[Tensor, ...]],
                    setup_context: Callable[[Any, tuple[Any, ...], Any], None],
                    backward: Callable[..., tuple[Tensor | None, ...]],
                    non_differentiable: int | None = None) -> type[torch.autograd.Function]:
    """An op's autograd without the dispatcher, for eager calls: an autograd.Function running
    the op's own forward, setup_context and backward, so it saves what the registered op saves.
    Going through torch.library's dispatch (the op, its autograd wrapper, the redispatch to the
    device) costs about as much host time as the four forward launches did after
    sedsl.pytorch.kernels.launch. Outputs from `non_differentiable` on are marked so; `name`
    names the Function (its grad_fn is `<name>Backward`)."""

    def run(ctx: Any, *args: Any) -> Tensor | tuple[Tensor, ...]:
        # ctx in forward, not a setup_context: apply() would bind the arguments to the
        # signature with inspect on every call (~20 µs)
        output = forward(*args)
        setup_context(ctx, args, output)
        if non_differentiable is not None:
            ctx.mark_non_differentiable(*output[non_differentiable:])
        ctx.direct = True  # the backward calls its implementation, not the backward op
        return output

    def body(ns: dict[str, Any]) -> None:
        ns.update(forward=staticmethod(run), backward=staticmethod(backward),
                  __doc__=f"{name}: the op's autograd without the dispatcher (direct_autograd).")

    return types.new_class(name, (torch.autograd.Function,), exec_body=body)


_Fused = direct_autograd("_Fused", _forward_triton, _setup_context, _backward)


_MODES = getattr(torch._C, "_len_torch_dispatch_stack", None)
_FUNCTORCH = getattr(torch._C, "_are_functorch_transforms_active", None)
_TRACING = getattr(torch._C, "_get_tracing_state", None)  # TorchScript's torch.jit.trace


def direct_ok(*tensors: Tensor | None) -> bool:
    """Whether a call may skip the dispatcher: not traced (torch.compile, torch.export,
    TorchScript as fvcore traces), under no dispatch mode (FlopCounterMode, fake tensors,
    make_fx) or functorch transform, and no tensor subclass: wherever the op must be seen."""
    if _MODES is None or _FUNCTORCH is None or _TRACING is None:  # a torch without these
        return False
    return not (torch.compiler.is_compiling() or _TRACING() is not None or _MODES()
                or _FUNCTORCH()
                or torch.overrides.has_torch_function([t for t in tensors if t is not None]))


def call_op(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
          identity: Tensor | None, squeeze: str, excite: str, gate: str, act: str,
          triton: bool | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The op's outputs: eager calls on the Triton path directly (through `_Fused` when a
    gradient is needed), everything else through `torch.ops.sedsl.se_block`; w1 and w2 as
    matrices or 1x1 conv weights; `triton`: use_triton(u) when the caller knows it."""
    if (use_triton(u) if triton is None else triton) and direct_ok(u, identity):
        if torch.is_grad_enabled() and any(
                t is not None and t.requires_grad for t in (u, w1, b1, w2, b2, identity)):
            out: tuple[Tensor, Tensor, Tensor, Tensor] = _Fused.apply(
                u, w1, b1, w2, b2, identity, squeeze, excite, gate, act)
            return out
        return _forward_triton(u, w1, b1, w2, b2, identity, squeeze, excite, gate, act)
    result: tuple[Tensor, Tensor, Tensor, Tensor] = torch.ops.sedsl.se_block(
        u, as_matrix(w1), b1, as_matrix(w2), b2, identity, squeeze, excite, gate, act)
    return result


def se_block(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
             identity: Tensor | None = None, *, squeeze: str = "avg", excite: str = "relu",
             gate: str = "sigmoid", act: str = "none") -> Tensor:
    """act(gate(excite(squeeze_hw(U) W1^T + b1) W2^T + b2) * U + identity), one fused op;
    w1/w2 as (R, C)/(C, R) matrices or (R, C, 1, 1)/(C, R, 1, 1) 1x1 conv weights."""
    return call_op(u, w1, b1, w2, b2, identity, squeeze, excite, gate, act)[0]


def hooked(m: nn.Module) -> bool:
    """Whether calling m could run a hook (its own or a global one): the probe is an identity,
    so without hooks it is skipped (a module call and a view, ~5 µs of an eager block's host
    time), but under tracing it is always called."""
    from torch.nn.modules import module as nn_module

    return bool(m._forward_hooks or m._forward_pre_hooks or nn_module._global_forward_hooks
                or nn_module._global_forward_pre_hooks or not direct_ok())
