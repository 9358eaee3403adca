"""The channel-attention family's generic fused form: the statistic and the apply as two ops,
the transform between them as the plain lowering's own modules (torch autograd on (N, C)
vectors). What generated fused models use for the variants whose transform no op of its own
computes (sedsl.ir.ops.TRANSFORMS, `steps`: ese, se_bn, srm, ecam).

    sedsl::channel_stats(Tensor u, str statistic) -> Tensor          # (N, C, 1, K) fp32
    sedsl::channel_apply(Tensor u, Tensor s, Tensor? identity, str act) -> Tensor

`channel_stats`: the mean over H*W ("avg", K = 1), or the mean and the unbiased std
("avgstd", K = 2, SRM's style pooling, the plain lowering's concat of the two). It saves U only
for the std (for the mean, dU is dz / HW broadcast: a view, no pass). `channel_apply`:
act(U * s + identity) with s (N, C) or (N, C, 1, 1) in any dtype; it saves U, s and the output
for relu (else the identity), as sedsl::se_block does. The transform's modules save what they
save for their own backward, O(N * C), and a BN among them updates its running statistics as
in the plain lowering, being the same module. The backward of U is two contributions that
autograd adds (the apply's dY * s and the statistic's), one pass over U more than se_block's
single input pass. Eager calls on the Triton path skip the dispatcher, as the other ops do.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sedsl.pytorch.kernels import reference
from sedsl.pytorch.kernels.op import check_names, direct_autograd, direct_ok, kernels, use_triton

STATISTICS = {"avg": 1, "avgstd": 2}  # statistic -> values per channel


def _check_stats(u: Tensor, statistic: str) -> None:
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}; got {statistic!r}")
    if u.dim() != 4 or not u.is_floating_point():
        raise ValueError(f"u must be a floating (N, C, H, W) tensor; got {tuple(u.shape)}")


def _stats_forward(u: Tensor, statistic: str) -> Tensor:
    _check_stats(u, statistic)
    if use_triton(u):
        result: Tensor = kernels().stats_forward(u, statistic)
        return result
    with torch.autocast(u.device.type, enabled=False):
        return reference.stats_forward(u, statistic)


@torch.library.custom_op("sedsl::channel_stats", mutates_args=())
def channel_stats_op(u: Tensor, statistic: str) -> Tensor:
    """The statistic (N, C, 1, K); see the module docstring."""
    return _stats_forward(u, statistic)


@channel_stats_op.register_fake
def _channel_stats_fake(u: Tensor, statistic: str) -> Tensor:
    _check_stats(u, statistic)
    return u.new_empty((u.shape[0], u.shape[1], 1, STATISTICS[statistic]),
                       dtype=reference.accumulate_dtype(u.dtype))


def _stats_backward_impl(grad: Tensor, u: Tensor, stats: Tensor) -> Tensor:
    if use_triton(u):
        du: Tensor = kernels().stats_backward(grad, u, stats)
        return du
    with torch.autocast(u.device.type, enabled=False):
        return reference.stats_backward(grad, u, stats)


@torch.library.custom_op("sedsl::channel_stats_backward", mutates_args=())
def channel_stats_backward_op(grad: Tensor, u: Tensor, stats: Tensor) -> Tensor:
    """dU of the "avgstd" statistic."""
    return _stats_backward_impl(grad, u, stats)


@channel_stats_backward_op.register_fake
def _channel_stats_backward_fake(grad: Tensor, u: Tensor, stats: Tensor) -> Tensor:
    return torch.empty_like(u)


def _stats_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    u, statistic = inputs
    ctx.statistic, ctx.shape, ctx.dtype = statistic, u.shape, u.dtype
    ctx.save_for_backward(*((u, output) if statistic == "avgstd" else ()))


def _stats_backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None]:
    if ctx.statistic == "avg":  # dz / HW everywhere: a broadcast view, no pass over U
        n, c, h, w = ctx.shape
        return (grad / (h * w)).to(ctx.dtype).expand(n, c, h, w), None
    u, stats = ctx.saved_tensors
    if getattr(ctx, "direct", False):
        return _stats_backward_impl(grad, u, stats), None
    return torch.ops.sedsl.channel_stats_backward(grad, u, stats), None


channel_stats_op.register_autograd(_stats_backward, setup_context=_stats_setup)
_StatsDirect = direct_autograd("_StatsDirect", _stats_forward, _stats_setup, _stats_backward)


def channel_stats(u: Tensor, statistic: str = "avg") -> Tensor:
    """The statistic of U (N, C, 1, K) fp32, one op (the Triton squeeze kernel)."""
    if use_triton(u) and direct_ok(u):
        if torch.is_grad_enabled() and u.requires_grad:
            direct: Tensor = _StatsDirect.apply(u, statistic)
            return direct
        return _stats_forward(u, statistic)
    result: Tensor = torch.ops.sedsl.channel_stats(u, statistic)
    return result


# --- the apply: act(U * s + identity) -----------------------------------------------------------


def _check_apply(u: Tensor, s: Tensor, identity: Tensor | None, act: str) -> None:
    check_names("avg", "relu", "sigmoid", act)
    if u.dim() != 4 or not u.is_floating_point():
        raise ValueError(f"u must be a floating (N, C, H, W) tensor; got {tuple(u.shape)}")
    if s.numel() != u.shape[0] * u.shape[1] or s.device != u.device:
        raise ValueError(f"s must hold one value per (sample, channel) {tuple(u.shape[:2])} on "
                         f"{u.device}; got {tuple(s.shape)}")
    if identity is not None and (identity.shape != u.shape or identity.dtype != u.dtype
                                 or identity.device != u.device):
        raise ValueError(f"identity must be like u {tuple(u.shape)} {u.dtype}")


def _gate(u: Tensor, s: Tensor) -> Tensor:
    """s as the kernels take it: (N, C) contiguous in the accumulate dtype."""
    return s.reshape(u.shape[:2]).to(reference.accumulate_dtype(u.dtype)).contiguous()


def _apply_forward(u: Tensor, s: Tensor, identity: Tensor | None, act: str) -> Tensor:
    _check_apply(u, s, identity, act)
    if use_triton(u):
        out: Tensor = kernels().apply_forward(u, _gate(u, s), identity, act)
        return out
    with torch.autocast(u.device.type, enabled=False):
        return reference.apply_forward(u, _gate(u, s), identity, act)


@torch.library.custom_op("sedsl::channel_apply", mutates_args=())
def channel_apply_op(u: Tensor, s: Tensor, identity: Tensor | None, act: str) -> Tensor:
    """act(U * s + identity); see the module docstring."""
    return _apply_forward(u, s, identity, act)


@channel_apply_op.register_fake
def _channel_apply_fake(u: Tensor, s: Tensor, identity: Tensor | None, act: str) -> Tensor:
    _check_apply(u, s, identity, act)
    return torch.empty_like(u)


def _apply_backward_impl(grad: Tensor, u: Tensor, identity: Tensor | None, out: Tensor | None,
                         s: Tensor, act: str, has_identity: bool
                         ) -> tuple[Tensor, Tensor | None, Tensor]:
    args = (grad, u, identity, out, _gate(u, s), act, has_identity)
    if use_triton(u):
        du, di, ds = kernels().apply_backward(*args)
    else:
        with torch.autocast(u.device.type, enabled=False):
            du, di, ds = reference.apply_backward(*args)
    return du, di, ds.to(s.dtype).view(s.shape)


@torch.library.custom_op("sedsl::channel_apply_backward", mutates_args=())
def channel_apply_backward_op(grad: Tensor, u: Tensor, identity: Tensor | None,
                              out: Tensor | None, s: Tensor, act: str,
                              has_identity: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(dU, dIdentity or empty, ds)."""
    du, di, ds = _apply_backward_impl(grad, u, identity, out, s, act, has_identity)
    return du, u.new_empty((0,)) if di is None else di, ds


