"""The Python interface: `sedsl.load(path, **overrides)` -> Network."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sedsl.compile import passes
from sedsl.compile.elaborate import elaborate
from sedsl.errors import NOWHERE, Span, SpecError
from sedsl.ir.graph import Graph
from sedsl.ir.se import SeConfig
from sedsl.language import numbers, source
from sedsl.language.evaluate import to_value
from sedsl.language.library import load_library
from sedsl.language.library import search_path as search_path_of
from sedsl.language.parse import parse
from sedsl.pytorch import memory
from sedsl.record import Record

if TYPE_CHECKING:
    import networkx as nx
    from torch import nn

    from sedsl.targets.cost import Cost


class Network(Record):
    """A compiled spec: the SE network's graph, the base network's graph, and the sources.

    `ir` and `base_ir` are sedsl's own `Graph`s, which the passes take; `graph` and `base` are
    copies of them as networkx.DiGraphs, made on first use (networkx is imported then)."""

    ir: Graph  # the SE network: what the spec describes
    base_ir: Graph  # the same spec with SE switched off
    se: SeConfig
    sources: Mapping[str, str]  # file -> text of every file the spec read
    weights: Mapping[str, Any] | None = None  # node-named tensors to load (an imported model's)
    notes: tuple[str, ...] = ()  # what the compiler says beside errors (an import's left-outs)

    @cached_property
    def graph(self) -> nx.DiGraph:
        """The SE network as a networkx.DiGraph."""
        return self.ir.to_networkx()

    @cached_property
    def base(self) -> nx.DiGraph:
        """The base network (SE switched off) as a networkx.DiGraph."""
        return self.base_ir.to_networkx()

    @property
    def name(self) -> str:
        return str(self.ir.graph["name"])

    def after(self, pass_name: str) -> Graph:
        """The graph as the named stage left it: elaborate, apply_se, or a lowering pass."""
        stages = ("elaborate", *passes.PASSES)
        if pass_name not in stages:
            raise SpecError(f"no pass is called `{pass_name}`", NOWHERE,
                            f"passes, in order: {', '.join(stages)}")
        if pass_name == "elaborate":
            return self.base_ir
        return passes.run(self.ir, passes.LOWERING, after=pass_name) \
            if pass_name != "apply_se" else self.ir

    def to_torch(self, fused: bool = True, se: bool = True, device: str | None = None,
                 check_memory: bool = True) -> nn.Module:
        """A torch.nn.Module mirroring the spec; `fused` runs each SE block as one op.

        `device="meta"` builds any size without allocating. Otherwise the parameters' memory is
        estimated first, and a network that would not fit is refused unless `check_memory` is
        False."""
        import torch

        from sedsl.pytorch.module import build_module
        from sedsl.targets.cost import state_elements

        g = self.ir if se else self.base_ir
        memory.check_parameter_memory(self.name, state_elements(g), device, check_memory)
        with torch.device(device) if device is not None else _no_device():
            model = build_module(g, fused=fused)
        if self.weights is not None and device != "meta":  # meta: no storage to copy into
            from sedsl.pytorch.importer import load_weights

            load_weights(model, self.weights, g)
        return model

    def source(self, fused: bool = False, se: bool = True) -> str:
        """Standalone PyTorch source defining `class Model(nn.Module)` (the build's model.py)."""
        from sedsl.targets.codegen import generate

        return generate(self.ir if se else self.base_ir, fused=fused)

    def cost(self, convention: str = "fvcore") -> Cost:
        """Parameters and FLOPs of the base and SE networks, per node (see docs/cost_model.md)."""
        from sedsl.targets.cost import analyse

        return analyse(self.base_ir, self.ir, convention)


def load(path: str | Path, *, input: tuple[int, ...] | str | int | None = None,
         search_path: list[str | Path] | None = None, **overrides: Any) -> Network:
    """Compile the spec at `path`; keyword arguments override top-level parameters."""
    path = Path(path)
    text = source.read_spec(path)  # a regular UTF-8 file of bounded size, or a SpecError
    return loads(text, path=str(path), input=input, search_path=search_path, **overrides)


def loads(text: str, *, path: str = "<string>", input: tuple[int, ...] | str | int | None = None,
          search_path: list[str | Path] | None = None, **overrides: Any) -> Network:
    """Compile spec text; `path` names it in errors and anchors its relative imports."""
    sources: dict[str, str] = {path: text}
    try:
        module = parse(text, path)
        library = load_library(module, search_path_of(path, search_path), sources)
        shape = input_override(overrides.pop("input", input))
        done = elaborate(module, library, {k: to_value(v, k) for k, v in overrides.items()},
                         shape)
        graph = passes.run(done.graph, passes.pipeline(done.se))
        base = passes.verify(done.graph, "elaborate")
    except SpecError as err:
        raise err.attach(sources) from None
    from sedsl.compile.se_infer import coverage_notes

    return Network(graph, base, done.se, sources, notes=tuple(coverage_notes(base, done.se)))


def from_torch(model: nn.Module, input: tuple[int, ...] | int = (3, 224, 224),
               se: str | None = None, name: str | None = None) -> Network:
    """Import a torch.fx-traceable model as a Network carrying its weights.

    The model's own attention modules (SE, ECA, GC, CBAM, ...: sedsl.pytorch.attention) become
    SE blocks placed by rules (`net.sources["<se>"]`), so the base network is the model without
    them. `se`, the text of an `se { ... }` section, replaces those rules (errors point into
    it); `se=""` gives the base network alone."""
    from sedsl.compile.se_infer import coverage_notes
    from sedsl.compile.se_rules import SE_FILE, parse_se, se_section
    from sedsl.pytorch.importer import import_model

    imported = import_model(model, input, name)
    own = se is None
    section = imported.se if own else se_section(se or "")
    sources = {SE_FILE: section}
    try:
        config = parse_se(section or se_section(""))
        graph = imported.se_graph if own and imported.se_graph is not None else \
            passes.run(imported.graph, passes.pipeline(config))
    except SpecError as err:
        raise err.attach(sources) from None
    weights = {**imported.weights, **(imported.se_weights if own else {})}
    notes = (*imported.notes, *coverage_notes(imported.graph, config))
    return Network(graph, imported.graph, config, sources, weights, notes)


@contextmanager
def _no_device() -> Iterator[None]:
    yield


def input_override(value: Any) -> tuple[int, ...] | None:
    """`input=` as a shape: 224 (square), 320x240, 3x320x240, or a tuple of those numbers."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, str):
        parts = value.strip().lower().split("x")
        if all(p.isdigit() for p in parts):
            value = tuple(numbers.dimension(p, NOWHERE) for p in parts)
    if (isinstance(value, tuple) and 1 <= len(value) <= 3
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in value)):
        return value
    shown = "x".join(map(str, value)) if isinstance(value, tuple) else str(value)
    raise SpecError(f"input takes 224, 320x240 or 3x320x240, not {shown}", NOWHERE)


__all__ = ["Network", "Span", "from_torch", "load", "loads"]
