"""The cross-check: fvcore's count on a lowered module (imports torch and fvcore lazily)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def fvcore_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """`fvcore.nn.FlopCountAnalysis(model, zeros(1, *input_shape)).total()` in eval mode."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore traces with TorchScript, deprecated in torch
        logging.getLogger("fvcore").setLevel(logging.ERROR)  # ops it skips: relu, mul, ...
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model.eval(), torch.zeros(1, *input_shape))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return int(analysis.total())