@channel_apply_backward_op.register_fake
def _channel_apply_backward_fake(grad: Tensor, u: Tensor, identity: Tensor | None,
                                 out: Tensor | None, s: Tensor, act: str,
                                 has_identity: bool) -> tuple[Tensor, Tensor, Tensor]:
    like = identity if identity is not None else out if out is not None else u
    di = torch.empty_like(like) if has_identity else u.new_empty((0,))
    return torch.empty_like(u), di, torch.empty_like(s)


def _apply_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    u, s, identity, act = inputs
    ctx.save_for_backward(u, s, *reference.for_act_grad(identity, output, act))
    ctx.act, ctx.has_identity = act, identity is not None


def _apply_backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    u, s, identity, out = ctx.saved_tensors
    args = (grad, u, identity, out, s, ctx.act, ctx.has_identity)
    if getattr(ctx, "direct", False):
        du, di, ds = _apply_backward_impl(*args)
    else:
        du, di, ds = torch.ops.sedsl.channel_apply_backward(*args)
    if ctx.has_identity and ctx.act == "none":  # dIdentity = dOut
        di = grad
    return du, ds, di if ctx.has_identity else None, None


channel_apply_op.register_autograd(_apply_backward, setup_context=_apply_setup)
_ApplyDirect = direct_autograd("_ApplyDirect", _apply_forward, _apply_setup, _apply_backward)


