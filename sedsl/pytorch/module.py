"""The generated source (sedsl.targets.codegen) made a live torch module, the way torch.fx
turns its graphs into code: the spec's names are the module's attribute tree."""

from __future__ import annotations

import linecache
import types

from torch import nn

from sedsl.ir.graph import Graph
from sedsl.targets.codegen import generate


def build_module(g: Graph, fused: bool = True) -> nn.Module:
    """Instantiate the generated source: a torch module with the spec's names as attributes."""
    source = generate(g, fused=fused)
    filename = f"<sedsl {g.graph['name']}{' fused' if fused else ''}>"
    module = types.ModuleType(f"sedsl_generated_{g.graph['name']}")
    module.__file__ = filename
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), module.__dict__)  # our own generated code
    model: nn.Module = module.Model()
    return model
