"""sedsl: a compiler for Squeeze-and-Excitation networks.

    net = sedsl.load("specs/se_resnet50.se", ratio=8)
    net.graph            # networkx.DiGraph, one sedsl.ir.node.Node record per node
    model = net.to_torch()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sedsl.errors import CompilerError, Span, SpecError
from sedsl.version import __version__

if TYPE_CHECKING:
    from torch import nn

    from sedsl.api import Network, load, loads


def from_torch(model: nn.Module, input: tuple[int, ...] | int = (3, 224, 224),
               se: str | None = None, name: str | None = None) -> Network:
    """Import a torch.fx-traceable model; `se` is the text of an `se { ... }` section."""
    from sedsl.api import from_torch as load_torch

    return load_torch(model, input=input, se=se, name=name)


def transfer_weights(src: Any, dst: nn.Module, input: Any = None) -> nn.Module:
    """Copy the weights of `src` (a module or state dict of the same architecture) into `dst`,
    layer by layer by structure (see sedsl.pytorch.weights)."""
    from sedsl.pytorch.weights import transfer_weights as transfer

    return transfer(src, dst, input)


def fvcore_handles() -> dict[str, Any]:
    """fvcore op handles for sedsl's fused ops:
    `FlopCountAnalysis(model, x).set_op_handle(**sedsl.fvcore_handles())` counts a fused model
    as its plain lowering (see sedsl.pytorch.flops)."""
    from sedsl.pytorch.flops import fvcore_handles as handles

    return dict(handles())


def __getattr__(name: str) -> Any:
    """`load`, `loads` and `Network` import the compiler (networkx, lark) on first use only."""
    if name in ("Network", "load", "loads"):
        from sedsl import api

        return getattr(api, name)
    raise AttributeError(f"module 'sedsl' has no attribute {name!r}")


__all__ = ["CompilerError", "Network", "Span", "SpecError", "__version__", "from_torch",
           "fvcore_handles", "load", "loads", "transfer_weights"]
