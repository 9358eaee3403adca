"""Fused Squeeze-and-Excitation kernels: `se_block` (the op `torch.ops.sedsl.se_block`) and
the `SqueezeExcite` module that generated fused models use.

CUDA tensors run the Triton kernels (sedsl.pytorch.kernels.triton_se); CPU tensors run the
plain-torch
reference (sedsl.pytorch.kernels.reference), or the Triton kernels through Triton's interpreter when
TRITON_INTERPRET=1. Triton is imported only when a kernel is launched.
"""

from __future__ import annotations

from sedsl.pytorch.kernels import bn_op  # registers sedsl::se_bn_block
from sedsl.pytorch.kernels.eca_op import EfficientChannelAttention, eca_block
from sedsl.pytorch.kernels.gct_op import GatedChannelTransformation, gct_block
from sedsl.pytorch.kernels.ge_op import GatherExcite, ge_block
from sedsl.pytorch.kernels.module import SqueezeExcite
from sedsl.pytorch.kernels.op import se_block, use_triton
from sedsl.pytorch.kernels.steps_op import ChannelAttention, channel_apply, channel_stats

__all__ = ["ChannelAttention", "EfficientChannelAttention", "GatedChannelTransformation",
           "GatherExcite", "SqueezeExcite", "bn_op", "channel_apply", "channel_stats",
           "eca_block", "gct_block", "ge_block", "se_block", "use_triton"]
