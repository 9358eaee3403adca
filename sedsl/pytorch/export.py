"""Export a built network (`sedsl export SPEC --format onnx|torchscript|exported-program`) to a
file that runs without sedsl: wherever a fused op (`torch.ops.sedsl.se_block`, `se_bn_block`,
`eca_block`, `ge_block`, `gct_block`, `channel_stats`, `channel_apply`) is traced, it is
decomposed into plain ATen ops (`DECOMPOSITIONS`), the same computation as the plain-torch
lowering. Export runs on the CPU,
where the fused modules already run plain ops; the decomposition covers the ops wherever they
are traced (CUDA, TRITON_INTERPRET=1, or `trace_fused_op`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sedsl.pytorch.kernels import bn_op, reference
from sedsl.pytorch.kernels import op as se_op
from sedsl.pytorch.kernels.eca_op import EfficientChannelAttention, call_eca
from sedsl.pytorch.kernels.gct_op import GatedChannelTransformation, call_gct
from sedsl.pytorch.kernels.ge_op import GatherExcite, call_ge
from sedsl.pytorch.kernels.module import SqueezeExcite
from sedsl.pytorch.kernels.steps_op import ChannelAttention

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}


def decompose_se_block(u: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None,
                       identity: Tensor | None, squeeze: str, excite: str, gate: str,
                       act: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """sedsl::se_block's outputs (out, z, s, idx) in plain torch ops (see
    sedsl/pytorch/kernels/op.py)."""
    z = reference.squeeze_hw(u, squeeze)  # (N, C), accumulate dtype
    s = reference.excitation(z, w1, b1, w2, b2, excite, gate)  # (N, C)
    out = reference.scale(u, s, identity, act).to(u.dtype)  # (N, C, H, W)
    if squeeze == "max":
        idx = u.flatten(2).argmax(2).to(torch.int32)
    else:
        idx = u.new_empty((0,), dtype=torch.int32)
    return out, z, s, idx


def decompose_se_bn_block(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor,
                          running_var: Tensor, num_batches_tracked: Tensor, w1: Tensor,
                          b1: Tensor | None, w2: Tensor, b2: Tensor | None,
                          identity: Tensor | None, training: bool, momentum: float, eps: float,
                          squeeze: str, excite: str, gate: str,
                          act: str) -> tuple[Tensor, ...]:
    """sedsl::se_bn_block's outputs in plain torch ops (sedsl/pytorch/kernels/bn_op.py)."""
    out, z, s, stats, new = reference.bn_outputs(
        x, weight, bias, running_mean, running_var, num_batches_tracked, w1, b1, w2, b2,
        identity, training, momentum, eps, excite, gate, act)
    return (out, z, s, stats, *(new or tuple(x.new_empty((0,)) for _ in range(3))))


def decompose_eca_block(u: Tensor, w: Tensor, identity: Tensor | None, padding: str, gate: str,
                        act: str) -> tuple[Tensor, Tensor, Tensor]:
    """sedsl::eca_block's outputs (out, z, s) in plain torch ops (sedsl/pytorch/kernels/
    eca_op.py)."""
    z = reference.squeeze_hw(u, "avg")  # (N, C), accumulate dtype
    k = w.numel()
    pad = (k - 1) // 2
    if padding == "circular":  # by indexing: F.pad's circular decomposition writes in place,
        wrap = torch.arange(-pad, z.shape[1] + pad, device=z.device) % z.shape[1]  # which a
        zpad = z[:, wrap]  # decomposition may not; and it wraps any number of times, as the op
    else:
        zpad = nn.functional.pad(z, (pad, pad))
    conv = nn.functional.conv1d(zpad[:, None], w.reshape(1, 1, k).to(z.dtype))[:, 0]
    s = reference.activate(gate, conv)
    return reference.scale(u, s, identity, act).to(u.dtype), z, s


def decompose_ge_block(u: Tensor, identity: Tensor | None, gate: str,
                       act: str) -> tuple[Tensor, Tensor, Tensor]:
    """sedsl::ge_block's outputs (out, z, s) in plain torch ops (sedsl/pytorch/kernels/
    ge_op.py)."""
    z = reference.squeeze_hw(u, "avg")  # (N, C), accumulate dtype
    s = reference.activate(gate, z)
    return reference.scale(u, s, identity, act).to(u.dtype), z, s


def decompose_gct_block(u: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor,
                        identity: Tensor | None, eps: float, gate: str,
                        act: str) -> tuple[Tensor, Tensor, Tensor]:
    """sedsl::gct_block's outputs (out, z, s) in plain torch ops (sedsl/pytorch/kernels/
    gct_op.py)."""
    z = u.to(reference.accumulate_dtype(u.dtype)).pow(2).sum((2, 3))  # (N, C)
    s = 1.0 + reference.activate(gate, reference.gct_transform(z, alpha, gamma, beta, eps))
    return reference.scale(u, s, identity, act).to(u.dtype), z, s


def decompose_channel_stats(u: Tensor, statistic: str) -> Tensor:
    """sedsl::channel_stats in plain torch ops (sedsl/pytorch/kernels/steps_op.py)."""
    return reference.stats_forward(u, statistic)


