"""sedsl: a compiler for Squeeze-and-Excitation networks.

    net = sedsl.load("specs/se_resnet50.se", ratio=8)
    net.graph            # networkx.DiGraph, one sedsl.ir.Node record per node
    model = net.to_torch()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from sedsl.api import Network, load, loads
from sedsl.errors import Span, SpecError

if TYPE_CHECKING:
    from torch import nn


def transfer_weights(src: Any, dst: nn.Module, input: Any = None) -> nn.Module:
    """Copy the weights of `src` (a module or state dict of the same architecture) into `dst`,
    layer by layer by structure (see sedsl.weights)."""
    from sedsl.weights import transfer_weights as transfer

    return transfer(src, dst, input)


__all__ = ["Network", "Span", "SpecError", "__version__", "load", "loads", "transfer_weights"]
