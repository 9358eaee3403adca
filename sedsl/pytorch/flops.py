"""FLOP counters and sedsl's fused ops: fvcore's count on a lowered module (the cross-check),
the fvcore handles of the fused ops, and their formulas for torch's FlopCounterMode. Imports
torch and fvcore lazily.

A fused op is opaque to a counter that does not know it: FlopCounterMode counts 0 for it and
fvcore warns and skips it, so a fused model would count less than its plain lowering. Both
get the plain lowering's count here:

- torch.utils.flop_counter (FlopCounterMode; 2 FLOPs per multiply-accumulate, convolutions and
  matrix products only): the SE excitation's two FCs are 1x1 convolutions in the plain
  lowering, 2*N*C*R each forward; backward, each FC's input and weight gradients, 2*N*C*R each
  (the fused backward always computes dU, so fc1's input gradient is counted as the plain
  lowering counts it when U requires grad, as it does in training).
- fvcore (1 per multiply-accumulate, convolutions, matrix products and normalisations):
  N*C*R per FC, and for a folded BN what fvcore counts for aten::batch_norm: 2 per element
  in eval (affine), 5 in training.

FlopCounterMode counts no batch_norm, so a folded BN adds nothing there.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def fvcore_flops(model: nn.Module, input_shape: Sequence[int],
                 handles: dict[str, Callable[..., Any]] | None = None) -> int:
    """`fvcore.nn.FlopCountAnalysis(model, zeros(1, *input_shape)).total()` in eval mode, with
    extra op handles (`fvcore_handles()` for a model whose fused ops are traced)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore traces with TorchScript, deprecated in torch
        logging.getLogger("fvcore").setLevel(logging.ERROR)  # ops it skips: relu, mul, ...
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model.eval(), torch.zeros(1, *input_shape))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        if handles:
            analysis.set_op_handle(**handles)
        return int(analysis.total())


# --- the fused SE op's counts ---------------------------------------------------------------------


def se_macs(u_shape: Sequence[int], w1_shape: Sequence[int]) -> int:
    """Multiply-accumulates of the SE excitation's two FCs: N * C * R each."""
    n, c = u_shape[0], u_shape[1]
    return 2 * n * c * w1_shape[0]


def _se_block_flops(u: Sequence[int], w1: Sequence[int], *_: Any, **__: Any) -> int:
    """FlopCounterMode's count of sedsl::se_block: what it counts for the plain lowering's two
    1x1 convolutions (2 FLOPs per multiply-accumulate)."""
    return 2 * se_macs(u, w1)


def _se_block_backward_flops(grad: Sequence[int], u: Sequence[int], w1: Sequence[int],
                             *_: Any, **__: Any) -> int:
    """FlopCounterMode's count of sedsl::se_block_backward: the plain lowering's convolution
    backwards, input and weight gradients of both FCs."""
    return 4 * se_macs(u, w1)


def _se_bn_block_flops(x: Sequence[int], *args: Any, **__: Any) -> int:
    """sedsl::se_bn_block: the SE block's (w1 is its 7th argument); BN counts nothing here."""
    return 2 * se_macs(x, args[5])


def _se_bn_block_backward_flops(grad: Sequence[int], x: Sequence[int], weight: Sequence[int],
                                bias: Sequence[int], w1: Sequence[int], *_: Any,
                                **__: Any) -> int:
    """sedsl::se_bn_block_backward: the SE block's convolution backwards."""
    return 4 * se_macs(x, w1)


def eca_macs(u_shape: Sequence[int], w_shape: Sequence[int]) -> int:
    """Multiply-accumulates of ECA's 1-D convolution over channels: N * C * K."""
    return u_shape[0] * u_shape[1] * math.prod(w_shape)


def _eca_block_flops(u: Sequence[int], w: Sequence[int], *_: Any, **__: Any) -> int:
    """sedsl::eca_block: the plain lowering's conv1d on (N, 1, C), 2 FLOPs a tap."""
    return 2 * eca_macs(u, w)


def _eca_block_backward_flops(grad: Sequence[int], u: Sequence[int], w: Sequence[int],
                              *_: Any, **__: Any) -> int:
    """sedsl::eca_block_backward: the conv1d's input and weight gradients."""
    return 4 * eca_macs(u, w)


def _nothing(*_: Any, **__: Any) -> int:
    """sedsl::ge_block, sedsl::gct_block and their backwards: the plain lowerings (mean or sum
    of squares, GCT's normalisation, gate, mul) have no convolution, matrix product or
    normalisation that either counter counts."""
    return 0


def fvcore_handles() -> dict[str, Callable[[list[Any], list[Any]], int]]:
    """fvcore op handles of sedsl's fused ops, for
    `FlopCountAnalysis(model, x).set_op_handle(**fvcore_handles())`: a fused model then counts
    what its plain lowering counts."""
    from fvcore.nn.jit_handles import get_shape

    def se_block(inputs: list[Any], outputs: list[Any]) -> int:
        return se_macs(get_shape(inputs[0]), get_shape(inputs[1]))

    def se_bn_block(inputs: list[Any], outputs: list[Any]) -> int:
        x: list[int] = get_shape(inputs[0])
        training = bool(inputs[11].toIValue())  # fvcore's batchnorm_flop_jit: 5 or 2 each
        return se_macs(x, get_shape(inputs[6])) + math.prod(x) * (5 if training else 2)

    def eca_block(inputs: list[Any], outputs: list[Any]) -> int:
        return eca_macs(get_shape(inputs[0]), get_shape(inputs[1]))

    return {"sedsl::se_block": se_block, "sedsl::se_bn_block": se_bn_block,
            "sedsl::eca_block": eca_block, "sedsl::ge_block": _nothing,
            "sedsl::gct_block": _nothing,
            # the generic transform's statistic and apply: what the plain squeezes and scale
            # count (nothing); its transform runs as the plain modules, which fvcore counts
            "sedsl::channel_stats": _nothing, "sedsl::channel_apply": _nothing}


# --- registering the formulas with torch.utils.flop_counter ---------------------------------------

_FLOP_COUNTER = "torch.utils.flop_counter"


def install_flop_formulas() -> None:
    """Register the fused ops' formulas with torch.utils.flop_counter: now if it is imported,
    else the moment it is (it imports triton, ~0.3 s: not something `import sedsl` may cost).
    Called where the ops are defined (sedsl.pytorch.kernels.op and bn_op)."""
    if _FLOP_COUNTER in sys.modules:
        _register()
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())


def _register() -> None:
    import torch
    from torch.utils.flop_counter import flop_registry, register_flop_formula

    formulas: dict[str, Callable[..., int]] = {
        "se_block": _se_block_flops, "se_block_backward": _se_block_backward_flops,
        "se_bn_block": _se_bn_block_flops, "se_bn_block_backward": _se_bn_block_backward_flops,
        "eca_block": _eca_block_flops, "eca_block_backward": _eca_block_backward_flops,
        "ge_block": _nothing, "ge_block_backward": _nothing,
        "gct_block": _nothing, "gct_block_backward": _nothing}
    for name, formula in formulas.items():
        op = getattr(torch.ops.sedsl, name, None)  # None: not defined yet (its module calls
        if op is not None and op not in flop_registry:  # install_flop_formulas again)
            register_flop_formula(op)(formula)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds torch.utils.flop_counter as Python would, and registers sedsl's formulas once the
    module has run (a one-shot post-import hook: it leaves sys.meta_path on first use)."""

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name != _FLOP_COUNTER:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            _register()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec
