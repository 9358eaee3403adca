"""The SE block with the BatchNorm before it folded in, `torch.ops.sedsl.se_bn_block`: the
standard position (a bottleneck's conv3 -> bn3 -> SE -> + shortcut -> relu) as one op.

    sedsl::se_bn_block(Tensor x, Tensor weight, Tensor bias, Tensor running_mean,
                       Tensor running_var, Tensor num_batches_tracked, Tensor w1, Tensor? b1,
                       Tensor w2, Tensor? b2, Tensor? identity, bool training, float momentum,
                       float eps, str squeeze, str excite, str gate, str act)
        -> (Tensor out, Tensor z, Tensor s, Tensor stats, Tensor running_mean',
            Tensor running_var', Tensor num_batches_tracked')

computes act(SE(BN(x)) + identity) for the avg squeeze, BN as nn.BatchNorm2d computes it
(batch statistics in training, the running statistics otherwise). z and s are the SE block's
(fp32 (N, C)); stats = (mean, rstd) (2, C) are the BN's, as its own backward keeps them. The
backward needs x, s and stats: it recomputes BN(x) = a * x + b (a = weight * rstd, b = bias -
mean * a) and, from its own pass over x, z. In training the last three outputs are
the BN's running statistics updated as nn.BatchNorm2d updates them (momentum-weighted, with
the unbiased variance, and num_batches_tracked counted), which the caller copies into the
buffers (`call`); in eval they are empty. The op is functional (torch.library registers autograd
only for those); eager calls skip the dispatcher and the kernel updates the buffers in place.

Why: the unfused block saves BN's input x, and for the SE block U = BN(x) (and the identity);
Inductor recomputes U and keeps only vectors, the opaque op could not. Folded, the op saves x
(which BN saves anyway), the output for relu (which the next layer saves anyway) and O(N * C)
vectors, and recomputes U, the gate product and the mask in backward: an SE network saves no
more activation memory than its base network. The squeeze pass over x also gives the BN's
statistics and the scale pass applies BN on the fly, so the BN's own passes over the tensor go.
"""

from __future__ import annotations

import functools
from typing import Any, TypeGuard

import torch
from torch import Tensor, nn

from sedsl.pytorch.flops import install_flop_formulas
from sedsl.pytorch.kernels import reference
from sedsl.pytorch.kernels.op import (
    as_matrix,
    check,
    direct_autograd,
    direct_ok,
    kernels,
    use_triton,
)

Outputs = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def foldable(bn: nn.Module, squeeze: str) -> TypeGuard[nn.BatchNorm2d]:
    """Whether the op computes `bn` followed by an SE block with this squeeze: an affine
    nn.BatchNorm2d with running statistics and a momentum (None, the cumulative average,
    would need the step count on the host), and the avg squeeze (max of a * x + b would need
    the minimum of x where a < 0)."""
    return (squeeze == "avg" and isinstance(bn, nn.BatchNorm2d) and bn.affine
            and bn.track_running_stats and bn.running_mean is not None
            and bn.running_var is not None and bn.num_batches_tracked is not None
            and bn.momentum is not None)


def check_bn(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, w1: Tensor,
             b1: Tensor | None, w2: Tensor, b2: Tensor | None, identity: Tensor | None,
             training: bool, squeeze: str, excite: str, gate: str, act: str) -> None:
    """Raise ValueError unless the arguments describe a BN (C,) before an SE block on x."""
    check(x, as_matrix(w1), b1, as_matrix(w2), b2, identity, squeeze, excite, gate, act)
    if squeeze != "avg":
        raise ValueError(f"a folded BN needs the avg squeeze; got {squeeze!r}")
    c = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean)):
        if tuple(t.shape) != (c,) or t.device != x.device:
            raise ValueError(f"BN {name} must be ({c},) on {x.device}; got {tuple(t.shape)}")
    if training and x.numel() // max(c, 1) <= 1:
        raise ValueError(f"BN in training needs more than 1 value per channel; got x of shape "
                         f"{tuple(x.shape)}")


_CHECKED: set[tuple[Any, ...]] = set()


def _checked(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, w1: Tensor,
             b1: Tensor | None, w2: Tensor, b2: Tensor | None, identity: Tensor | None,
             training: bool, squeeze: str, excite: str, gate: str, act: str) -> None:
    """`check_bn`, once per signature (shapes, dtypes, devices, flags: all it looks at)."""
    sig = [None if t is None else (t.shape, t.dtype, t.device)
           for t in (x, weight, bias, running_mean, w1, b1, w2, b2, identity)]
    key = (*sig, training, squeeze, excite, gate, act)
    if key not in _CHECKED:
        check_bn(x, weight, bias, running_mean, w1, b1, w2, b2, identity, training, squeeze,
                 excite, gate, act)
        _CHECKED.add(key)