def decompose_channel_apply(u: Tensor, s: Tensor, identity: Tensor | None, act: str) -> Tensor:
    """sedsl::channel_apply in plain torch ops."""
    gate = s.reshape(u.shape[:2]).to(reference.accumulate_dtype(u.dtype))
    return reference.scale(u, gate, identity, act).to(u.dtype)


DECOMPOSITIONS: dict[Any, Any] = {torch.ops.sedsl.se_block.default: decompose_se_block,
                                  torch.ops.sedsl.se_bn_block.default: decompose_se_bn_block,
                                  torch.ops.sedsl.eca_block.default: decompose_eca_block,
                                  torch.ops.sedsl.ge_block.default: decompose_ge_block,
                                  torch.ops.sedsl.gct_block.default: decompose_gct_block,
                                  torch.ops.sedsl.channel_stats.default: decompose_channel_stats,
                                  torch.ops.sedsl.channel_apply.default: decompose_channel_apply}


@contextmanager
def trace_fused_op() -> Iterator[None]:
    """Make the fused modules (SqueezeExcite, EfficientChannelAttention, GatherExcite,
    GatedChannelTransformation, ChannelAttention) call their op on every
    device while tracing (tests use this to prove the decomposition; on CUDA it is what happens
    anyway). The op's CPU implementation stays the plain-torch reference."""

    def fused(self: SqueezeExcite, u: Tensor, identity: Tensor | None = None,
              bn: nn.Module | None = None) -> Tensor:
        weights = (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        names = (self.squeeze, self.excite, self.gate, self.act)
        if bn is not None and bn_op.foldable(bn, self.squeeze):
            out: Tensor = bn_op.call(u, bn, *weights, identity, *names)[0]
            return out
        if bn is not None:
            u = bn(u)
        return se_op.se_block(u, *weights, identity, squeeze=self.squeeze, excite=self.excite,
                              gate=self.gate, act=self.act)

    def eca(self: EfficientChannelAttention, u: Tensor,
            identity: Tensor | None = None) -> Tensor:
        return call_eca(u, self.conv.weight, identity, self.padding, self.gate, self.act)[0]

    def ge(self: GatherExcite, u: Tensor, identity: Tensor | None = None) -> Tensor:
        return call_ge(u, identity, self.gate, self.act)[0]

    def gct(self: GatedChannelTransformation, u: Tensor,
            identity: Tensor | None = None) -> Tensor:
        p = self.norm
        return call_gct(u, p.alpha, p.gamma, p.beta, identity, self.eps, self.gate, self.act)[0]

    with _forwards({SqueezeExcite: fused, EfficientChannelAttention: eca, GatherExcite: ge,
                    GatedChannelTransformation: gct, ChannelAttention: ChannelAttention.fused}):
        yield


@contextmanager
def _plain_se() -> Iterator[None]:
    """The fused modules as plain torch ops on every device: TorchScript has no decompositions."""
    with _forwards({SqueezeExcite: SqueezeExcite.plain,
                    EfficientChannelAttention: EfficientChannelAttention.plain,
                    GatherExcite: GatherExcite.plain,
                    GatedChannelTransformation: GatedChannelTransformation.plain,
                    ChannelAttention: ChannelAttention.plain}):
        yield


@contextmanager
def _forwards(forwards: dict[type[nn.Module], Any]) -> Iterator[None]:
    """Each class's forward replaced for the duration."""
    saved = {cls: cls.forward for cls in forwards}
    for cls, forward in forwards.items():
        cls.forward = forward
    try:
        yield
    finally:
        for cls, forward in saved.items():
            cls.forward = forward


def exported_program(model: nn.Module, example: Tensor) -> torch.export.ExportedProgram:
    """torch.export of the model in eval mode, the fused op decomposed into ATen ops."""
    program = torch.export.export(model.eval(), (example,))
    table = torch.export.default_decompositions()
    for op, fn in DECOMPOSITIONS.items():
        table[op] = fn
    decomposed: torch.export.ExportedProgram = program.run_decompositions(table)
    return decomposed


def contains_sedsl_op(program: torch.export.ExportedProgram) -> bool:
    return any(getattr(node.target, "namespace", None) == "sedsl"
               for node in program.graph.nodes if node.op == "call_function")


def export(model: nn.Module, example: Tensor, fmt: str, target: Path) -> Path:
    """Write `model` to `target` as ONNX, TorchScript or a saved ExportedProgram."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    model = model.eval().cpu()
    tmp = target.with_name(f".{target.stem}.tmp{target.suffix}")
    if fmt == "torchscript":
        with torch.no_grad(), _plain_se():
            traced = torch.jit.trace(model, (example,))  # type: ignore[no-untyped-call]
        if any(n.kind().startswith("sedsl::") for n in traced.inlined_graph.nodes()):
            raise RuntimeError("the traced module calls sedsl's op; trace it on the CPU")
        traced.save(str(tmp))
    else:
        program = exported_program(model, example)
        assert not contains_sedsl_op(program)
        if fmt == "exported-program":
            torch.export.save(program, str(tmp))
        else:
            onnx = torch.onnx.export(program, (example,), dynamo=True, verbose=False)
            assert onnx is not None
            onnx.save(str(tmp))
    tmp.replace(target)
    return target
