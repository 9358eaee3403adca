"""sedsl: a compiler for Squeeze-and-Excitation networks.

    net = sedsl.load("specs/se_resnet50.se", ratio=8)
    net.graph            # networkx.DiGraph, one sedsl.ir.node.Node record per node
    model = net.to_torch()
"""

# No `from __future__ import annotations` (importing __future__ costs a file lookup at the
# very start): the annotations that name lazily imported types are quoted.
from sedsl.version import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~10 ms) at start-up
if TYPE_CHECKING:
    from typing import Any

    from torch import nn

    from sedsl.api import Network, load, loads
    from sedsl.errors import (
        CompilerError,
        DataError,
        DeviceError,
        MissingExtra,
        ModelError,
        RunError,
        SedslError,
        Span,
        SpecError,
        UsageError,
    )

# Imported on first use: `import sedsl` runs almost nothing (the command line's start, and a
# Ctrl-C during it, stay in code that handles it: sedsl.cli.main).
_LAZY = {"Network": "sedsl.api", "load": "sedsl.api", "loads": "sedsl.api",
         **{name: "sedsl.errors" for name in (
             "CompilerError", "DataError", "DeviceError", "MissingExtra", "ModelError",
             "RunError", "SedslError", "Span", "SpecError", "UsageError")}}


def from_torch(model: "nn.Module", input: tuple[int, ...] | int = (3, 224, 224),
               se: str | None = None, name: str | None = None) -> "Network":
    """Import a torch.fx-traceable model; `se` is the text of an `se { ... }` section."""
    from sedsl.api import from_torch as load_torch

    return load_torch(model, input=input, se=se, name=name)


def transfer_weights(src: "Any", dst: "nn.Module", input: "Any" = None) -> "nn.Module":
    """Copy the weights of `src` (a module or state dict of the same architecture) into `dst`,
    layer by layer by structure (see sedsl.pytorch.weights)."""
    from sedsl.pytorch.weights import transfer_weights as transfer

    return transfer(src, dst, input)


def fvcore_handles() -> "dict[str, Any]":
    """fvcore op handles for sedsl's fused ops:
    `FlopCountAnalysis(model, x).set_op_handle(**sedsl.fvcore_handles())` counts a fused model
    as its plain lowering (see sedsl.pytorch.flops)."""
    from sedsl.pytorch.flops import fvcore_handles as handles

    return dict(handles())


def __getattr__(name: str) -> "Any":
    """The compiler (`load`, `loads`, `Network`: networkx, lark) and the errors, on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sedsl' has no attribute {name!r}")


__all__ = ["CompilerError", "DataError", "DeviceError", "MissingExtra", "ModelError", "Network",
           "RunError", "SedslError", "Span", "SpecError", "UsageError", "__version__", "from_torch",
           "fvcore_handles", "load", "loads", "transfer_weights"]