def _forward(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor,
             running_var: Tensor, num_batches_tracked: Tensor, w1: Tensor, b1: Tensor | None,
             w2: Tensor, b2: Tensor | None, identity: Tensor | None, training: bool,
             momentum: float, eps: float, squeeze: str, excite: str, gate: str, act: str, *,
             in_place: bool = False) -> Outputs:
    """The op's outputs; with `in_place` the running statistics are updated in the buffers
    (the eager path) and the last three outputs are empty."""
    _checked(x, weight, bias, running_mean, w1, b1, w2, b2, identity, training, squeeze,
             excite, gate, act)
    state = (running_mean, running_var, num_batches_tracked)
    updated = None if in_place or not training else (
        torch.empty_like(running_mean), torch.empty_like(running_var),
        torch.empty_like(num_batches_tracked))
    if use_triton(x):
        result = kernels().bn_forward(x, weight, bias, *state, w1, b1, w2, b2, identity,
                                      training, momentum, eps, excite, gate, act, updated)
    else:
        with torch.autocast(x.device.type, enabled=False):
            result = reference.bn_forward(x, weight, bias, *state, as_matrix(w1), b1, as_matrix(w2),
                                          b2, identity, training, momentum, eps, excite, gate,
                                          act, updated)
    out, z, s, stats = result
    new = updated or (x.new_empty((0,)), x.new_empty((0,)), x.new_empty((0,)))  # no aliases
    return out, z, s, stats, *new


@torch.library.custom_op("sedsl::se_bn_block", mutates_args=())
def se_bn_block_op(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor,
                   running_var: Tensor, num_batches_tracked: Tensor, w1: Tensor,
                   b1: Tensor | None, w2: Tensor, b2: Tensor | None, identity: Tensor | None,
                   training: bool, momentum: float, eps: float, squeeze: str, excite: str,
                   gate: str, act: str) -> Outputs:
    """(out, z, s, stats, running statistics') of act(SE(BN(x)) + identity); see the module
    docstring."""
    if w1.dim() != 2 or w2.dim() != 2:  # the schema's w1 (R, C), w2 (C, R)
        check(x, w1, b1, w2, b2, identity, squeeze, excite, gate, act)
    return _forward(x, weight, bias, running_mean, running_var, num_batches_tracked, w1, b1,
                    w2, b2, identity, training, momentum, eps, squeeze, excite, gate, act)


@se_bn_block_op.register_fake
def _se_bn_block_fake(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor,
                      running_var: Tensor, num_batches_tracked: Tensor, w1: Tensor,
                      b1: Tensor | None, w2: Tensor, b2: Tensor | None, identity: Tensor | None,
                      training: bool, momentum: float, eps: float, squeeze: str, excite: str,
                      gate: str, act: str) -> Outputs:
    check_bn(x, weight, bias, running_mean, w1, b1, w2, b2, identity, training, squeeze,
             excite, gate, act)
    n, c = x.shape[:2]
    acc = reference.accumulate_dtype(x.dtype)
    z, s = x.new_empty((n, c), dtype=acc), x.new_empty((n, c), dtype=acc)
    updated = [torch.empty_like(t) if training else x.new_empty((0,))
               for t in (running_mean, running_var, num_batches_tracked)]
    return (torch.empty_like(x), z, s, x.new_empty((2, c), dtype=acc), updated[0], updated[1],
            updated[2])


@torch.library.custom_op("sedsl::se_bn_block_backward", mutates_args=())
def se_bn_block_backward_op(grad: Tensor, x: Tensor, weight: Tensor, bias: Tensor, w1: Tensor,
                            b1: Tensor | None, w2: Tensor, b2: Tensor | None,
                            identity: Tensor | None, out: Tensor | None, s: Tensor,
                            stats: Tensor, grad_z: Tensor | None, grad_s: Tensor | None,
                            training: bool, excite: str, gate: str, act: str,
                            has_identity: bool
                            ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                       Tensor]:
    """(dX, dIdentity, dgamma, dbeta, dW1, db1, dW2, db2); absent ones are empty tensors."""
    dx, di, dg, db, dw1, db1, dw2, db2 = _backward_impl(
        grad, x, weight, bias, w1, b1, w2, b2, identity, out, s, stats, grad_z, grad_s,
        training, excite, gate, act, has_identity)
    empty = x.new_empty((0,))
    return (dx, empty if di is None else di, dg, db, dw1, empty if db1 is None else db1, dw2,
            empty if db2 is None else db2)


def _backward_impl(grad: Tensor, x: Tensor, weight: Tensor, bias: Tensor, w1: Tensor,
                   b1: Tensor | None, w2: Tensor, b2: Tensor | None, identity: Tensor | None,
                   out: Tensor | None, s: Tensor, stats: Tensor, grad_z: Tensor | None,
                   grad_s: Tensor | None, training: bool, excite: str, gate: str, act: str,
                   has_identity: bool) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor,
                                                Tensor | None, Tensor, Tensor | None]:
    """The op's backward: the Triton kernels or the reference; 1x1 conv weights' gradients
    in their shapes."""
    saved = (identity, out, s, stats, grad_z, grad_s, training, excite, gate, act,
             has_identity)
    if use_triton(x):
        grads = kernels().bn_backward(grad, x, weight, bias, w1, b1, w2, b2, *saved)
    else:
        with torch.autocast(x.device.type, enabled=False):
            grads = reference.bn_backward(grad, x, weight, bias, as_matrix(w1), b1, as_matrix(w2),
                                          b2, *saved)
    dx, di, dg, db, dw1, db1, dw2, db2 = grads
    return dx, di, dg, db, dw1.view(w1.shape), db1, dw2.view(w2.shape), db2