def channel_apply(u: Tensor, s: Tensor, identity: Tensor | None = None,
                  act: str = "none") -> Tensor:
    """act(U * s + identity), one op (the Triton scale kernel)."""
    if use_triton(u) and direct_ok(u, s, identity):
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                           for t in (u, s, identity)):
            direct: Tensor = _ApplyDirect.apply(u, s, identity, act)
            return direct
        return _apply_forward(u, s, identity, act)
    result: Tensor = torch.ops.sedsl.channel_apply(u, s, identity, act)
    return result


class ChannelAttention(nn.Module):
    """An attention block [+ shortcut add [+ activation]] whose statistic and apply are ops
    (sedsl::channel_stats, sedsl::channel_apply) and whose transform, from the statistic to
    the gate, is the plain lowering's modules, registered under their step names (so the
    state-dict keys are the plain lowering's: `<block>.se.fc1.weight`, `<block>.se.bn.*`) and
    run in order. The gate is the `gate` module (sedsl excite hooks it, as in the plain
    lowering)."""

    def __init__(self, statistic: str, steps: dict[str, nn.Module], act: str = "none") -> None:
        super().__init__()
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}; "
                             f"got {statistic!r}")
        check_names("avg", "relu", "sigmoid", act)
        for name, module in steps.items():
            self.add_module(name, module)
        self.statistic, self.post = statistic, act

    def transform(self, z: Tensor) -> Tensor:
        for module in self.children():
            z = module(z)
        return z

    def forward(self, u: Tensor, identity: Tensor | None = None) -> Tensor:
        if not use_triton(u):
            return self.plain(u, identity)
        return self.fused(u, identity)

    def fused(self, u: Tensor, identity: Tensor | None = None) -> Tensor:
        """The two ops, the transform between them in U's dtype (as the plain lowering)."""
        s = self.transform(channel_stats(u, self.statistic).to(u.dtype))
        return channel_apply(u, s, identity, self.post)

    def plain(self, u: Tensor, identity: Tensor | None = None) -> Tensor:
        """As the unfused lowering computes it, bit for bit: the statistic (the squeezes and
        their concat), the transform, the scale; then the shortcut and the activation."""
        z = u.mean((2, 3), keepdim=True)  # the vocabulary's avg and std squeezes
        if self.statistic == "avgstd":
            z = torch.cat([z, u.std((2, 3), keepdim=True)], 3)
        x = u * self.transform(z)  # (N, C, H, W), fresh
        if identity is not None:
            x += identity
        return reference.activate_(self.post, x)

    def extra_repr(self) -> str:
        return f"statistic={self.statistic!r}, act={self.post!r}"
