"""sedsl: a compiler for Squeeze-and-Excitation networks.

    net = sedsl.load("specs/se_resnet50.se", ratio=8)
    net.graph            # networkx.DiGraph, one sedsl.ir.Node record per node
    model = net.to_torch()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sedsl.errors import CompilerError, Span, SpecError
from sedsl.version import __version__

if TYPE_CHECKING:
    from torch import nn

    from sedsl.api import Network, load, loads


def transfer_weights(src: Any, dst: nn.Module, input: Any = None) -> nn.Module:
    """Copy the weights of `src` (a module or state dict of the same architecture) into `dst`,
    pairing tensors in the order forward uses them (see sedsl.weights)."""
    from sedsl.weights import transfer_weights as transfer

    return transfer(src, dst, input)


def __getattr__(name: str) -> Any:
    """`load`, `loads` and `Network` import the compiler (networkx, lark) on first use only."""
    if name in ("Network", "load", "loads"):
        from sedsl import api

        return getattr(api, name)
    raise AttributeError(f"module 'sedsl' has no attribute {name!r}")


__all__ = ["CompilerError", "Network", "Span", "SpecError", "__version__", "load", "loads",
           "transfer_weights"]