@se_bn_block_backward_op.register_fake
def _se_bn_block_backward_fake(grad: Tensor, x: Tensor, weight: Tensor, bias: Tensor,
                               w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
                               identity: Tensor | None, out: Tensor | None, s: Tensor,
                               stats: Tensor, grad_z: Tensor | None, grad_s: Tensor | None,
                               training: bool, excite: str, gate: str, act: str,
                               has_identity: bool
                               ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                          Tensor, Tensor]:
    def like(t: Tensor | None) -> Tensor:
        return x.new_empty((0,)) if t is None else torch.empty_like(t)

    di = like(identity if identity is not None else out if out is not None else x) \
        if has_identity else like(None)
    return like(x), di, like(weight), like(weight), like(w1), like(b1), like(w2), like(b2)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    (x, weight, bias, _, _, _, w1, b1, w2, b2, identity, training, _, _, _, excite, gate,
     act) = inputs
    out, _, s, stats = output[:4]  # then the updated running statistics
    # x is what BN saves anyway, the output (relu) what the next layer saves; besides them
    # only s (N, C) and the BN's (mean, rstd): U = a * x + b, z, the gate product and the mask
    # are recomputed
    ctx.save_for_backward(x, weight, bias, w1, b1, w2, b2,
                          *reference.for_act_grad(identity, out, act), s, stats)
    ctx.config = (training, excite, gate, act)
    ctx.set_materialize_grads(False)  # unused outputs get None, not zeros to add
    ctx.has = (b1 is not None, b2 is not None, identity is not None)


def _backward(ctx: Any, grad: Tensor | None, grad_z: Tensor | None, grad_s: Tensor | None,
              *_unused: Any) -> tuple[Tensor | None, ...]:
    x, weight, bias, w1, b1, w2, b2, identity, out, s, stats = ctx.saved_tensors
    if grad is None:  # only z or s was used
        grad = torch.zeros_like(x)
    has_b1, has_b2, has_identity = ctx.has
    args = (grad, x, weight, bias, w1, b1, w2, b2, identity, out, s, stats, grad_z, grad_s,
            *ctx.config, has_identity)
    if getattr(ctx, "direct", False):  # the eager path (_Folded): no dispatcher
        dx, di, dg, db, dw1, db1, dw2, db2 = _backward_impl(*args)
    else:
        dx, di, dg, db, dw1, db1, dw2, db2 = torch.ops.sedsl.se_bn_block_backward(*args)
    if has_identity and ctx.config[3] == "none":  # dIdentity = dOut
        di = grad
    return (dx, dg, db, None, None, None, dw1, db1 if has_b1 else None, dw2,
            db2 if has_b2 else None, di if has_identity else None, *([None] * 7))


se_bn_block_op.register_autograd(_backward, setup_context=_setup_context)
install_flop_formulas()  # FlopCounterMode counts the op as the plain lowering's convolutions


# the stats and the running statistics (outputs 3 on) are not differentiable
_Folded = direct_autograd("_Folded", functools.partial(_forward, in_place=True), _setup_context,
                          _backward, non_differentiable=3)


def call(x: Tensor, bn: nn.BatchNorm2d, w1: Tensor, b1: Tensor | None, w2: Tensor,
         b2: Tensor | None, identity: Tensor | None, squeeze: str, excite: str, gate: str,
         act: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(out, z, s, (mean, rstd)) for a `foldable` BN module, its running statistics
    updated in training: eager calls on the Triton path directly (the kernel updates the
    buffers in place), everything else through torch.ops.sedsl.se_bn_block (the updated
    statistics copied into the buffers, as functionalization would)."""
    state = (bn.running_mean, bn.running_var, bn.num_batches_tracked)
    args = (x, bn.weight, bn.bias, *state, w1, b1, w2, b2, identity, bn.training,
            float(bn.momentum), float(bn.eps), squeeze, excite, gate, act)  # type: ignore[arg-type]
    if use_triton(x) and direct_ok(x, identity):
        if torch.is_grad_enabled() and any(
                t is not None and t.requires_grad for t in (x, *args[1:3], *args[6:11])):
            outputs: Outputs = _Folded.apply(*args)
        else:
            outputs = _forward(*args, in_place=True)  # type: ignore[arg-type]
        return outputs[:4]
    outputs = torch.ops.sedsl.se_bn_block(*args[:6], as_matrix(w1), b1, as_matrix(w2), *args[9:])
    if bn.training:
        with torch.no_grad():
            for buffer, new in zip(state, outputs[4:], strict=True):
                buffer.copy_(new)  # type: ignore[union-attr]
    return outputs[:4]
