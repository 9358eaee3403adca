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


def from_torch(model: nn.Module, input: tuple[int, ...] | int = (3, 224, 224),
               se: str | None = None, name: str | None = None) -> Network:
    """Import a torch.fx-traceable model; `se` is the text of an `se { ... }` section."""
    from sedsl.fromtorch import from_torch as load_torch

    net: Network = load_torch(model, input=input, se=se, name=name)
    return net


def transfer_weights(src: Any, dst: nn.Module) -> nn.Module:
    """Copy the weights of `src` (a module or state dict of the same architecture) into `dst`."""
    from sedsl.weights import transfer_weights as transfer

    return transfer(src, dst)


__all__ = ["Network", "Span", "SpecError", "__version__", "from_torch", "load", "loads",
           "transfer_weights"]
