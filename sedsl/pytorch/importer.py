"""Import a PyTorch model: trace it with torch.fx and map every call onto sedsl's op table.

    net = sedsl.from_torch(torchvision.models.resnet50(), se="at residual.end of Bottleneck")

This module traces (`import_model`: a base graph and its weights); `sedsl.from_torch` applies
the SE rules and makes the Network.

Module paths become node names (`layer3.4.conv2`), module classes block kinds (`Bottleneck`), the
model's top-level children its stages; residual units are recognised from the graph, so the SE
rules of a spec select here as they do there. Shapes come from the op table's own rules: no
tensor runs through the model. Documentation: docs/import.md.
"""

from __future__ import annotations

import importlib
import itertools
import keyword
import math
import operator
import re
import struct
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

from sedsl.compile import passes
from sedsl.compile.se_infer import Wanted, check, infer, units_at
from sedsl.compile.se_rules import parse_se
from sedsl.errors import Span, SpecError
from sedsl.ir.graph import Graph
from sedsl.ir.node import Node, add_node, input_shapes, inputs, record, records
from sedsl.ir.ops import OPS, Attr, Shape, same_padding, same_pads
from sedsl.ir.residuals import mark_residuals
from sedsl.ir.vocab import ACTIVATIONS
from sedsl.language.numbers import python_number
from sedsl.pytorch import attention
from sedsl.record import Record
from sedsl.record import replace as replace_record


def make_node(op: str, attrs: Mapping[str, Attr], shape: Shape, name: str, block: str | None,
              kind: str | None, span: Span) -> Node:
    """The IR record of an imported node (branches are filled in by `mark_residuals`)."""
    stage = name.split(".")[0] if op != "input" else None
    return Node(op, dict(attrs), shape, stage, block, kind, None, "base", span)


class Imported(Record):
    """A traced model as sedsl's IR: the base graph (the model without its own attention
    blocks) and its weights by node name; the model's attention blocks as the text of an `se`
    section (`se`: the rules that put them into the base graph), the graph with them
    (`se_graph`) and their weights under its node names; notes on what the import left out."""

    graph: Graph
    weights: Mapping[str, torch.Tensor]  # node-named state dict -> the model's own tensors
    se: str = ""
    se_graph: Graph | None = None
    se_weights: Mapping[str, torch.Tensor] = MappingProxyType({})
    notes: tuple[str, ...] = ()


def import_model(model: nn.Module, input: tuple[int, ...] | int = (3, 224, 224),
                 name: str | None = None) -> Imported:
    """Trace `model` into a base graph and the rules of its own attention blocks (the rules
    are not applied to `graph`: `sedsl.from_torch` applies them, or the caller's instead)."""
    shape = _input_shape(input)
    try:
        built = build_graph(model, shape, name or type(model).__name__)
    except SpecError as err:
        raise _transformer(model, err) or err from None
    graph = passes.verify(built.graph, "from_torch")
    weights, dropped = _renamed_state(model, built.module_names, {o.path for o in built.own},
                                      built.direct)
    notes = (*built.notes, *(_dropped_note(model, path) for path in dropped
                             if not any(path == u or path.startswith(u + ".")
                                        for u in built.unused)))
    if not built.own:
        return Imported(graph, weights, notes=notes)
    wanted = [o.wanted for o in built.own]
    text = infer(graph, wanted)
    config = parse_se(text)
    check(graph, config, wanted)
    se_graph = passes.run(graph, passes.pipeline(config))
    return Imported(graph, weights, text, se_graph, _se_weights(model, built.own, se_graph),
                    notes)


# Modules that work on token sequences: a model that fails to import and has one is a vision
# transformer (or a hybrid), which sedsl's C x H x W graph does not hold.
_TOKENS = re.compile(r"Attention|Transformer|PatchEmbed|EncoderBlock|WindowPartition")


def _transformer(model: nn.Module, err: SpecError) -> SpecError | None:
    """The error for a vision transformer: out of scope, naming the module that says so."""
    found = next(((path, type(m).__name__) for path, m in model.named_modules()
                  if _TOKENS.search(type(m).__name__)), None)
    if found is None:
        return None
    path, cls = found
    return SpecError(f"{type(model).__name__} computes on token sequences (`{path or 'the model'}`"
                     f" is a {cls}): sedsl's graph holds C x H x W feature maps, and vision "
                     "transformers (ViT, Swin, MaxViT) and attention over tokens are out of scope",
                     None, f"what stopped the import: {err.message}")


def _dropped_note(model: nn.Module, path: str) -> str:
    module = model.get_submodule(path)
    n = sum(p.numel() for p in module.parameters())
    return (f"`{path}` ({type(module).__name__}, {n:,} parameters) is never called by the "
            "traced forward (eval mode): left out of the network and its cost")


def _se_weights(model: nn.Module, own: list[OwnSe], g: Graph) -> dict[str, torch.Tensor]:
    """The attention modules' tensors under the names of the SE blocks that replace them; a
    block whose parameter count differs from its module's is refused (a recognition bug)."""
    units = units_at(g)
    by_unit: dict[str, list[str]] = {}
    for name, rec in records(g):
        if rec.se is not None:
            by_unit.setdefault(rec.se.unit, []).append(name)
    out: dict[str, torch.Tensor] = {}
    for o in own:
        unit = units[o.wanted.key]
        module = model.get_submodule(o.path)
        expected = sum(p.numel() for p in module.parameters())
        got = sum(OPS[record(g, n).op].params(record(g, n).attrs, input_shapes(g, n),
                                              record(g, n).shape) for n in by_unit[unit])
        if got != expected:
            raise SpecError(f"`{o.path}` ({type(module).__name__}) has {expected:,} parameters "
                            f"but its `{o.wanted.settings.variant}` block {got:,}", None,
                            "this is a bug in sedsl's recognition of attention modules")
        steps = o.recognised.steps
        for key, tensor in module.state_dict(keep_vars=False).items():
            prefix = max((p for p in steps if key.startswith(p + ".")), key=len, default=None)
            if prefix is None:
                raise SpecError(f"`{o.path}.{key}` belongs to no step of its "
                                f"`{o.wanted.settings.variant}` block", None,
                                "this is a bug in sedsl's recognition of attention modules")
            out[f"{unit}.{steps[prefix]}{key[len(prefix):]}"] = tensor.detach()
    return out


def load_weights(model: nn.Module, weights: Mapping[str, torch.Tensor], g: Graph) -> None:
    """Copy the imported weights by name; SE parameters get the SE release's initialisation,
    except the layers `init = identity` started at a fixed value (their node's `init`), which
    keep it: the network then computes what the imported model did."""
    se_modules = {n for n, r in records(g) if r.role == "se"}
    fixed = {n for n, r in records(g) if r.role == "se" and "init" in r.attrs}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and _is_se(name, se_modules) and name not in fixed:
            init_se(module)
    missing, unexpected = model.load_state_dict(dict(weights), strict=False)
    not_se = [k for k in missing if not _is_se(k.rsplit(".", 1)[0], se_modules)]
    if not_se or unexpected:
        raise SpecError(f"the imported weights do not fit the lowered model: missing "
                        f"{not_se[:3]}, unexpected {list(unexpected)[:3]}")


def _is_se(module: str, se_nodes: set[str]) -> bool:
    """A module of an SE block: one of its nodes, or inside a fused `se` node."""
    return module in se_nodes or any(module.startswith(n + ".") for n in se_nodes)


def init_se(conv: nn.Conv2d) -> None:
    """Caffe's `msra` filler, N(0, 2 / fan_in), and zero biases: the Caffe ResNet family's
    initialisation, which the SE authors' release trains from (docs/import.md)."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def load_model(source: str) -> tuple[nn.Module, str]:
    """`torchvision:resnet50`, `timm:resnext50_32x4d` or `module.path:factory`: the model (no
    pretrained weights are downloaded) and a network name."""
    import importlib

    zoo, sep, name = source.partition(":")
    if not sep or not zoo or not name:
        raise SpecError(f"cannot read `{source}` as a model", None,
                        "torchvision:resnet50, timm:resnext50_32x4d or package.module:factory")
    try:
        if zoo == "torchvision":
            import torchvision  # type: ignore[import-untyped]

            model = torchvision.models.get_model(name, weights=None)
        elif zoo == "timm":
            import timm

            model = timm.create_model(name, pretrained=False)
        else:
            model = getattr(importlib.import_module(zoo), name)()
    except (ImportError, AttributeError, ValueError, RuntimeError, TypeError) as err:
        raise SpecError(f"cannot create `{source}`: {_first_line(err)}", None) from None
    if not isinstance(model, nn.Module):
        raise SpecError(f"`{source}` gave a {type(model).__name__}, not a torch.nn.Module")
    clean = re.sub(r"\W", "_", name)
    return model, clean if clean.isidentifier() else f"m_{clean}"


def _input_shape(value: tuple[int, ...] | int) -> Shape:
    dims = (value,) if isinstance(value, int) else tuple(value)
    if len(dims) == 1:
        dims = (3, dims[0], dims[0])
    elif len(dims) == 2:
        dims = (3, *dims)
    if len(dims) != 3 or min(dims) < 1:
        raise SpecError(f"input takes 224, (224, 224) or (3, 224, 224), not {value!r}")
    return dims


def _renamed_state(model: nn.Module, names: Mapping[str, str], own: set[str],
                   direct: Mapping[str, str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The model's state dict under node names (a module path -> the node it became), without
    the attention modules' (`own`); a tensor the forward reads itself (`direct`: a layer scale)
    as its node's, flat; and the modules holding tensors that the traced forward never calls,
    outermost first (their tensors are left out)."""
    state = {}
    dropped: list[str] = []
    for key, tensor in model.state_dict(keep_vars=False).items():
        if key in direct:
            state[direct[key]] = tensor.detach().reshape(-1)
            continue
        path, leaf = key.rsplit(".", 1) if "." in key else ("", key)
        if any(path == o or path.startswith(o + ".") for o in own):
            continue
        if path not in names:
            if not any(path == d or path.startswith(d + ".") for d in dropped):
                dropped.append(_outermost_uncalled(path, names))
            continue
        state[f"{names[path]}.{leaf}"] = tensor.detach()
    return state, dropped


def _outermost_uncalled(path: str, names: Mapping[str, str]) -> str:
    """The outermost module around `path` that no called module lies in (`aux1` for
    `aux1.conv.conv`)."""
    parts = path.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if not any(n == prefix or n.startswith(prefix + ".") for n in names):
            return prefix
    return path


# --- tracing -------------------------------------------------------------------------------------


class _Tracer(fx.Tracer):
    """torch.fx's tracer, mapping each node onto sedsl's ops as it records it (`on_node`), so
    that the shapes of traced tensors are known while the forward runs: `x.shape`, `x.size()`
    and `x.dim()` are numbers (`_ShapedProxy`), and shape checks, padding arithmetic and
    reshapes in a forward run as plain Python. It remembers which module was being traced
    when tracing failed."""

    def __init__(self, on_node: Callable[[fx.Node], Any] | None = None,
                 values: dict[fx.Node, Any] | None = None) -> None:
        super().__init__()
        self.failed_in: tuple[str, str] | None = None
        self.on_node = on_node
        self.values = {} if values is None else values  # node -> what it maps to

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        # timm's BatchNormAct2d (batch norm + activation) re-implements BatchNorm2d.forward;
        # attention modules sedsl reads as SE variants become SE blocks (pytorch/attention.py)
        return isinstance(m, nn.BatchNorm2d) or attention.is_attention(m) or \
            _timm_leaf(m) is not None or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        split = attention.split_class(m)
        if split is not None:
            forward = self._attending(m, split)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = (self.path_of_module(m), type(m).__name__)
            raise

    def _attending(self, m: nn.Module, split: attention.SplitClass) -> Callable[..., Any]:
        """The forward of attention across branches as sedsl reads it: its branches, traced
        as they run, then one call of `attend` on them (a `split_attention` node)."""
        path = self.path_of_module(m)

        def forward(*args: Any, **kwargs: Any) -> Any:
            return self.create_proxy("call_function", attend,
                                     (split.branches(m, *args, **kwargs), path), {})

        return forward

    def create_proxy(self, kind: str, target: Any, args: tuple[Any, ...],
                     kwargs: dict[str, Any], name: str | None = None, type_expr: Any = None,
                     proxy_factory_fn: Callable[[fx.Node], fx.Proxy] | None = None) -> Any:
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr,
                                     proxy_factory_fn)
        if self.on_node is not None and isinstance(proxy, fx.Proxy):
            self.values[proxy.node] = self.on_node(proxy.node)
        return proxy

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ShapedProxy(node, self)


class _ShapedProxy(fx.Proxy):
    """A traced value whose shape sedsl knows: its shape, size and dims are plain numbers (the
    batch is 1), so a forward's Python that reads them runs instead of being recorded."""

    def _full(self) -> torch.Size | None:
        values = getattr(self.tracer, "values", {})
        shape = _full_shape(values.get(self.node))
        return None if shape is None else torch.Size(shape)

    def size(self, dim: int | None = None) -> Any:
        full = self._full()
        if full is None:
            return self.tracer.create_proxy("call_method", "size",
                                            (self,) if dim is None else (self, dim), {})
        return full if dim is None else full[dim]

    def dim(self) -> Any:
        full = self._full()
        return len(full) if full is not None else \
            self.tracer.create_proxy("call_method", "dim", (self,), {})

    def numel(self) -> Any:
        full = self._full()
        return math.prod(full) if full is not None else \
            self.tracer.create_proxy("call_method", "numel", (self,), {})

    @property
    def shape(self) -> Any:
        full = self._full()
        return full if full is not None else fx.Proxy.__getattr__(self, "shape")

    @property
    def ndim(self) -> Any:
        full = self._full()
        return len(full) if full is not None else fx.Proxy.__getattr__(self, "ndim")


def _full_shape(value: Any) -> tuple[int, ...] | None:
    """The shape with the batch (of 1) of a mapped value, where it is a tensor."""
    if isinstance(value, T):
        c, *hw = value.shape
        return (1, *hw, c) if value.last else (1, *value.shape)
    if isinstance(value, Param):
        return value.shape
    return None


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Trace the inference graph (no auxiliary heads, no training-only branches)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.train(mode)


def trace(model: nn.Module, on_node: Callable[[fx.Node], Any] | None = None,
          values: dict[fx.Node, Any] | None = None) -> fx.Graph:
    """The model's torch.fx graph, each node mapped by `on_node` as it is recorded (into
    `values`), or a SpecError naming the module tracing failed in (or the one `on_node`
    raised)."""
    tracer = _Tracer(on_node, values)
    try:
        with _eval_mode(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tracer.trace(model)
    except SpecError:
        raise
    except Exception as err:
        where, cls = tracer.failed_in or ("", type(model).__name__)
        what = f"`{where}` ({cls})" if where else f"the model ({cls})"
        raise SpecError(f"cannot trace {what}: {type(err).__name__}: {_first_line(err)}", None,
                        "sedsl imports what torch.fx can trace: no control flow on tensor "
                        "values, no calls it cannot record") from None


def attend(x: Any, path: str) -> Any:
    """The attention of the module at `path` (attention across branches) over its branches
    `x`: one call of the traced graph, which becomes a `split_attention` node (never run)."""
    raise NotImplementedError("recorded by the tracer, never run")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]


# --- the graph -----------------------------------------------------------------------------------


class T(Record):
    """A tensor while mapping: the IR node that produces it and its shape without the batch;
    `via`: the attention module whose output it is (the base graph reads its input instead);
    `last`: the model holds it channels-last (permuted to N x H x W x C, ConvNeXt's MLP), which
    the graph does not: ops that work per position read it as channels-first."""

    node: str
    shape: Shape
    via: str | None = None
    last: bool = False


class Pieces(Record):
    """`torch.split` / `chunk` of a tensor along its channels: each piece becomes a
    `channel_slice` where the forward takes it."""

    x: T
    bounds: tuple[tuple[int, int], ...]


class Grouped(Record):
    """A feature map viewed as N x groups x C/groups x H x W (channel shuffle's first step);
    `swapped`: its two channel axes transposed."""

    x: T
    groups: int
    swapped: bool = False


class LowPadded(Record):
    """A feature map padded with -inf (timm's MaxPool2dSame), (left, right, top, bottom): only
    max pooling reads it, as `maxpool(same = true)` where the padding is TensorFlow's `same`
    for its window and stride, or as its own padding where that is equal on both sides."""

    x: T
    pads: tuple[int, int, int, int]


class Blocks(Record):
    """A feature map viewed as N x C x H/block x block x W/block x block (`permuted`: then as
    N x block x block x C x H/block x W/block): TResNet's space-to-depth on its way, which
    the view back to N x block^2 C x H/block x W/block completes."""

    x: T
    block: int
    permuted: bool = False


class Scaled(Record):
    """A feature map times a scalar parameter (`key`, shape (1,)): the first half of HGNetV2's
    learnable affine block, which the scalar bias added to it completes as `affine`."""

    x: T
    key: str


class Param(Record):
    """A parameter or buffer the forward reads directly (`self.weight`): its state-dict key
    and shape (with no batch)."""

    key: str
    shape: tuple[int, ...]


class OwnSe(Record):
    """One of the model's own attention modules: its path, what it is, and where."""

    path: str
    recognised: attention.Recognised
    wanted: Wanted


class Unsupported(Exception):
    """A call sedsl has no op for; `_Builder` adds the module path."""


@dataclass
class _Builder:
    model: nn.Module
    graph: Graph
    modules: dict[str, nn.Module]
    span: Span
    taken: set[str] = field(default_factory=set)
    reserved: set[str] = field(default_factory=set)  # module paths: function calls avoid them
    module_names: dict[str, str] = field(default_factory=dict)  # module path -> node name
    stacks: dict[str, list[tuple[str, type]]] = field(default_factory=dict)  # node -> modules
    adders: set[str] = field(default_factory=set)  # modules whose forward adds tensors
    own: dict[str, tuple[attention.Recognised, T]] = field(default_factory=dict)  # path ->
    readers: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # path -> (node, x)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # state key -> tensor
    direct: dict[str, str] = field(default_factory=dict)  # state key -> node tensor it became
    slices: dict[tuple[str, str, str], T] = field(default_factory=dict)  # one node per piece
    notes: list[str] = field(default_factory=list)  # what the import left out
    unused: set[str] = field(default_factory=set)  # modules whose outputs nothing uses

    def node_name(self, path: str, base: str | None) -> str:
        """A unique node name: the module path, or `<scope>.<op>` for a function call."""
        parts = [_identifier(p, i) for i, p in enumerate(path.split("."))] if path else []
        if base is not None:
            parts.append(base)
        name = ".".join(parts)
        k = 1
        while name in self.taken or (base is not None and name in self.reserved):
            name = f"{'.'.join(parts)}_{k}"
            k += 1
        self.taken.add(name)
        return name

    def emit(self, op: str, attrs: Mapping[str, Attr], xs: list[T], name: str,
             stack: list[tuple[str, type]], last: bool = False) -> T:
        """Add a node: check and infer its shape with the op table's rules. Its block comes
        later (`_assign_blocks`), from `stack`: the modules around the call."""
        shapes = [x.shape for x in xs]
        OPS[op].check(attrs, shapes)
        shape = OPS[op].infer(attrs, shapes)
        rec = make_node(op, attrs, shape, name, None, None, self.span)
        add_node(self.graph, name, rec, [x.node for x in xs])
        self.stacks[name] = stack
        for x in xs:
            if x.via is not None:
                self.readers.setdefault(x.via, []).append((name, x.node))
        return T(name, shape, last=last)


def _identifier(part: str, depth: int) -> str:
    """A path part as a node-name part: identifiers and indices stay, others are cleaned."""
    if part.isdigit():
        return part if depth > 0 else f"m{part}"  # the root of the generated module is no dict
    if part.isidentifier() and not keyword.iskeyword(part) and not part.startswith("_"):
        return part
    clean = re.sub(r"\W", "_", part).strip("_") or "m"
    return clean if clean.isidentifier() and not keyword.iskeyword(clean) else f"m_{clean}"


class Built(Record):
    """What tracing gives: the base graph, module path -> node name, the attention modules."""

    graph: Graph
    module_names: dict[str, str]
    own: list[OwnSe]
    direct: dict[str, str]  # state key -> node tensor, for tensors the forward reads itself
    notes: tuple[str, ...] = ()
    unused: frozenset[str] = frozenset()  # modules left out: their outputs are never used


def build_graph(model: nn.Module, shape: Shape, name: str) -> Built:
    """The base graph of `model` for an input `shape` (C, H, W): the model without its own
    attention modules, which are listed with where they were."""
    span = Span(f"<{name}>", 1, 1, 1, 1)
    g = Graph(name=name, input=shape, file=f"<torch {type(model).__module__}."
                   f"{type(model).__qualname__}>")
    b = _Builder(model, g, dict(model.named_modules()), span)
    b.reserved = {_path_name(n) for n in b.modules if n}
    b.taken.add("input")
    env: dict[fx.Node, Any] = {}

    def on_node(node: fx.Node) -> Any:
        if node.op == "placeholder":
            return _placeholder(node, b, shape)
        if node.op == "get_attr":
            return _param(node, b)
        return _map(node, env, b)

    fx_graph = trace(model, on_node, env)
    output_node = next(n for n in fx_graph.nodes if n.op == "output")
    output = _resolve(output_node.args[0], env)
    if not isinstance(output, T):
        raise SpecError(f"the model returns {type(output).__name__}, not one tensor", None,
                        "sedsl imports models with one input and one output tensor")
    g.graph["output"] = output.node
    g = b.graph = _partial_residuals(_unused(g, b), b)
    _assign_blocks(g, b)
    mark_residuals(g)
    return Built(g, b.module_names, _own(g, b, output), b.direct, tuple(b.notes),
                 frozenset(b.unused))


def _unused(g: Graph, b: _Builder) -> Graph:
    """The graph without what the forward computes and never uses (timm's DLA pools a tree's
    input whether or not it needs it): such layers are left out, with a note."""
    used, todo = {str(g.graph["output"])}, [str(g.graph["output"])]
    while todo:
        for u in g.predecessors(todo.pop()):
            if u not in used:
                used.add(u)
                todo.append(u)
    unused = [n for n in g.nodes if n not in used and n != "input"]
    if not unused:
        return g
    out = Graph(**g.graph)
    for name, rec in records(g):
        if name in used or name == "input":
            out.add_node(name, record=rec)
    for u, v, port in g.edges(data="port"):
        if u in out and v in out:
            out.add_edge(u, v, port=port)
    for n in unused:
        b.stacks.pop(n, None)
    paths = sorted(path for path, node in b.module_names.items() if node in unused)
    for path in paths:
        del b.module_names[path]
        b.unused.add(path)
    count = sum(p.numel() for path in paths for p in b.modules[path].parameters())
    shown = ", ".join(f"`{u}`" for u in unused[:3]) + (" ..." if len(unused) > 3 else "")
    b.notes.append(f"{shown} ({len(unused)} layer{'s' if len(unused) > 1 else ''}, {count:,} "
                   "parameters) compute what the model's output never uses: left out of the "
                   "network and its cost")
    return out


def _partial_residuals(g: Graph, b: _Builder) -> Graph:
    """ReXNet's partial-channel residual, `cat([x[:, :c] + s, x[:, c:]])`, as `x +
    pad_channels(s)`: the same values (the padded channels add zeros), as a residual unit a
    spec states (`shortcut { pad_channels(C) }`)."""
    found: dict[str, tuple[str, str, str, str, str]] = {}  # concat -> x, s, piece, add, rest
    for name, rec in records(g):
        if rec.op != "concat" or g.in_degree(name) != 2:
            continue
        add, rest = inputs(g, name)
        if record(g, add).op != "add" or record(g, rest).op != "channel_slice":
            continue
        for piece, s in itertools.permutations(inputs(g, add)):
            x = inputs(g, rest)[0]
            head, tail = record(g, piece).attrs, record(g, rest).attrs
            if record(g, piece).op == "channel_slice" and inputs(g, piece) == [x] and \
                    (head["start"], head["stop"], tail["start"], tail["stop"]) == \
                    (0, record(g, s).shape[0], record(g, s).shape[0], record(g, x).shape[0]) \
                    and list(g.successors(piece)) == [add] and \
                    list(g.successors(add)) == [name] == list(g.successors(rest)):
                found[name] = (x, s, piece, add, rest)
                break
    if not found:
        return g
    dropped = {n for x, s, piece, add, rest in found.values() for n in (piece, rest)} | \
        set(found)
    out = Graph(**g.graph)
    rename = {name: parts[3] for name, parts in found.items()}  # the concat -> the new add
    for name, rec in records(g):
        if name in found:
            x, s, _, add, _ = found[name]
            pad = b.node_name(_path_of(add), "pad_channels")
            c = record(g, x).shape[0]
            shape = (c, *record(g, s).shape[1:])
            out.add_node(pad, record=replace_record(record(g, s), op="pad_channels",
                                                    attrs={"c_out": c}, shape=shape))
            out.add_edge(rename.get(s, s), pad, port=0)
            out.add_node(add, record=replace_record(record(g, add), shape=shape))
            out.add_edge(rename.get(x, x), add, port=0)
            out.add_edge(pad, add, port=1)
            b.stacks[pad] = b.stacks[add]
            b.stacks.pop(name, None)
        elif name not in dropped and name not in {p[3] for p in found.values()}:
            out.add_node(name, record=rec)
    for u, v, port in g.edges(data="port"):
        if v not in dropped and v not in rename.values():
            out.add_edge(rename.get(u, u), v, port=port)
    for n in dropped:
        b.stacks.pop(n, None)
    out.graph["output"] = rename.get(g.graph["output"], g.graph["output"])
    return out


def _path_of(node: str) -> str:
    """The scope of a function call's node (`features.2` for `features.2.add`)."""
    return node.rsplit(".", 1)[0] if "." in node else ""


def _own(g: Graph, b: _Builder, output: T) -> list[OwnSe]:
    """The attention modules, each with the tensor it recalibrates and the inputs (node, port:
    ports as residual units left them) that read its output."""
    out = []
    for path, (rec, x) in b.own.items():
        consumers = {(n, int(g.edges[src, n]["port"])) for n, src in b.readers.get(path, [])
                     if n in g and src in set(g.predecessors(n))}  # readers left out: none
        if output.via == path:
            consumers.add(passes.OUTPUT)
        cls = type(b.modules[path]).__name__
        wanted = Wanted(x.node, frozenset(consumers), rec.settings, rec.rd, rec.kernel,
                        f"`{path}` ({cls})")
        out.append(OwnSe(path, rec, wanted))
    return out


def _param(node: fx.Node, b: _Builder) -> Param:
    """A tensor the forward reads as a value: what it is used for decides (F.linear's weight, a
    layer scale); anything else is refused where it is used."""
    key = str(node.target)
    if not b.tensors:
        b.tensors = {**dict(b.model.named_parameters()), **dict(b.model.named_buffers())}
    tensor = b.tensors.get(key)
    if tensor is None:  # a constant torch.fx made a copy of (a non-persistent buffer, ...)
        tensor = getattr(b.model, key, None)
    if not isinstance(tensor, torch.Tensor):
        raise SpecError(f"`{_scope(node) or 'the model'}` reads `{key}`, which is no tensor of "
                        "the model's state", None, _HINT)
    return Param(key, tuple(tensor.shape))


def _placeholder(node: fx.Node, b: _Builder, shape: Shape) -> Any:
    if "input" in b.graph:  # a second forward argument: its default, if it has one
        if node.args:
            return node.args[0]
        raise SpecError(f"the model's forward takes a second input `{node.target}`", None,
                        "sedsl imports models with one input tensor")
    rec = make_node("input", {"shape": shape}, shape, "input", None, None, b.span)
    add_node(b.graph, "input", rec, [])
    return T("input", shape)


def _resolve(value: Any, env: Mapping[fx.Node, Any]) -> Any:
    return fx.node.map_arg(value, lambda n: env[n])


def _stack(node: fx.Node) -> list[tuple[str, type]]:
    """(module path, class) from the outermost module to the innermost, for this call."""
    return [(path, cls) for path, cls in node.meta.get("nn_module_stack", {}).values()]


def _scope(node: fx.Node) -> str:
    """The module whose forward makes this call (for a module call: the module itself)."""
    stack = _stack(node)
    return stack[-1][0] if stack else ""


def _is_container(cls: type) -> bool:
    """Sequential, ModuleList, ModuleDict and subclasses that only group: not block instances."""
    if issubclass(cls, nn.ModuleList | nn.ModuleDict):
        return True
    return issubclass(cls, nn.Sequential) and cls.forward is nn.Sequential.forward


def _assign_blocks(g: Graph, b: _Builder) -> None:
    """Each node's block instance: the outermost module around its call that is not a
    container, nor a module that only groups residual units (a stage such as timm's RegStage
    or DlaTree: it adds no tensors itself, modules inside it do), so that every residual unit
    is an instance of its own and a Bottleneck's inner modules belong to it, as the layers of
    a spec's block do."""
    def grouping(path: str) -> bool:
        return path not in b.adders and any(a.startswith(path + ".") for a in b.adders)

    for name, stack in b.stacks.items():
        for path, cls in stack:
            if path and not _is_container(cls) and not grouping(path):
                rec = record(g, name)
                g.nodes[name]["record"] = replace_record(rec, block=_path_name(path),
                                                         kind=cls.__name__)
                break


def _path_name(path: str) -> str:
    return ".".join(_identifier(p, i) for i, p in enumerate(path.split(".")))


def _map(node: fx.Node, env: dict[fx.Node, Any], b: _Builder) -> Any:
    args, kwargs = _resolve(node.args, env), _resolve(node.kwargs, env)
    where = _scope(node)
    try:
        if node.op == "call_module":
            module = b.modules[str(node.target)]
            mapped = map_module(module, args, kwargs)
            what = f"`{node.target}` ({type(module).__name__})"
        elif node.target is attend:
            mapped = _split_attention(b.modules[args[1]], args[1], args[0])
            what = f"`{where}`"
        else:
            mapped = map_call(node.op, node.target, args, kwargs)
            what = f"`{where or 'the model'}`"
    except Unsupported as err:
        cls = _stack(node)[-1][1].__name__ if where else ""
        owner = f"`{where}` ({cls})" if where else "the model"
        raise SpecError(f"{owner}: {err}", None, _HINT) from None
    except SpecError as err:
        raise SpecError(f"{what}: {err.message}", None, err.hint) from None
    if isinstance(mapped, attention.Recognised):
        return _attention(node, mapped, args[0], b)
    if node.op == "call_method" and str(node.target).endswith("_") and \
            isinstance(node.args[0], fx.Node) and isinstance(mapped, Emit | T):
        # `out.mul_(g)`: torch.fx records the call, but the forward reads `out` after it (its
        # proxy, the value before); the tensor `out` is the result from here on
        y = _map_emit(node, mapped, what, b) if isinstance(mapped, Emit) else mapped
        env[node.args[0]] = y
        return y
    if not isinstance(mapped, Emit):
        return mapped  # a pass-through (identity, dropout off) or a plain value (x.size(0))
    return _map_emit(node, mapped, what, b)


def _map_emit(node: fx.Node, mapped: Emit, what: str, b: _Builder) -> T:
    """Add the nodes of an op a call maps to."""
    where = _scope(node)
    who = what if node.op == "call_module" else \
        f"`{where}` ({_stack(node)[-1][1].__name__})" if where else "the model"
    last = _layout(mapped, who)
    if len({x.node for x in mapped.inputs}) < len(mapped.inputs):
        raise SpecError(f"{who}: `{mapped.op}` reads one tensor twice (as `x + x` or "
                        "`cat([x, x])`)", None, "sedsl's graph has one edge between two layers; "
                        "`x * 2` is `scale(2)`")
    stack = _stack(node)
    if node.op != "call_module" and mapped.module is None:
        if mapped.op == "add":
            b.adders.add(where)
        if mapped.op == "channel_slice":  # one node per piece, however often it is taken
            piece = (mapped.inputs[0].node, str(mapped.attrs["start"]),
                     str(mapped.attrs["stop"]))
            if piece not in b.slices:
                b.slices[piece] = b.emit(mapped.op, mapped.attrs, mapped.inputs,
                                         b.node_name(where, mapped.op), stack, last)
            return b.slices[piece]
        y = b.emit(mapped.op, mapped.attrs, mapped.inputs, b.node_name(where, mapped.op),
                   stack, last)
        for state_key, tensor in mapped.tensors:
            b.direct[state_key] = f"{y.node}.{tensor}"
        for path, child in mapped.parts:
            b.module_names[path] = f"{y.node}.{child}"
        return y
    if node.op == "call_module":
        stack = stack[:-1]  # a module's own call is inside the modules around it
    target = str(node.target) if mapped.module is None else mapped.module
    holder = b.modules[target]
    if target in b.module_names and any(True for _ in holder.parameters()):
        raise SpecError(f"`{target}` ({type(holder).__name__}) is called twice "
                        "with the same weights", None,
                        "weight sharing has no form in sedsl's graph")
    xs = mapped.inputs
    for op, attrs in mapped.before:  # padding a module computes before its op, by op name
        xs = [b.emit(op, attrs, xs, b.node_name(target, op), stack, last)]
    name = b.node_name(target, None)
    b.module_names.setdefault(target, name)
    y = b.emit(mapped.op, mapped.attrs, xs, name, stack, last)
    for child, op, attrs in mapped.then:  # layers a module runs after its own op, by path
        y = b.emit(op, attrs, [y], b.node_name(f"{target}.{child}", None), stack, last)
    return y


# Ops that work per element or per position: they keep a channels-last tensor channels-last.
_PER_POSITION = frozenset({*ACTIVATIONS, "leaky_relu", "dropout", "drop_path", "scale", "add",
                           "product", "layer_scale", "affine"})


def _layout(mapped: Emit, what: str) -> bool:
    """Whether the op's output is channels-last; an op that needs the channels first refuses a
    channels-last input."""
    if mapped.last is not None:
        return mapped.last
    last = [x.last for x in mapped.inputs]
    if not any(last):
        return False
    if mapped.op in _PER_POSITION and all(last):
        return True
    raise SpecError(f"{what}: runs `{mapped.op}` on a channels-last tensor (permuted to "
                    "N x H x W x C)", None, "sedsl reads channels-last code where it is a "
                    "layer norm, a linear layer or an elementwise op between two permutes")


def _attention(node: fx.Node, rec: attention.Recognised, x: T, b: _Builder) -> T:
    """An attention module's call: its output is its input in the base graph, marked `via` it,
    so that the inputs reading it are known (its SE block goes between them)."""
    path = str(node.target)
    if x.via is not None:
        raise SpecError(f"`{path}` ({type(b.modules[path]).__name__}) recalibrates the output "
                        f"of `{x.via}` directly", None,
                        "sedsl places one attention block at a point; two in a row have no rule")
    if path in b.own:
        raise SpecError(f"`{path}` ({type(b.modules[path]).__name__}) is called twice", None,
                        "weight sharing has no form in sedsl's graph")
    b.own[path] = (rec, x)
    return T(x.node, x.shape, path)


_HINT = ("sedsl maps conv, batch norm, activations, pooling, linear, dropout, flatten, add, "
         "mul and cat; wrap other code in a layer sedsl knows, or tell the maintainers")


# --- mapping calls onto ops ----------------------------------------------------------------------


class Emit(Record):
    """An op to add; `then`: (child module, op, attributes) run after it, e.g. BatchNormAct2d's
    `act`; `before`: (op, attributes) a module runs on its input first (a `same` pad of timm's
    ScaledStdConv2dSame), each a node `<module>.<op>`; `module`: the module whose tensors a
    function call uses (`F.linear(x, self.weight)`: the node takes that module's path and
    tensors); `tensors`: (state-dict key, the node's tensor name) of tensors it uses directly
    (a layer scale's `gamma`); `last`: the output is channels-last (None: as its inputs, for ops
    that work per element); `parts`: (module path, the node's submodule) of modules whose
    tensors the node holds under its own names (`split_attention`'s fc1, bn1, fc2)."""

    op: str
    attrs: dict[str, Attr]
    inputs: list[T]
    then: tuple[tuple[str, str, dict[str, Attr]], ...] = ()
    before: tuple[tuple[str, dict[str, Attr]], ...] = ()
    module: str | None = None
    tensors: tuple[tuple[str, str], ...] = ()
    last: bool | None = None
    parts: tuple[tuple[str, str], ...] = ()


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    h, w = v
    return (int(h), int(w))


def _tensor(x: Any, what: str) -> T:
    if isinstance(x, LowPadded):
        raise Unsupported(f"{what} on a tensor padded with -inf; sedsl pads with -inf only "
                          "before max pooling")
    if isinstance(x, Blocks):
        raise Unsupported(f"{what} on a tensor viewed as {x.block}x{x.block} blocks; sedsl "
                          "reads such views as space-to-depth only")
    if isinstance(x, Scaled):
        raise Unsupported(f"{what} on a tensor times the scalar `{x.key}`; sedsl scales by a "
                          "scalar only with a scalar bias added (affine)")
    if not isinstance(x, T):
        raise Unsupported(f"{what} on {type(x).__name__}, not a tensor")
    return x


def _dotted(path: str) -> Any:
    """The object a dotted path names: `torch.nn.functional.gelu`, `torch.ops.aten.silu_`."""
    root, *names = path.split(".")
    value: Any = importlib.import_module(root)
    for name in names:
        value = getattr(value, name)
    return value


# Every activation of the vocabulary (sedsl.ir.vocab), as a module, a function and a method:
# the import derives its tables from the records that specs, lowering and kernels read.
ACTIVATION_MODULES: dict[type, str] = {getattr(nn, a.module): a.name
                                       for a in ACTIVATIONS.values()}
_ACTIVATION_CALLS: dict[Any, str] = {
    f: a.name for a in ACTIVATIONS.values()
    for f in (_dotted(a.functional), getattr(F, a.name, None), getattr(torch, a.name, None),
              *((_dotted(a.inplace),) if a.inplace else ()))
    if f is not None}
_ACTIVATION_METHODS: dict[str, str] = {
    method: a.name for a in ACTIVATIONS.values() for method in (a.name, a.name + "_")
    if hasattr(torch.Tensor, method)}


def _activation_module(m: nn.Module) -> str:
    """The vocabulary's name for an activation module, refused where its options change what it
    computes (nn.GELU(approximate="tanh")); `inplace` changes nothing."""
    name = ACTIVATION_MODULES[type(m)]
    options = {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "inplace"}
    default = {k: v for k, v in vars(type(m)()).items() if not k.startswith("_")
               and k != "inplace" and k != "training"}
    options.pop("training", None)
    if options != default:
        raise Unsupported(f"uses {type(m).__name__} with {options}; sedsl's `{name}` is "
                          f"{type(m).__name__}() with its defaults")
    return name


def map_module(m: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """A leaf module call as an op (an Emit), an attention module as what it is (Recognised),
    or its pass-through value."""
    if len(args) != 1 or kwargs:
        raise Unsupported(f"calls {type(m).__name__} with {len(args)} arguments")
    x = _tensor(args[0], type(m).__name__)
    if attention.is_attention(m):
        if len(x.shape) != 3:
            raise Unsupported("recalibrates a flat tensor; attention blocks take C x H x W")
        try:
            return attention.recognise(m)
        except attention.NotVariant as err:
            raise Unsupported(f"is an attention module sedsl reads as an SE variant, but {err}"
                              ) from None
    act = _activation_of(m, x)
    if act is not None:
        return act
    if isinstance(m, nn.Identity):
        return x
    if isinstance(m, nn.LayerNorm):
        return _layer_norm(x, tuple(m.normalized_shape), m.weight is not None, m.eps)
    if isinstance(m, nn.Linear) and x.last:
        return Emit("channel_linear", {"c_out": m.out_features, "bias": m.bias is not None},
                    [x], last=True)
    handler = MODULES.get(nn.BatchNorm2d if isinstance(m, nn.BatchNorm2d) else type(m))
    if isinstance(m, nn.BatchNorm1d) and len(x.shape) == 1:
        handler = MODULES[nn.BatchNorm2d]  # batch norm of flat features (RepViT's head)
    leaf = _timm_leaf(m)
    if leaf is not None:
        return leaf(m, x)
    if handler is None:
        raise Unsupported(f"uses {type(m).__module__}.{type(m).__qualname__}, which sedsl has "
                          "no op for")
    return handler(m, x)


def _activation_of(m: nn.Module, x: T) -> Emit | None:
    """An activation module as its op: torch's of the vocabulary, LeakyReLU (with its slope),
    or timm's own classes of the vocabulary's activations; None for other modules."""
    if type(m) in ACTIVATION_MODULES:
        return Emit(_activation_module(m), {}, [x])
    if isinstance(m, nn.LeakyReLU):
        return Emit("leaky_relu", {"slope": float(m.negative_slope)}, [x])
    if type(m).__module__.startswith("timm.layers.activations"):
        try:
            return Emit(attention.activation(m, "activation"), {}, [x])
        except attention.NotVariant:
            return None
    return None


def _layer_norm(x: T, shape: tuple[int, ...], affine: bool, eps: float,
                module: str | None = None) -> Emit:
    """Layer norm over a channels-last tensor's channels (ConvNeXt), or over flat features:
    sedsl's `layer_norm`."""
    if not (x.last or len(x.shape) == 1) or shape != (x.shape[0],):
        raise Unsupported(f"normalises over {shape} of a {'x'.join(map(str, x.shape))} "
                          "tensor; sedsl's layer norm normalises over the channels")
    if not affine:
        raise Unsupported("normalises without affine weights")
    return Emit("layer_norm", {"eps": float(eps)}, [x], module=module, last=x.last)


def _conv(m: nn.Conv2d, x: T) -> Emit:
    if m.padding_mode != "zeros":
        raise Unsupported(f"pads with `{m.padding_mode}`; sedsl's conv pads with zeros")
    kernel, dilation = _pair(m.kernel_size), _pair(m.dilation)
    padding: tuple[int, int]
    if m.padding == "valid":
        padding = (0, 0)
    elif m.padding == "same":
        if kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
            raise Unsupported("pads an even kernel `same` (unequal padding)")
        padding = same_padding(kernel, dilation)
    else:
        padding = _pair(m.padding)
    return Emit("conv", {"c_out": m.out_channels, "kernel": kernel, "stride": _pair(m.stride),
                         "padding": padding, "dilation": dilation, "groups": m.groups,
                         "bias": m.bias is not None}, [x])


# timm's convs that standardise their weight in the forward (timm.layers.std_conv): leaves of
# the trace, each a `conv(std = true)`.
def _std_conv(m: Any, x: T) -> Emit:
    """timm's StdConv2d (BiT) and ScaledStdConv2d (NF-Nets): `conv(std = true, eps)`, with
    `gain = true` and the gamma of its scale (gamma / sqrt(fan-in)) for the scaled one; their
    `Same` forms with a dynamic padding pad the input as TensorFlow's `same` first."""
    conv = _conv(m, x)
    attrs: dict[str, Attr] = {**conv.attrs, "std": True, "eps": float(m.eps)}
    weights = m._parameters  # not `m.gain`: while tracing, that is a proxy
    if weights.get("gain") is not None:
        attrs.update(gain=True, gamma=_gamma(float(m.scale), int(weights["weight"][0].numel())))
    if not getattr(m, "same_pad", False):
        return Emit("conv", attrs, [x])
    left, right, top, bottom = same_pads((x.shape[1], x.shape[2]), _pair(m.kernel_size),
                                         _pair(m.stride), _pair(m.dilation))
    pad: dict[str, Attr] = {"left": left, "right": right, "top": top, "bottom": bottom}
    return Emit("conv", attrs, [x], before=(("pad", pad),) if any(pad.values()) else ())


def _gamma(scale: float, fan_in: int) -> float:
    """The gamma whose gamma * fan_in ** -0.5 is `scale` exactly, as timm computes it
    (ScaledStdConv2d keeps only the product): the shortest a spec can write, else the shortest
    (`_constant`)."""
    centre = scale * fan_in ** 0.5
    near = [centre]  # and the floats either side: undoing the product rounds
    for step in (math.inf, -math.inf):
        value = centre
        for _ in range(4):
            value = math.nextafter(value, step)
            near.append(value)
    gammas = [g for g in {float(f"{v:.{d}g}") for v in near for d in range(1, 18)}
              if g * fan_in ** -0.5 == scale]
    if gammas:
        return _constant(min(gammas, key=lambda g: (not _writable(g), len(repr(g)), g)))
    raise Unsupported(f"scales its standardised weight by {scale!r}, which no gamma gives")


def _float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def _writable(value: float) -> bool:
    """Whether a spec's numbers can hold the float exactly (at most 15 decimal places)."""
    try:
        python_number(value, None)
    except SpecError:
        return False
    return True


def _constant(value: float) -> float:
    """A constant a float32 tensor is multiplied by, as a spec can write it: itself, or where
    its shortest decimal has more places than a spec's numbers may (NF-Nets' 1 / sqrt(1.44) =
    0.8333333333333333, their activations' gamma 1.7015043497085571), the most precise decimal
    a spec may write that is the same float32, which is what the model multiplies by."""
    for digits in range(17, 0, -1):
        short = float(f"{value:.{digits}g}")
        if _writable(short):
            return short if short == value or _float32(short) == _float32(value) else value
    return value


def _bn(m: nn.BatchNorm2d, x: T) -> Emit:
    if not (m.affine and m.track_running_stats):
        raise Unsupported("uses batch norm without affine weights or running statistics")
    then: list[tuple[str, str, dict[str, Attr]]] = []
    for child, sub in m.named_children():  # timm's BatchNormAct2d: `drop` and `act` after it
        if isinstance(sub, nn.Identity | nn.Dropout):
            continue
        act = _activation_of(sub, x) if child == "act" else None
        if act is None or act.op not in _PER_POSITION:
            raise Unsupported(f"runs `{child}` ({type(sub).__name__}) inside its batch norm")
        then.append((child, act.op, act.attrs))
    return Emit("bn", {"eps": float(m.eps)}, [x], tuple(then))


def _pool(m: nn.MaxPool2d | nn.AvgPool2d, x: T) -> Emit:
    attrs: dict[str, Attr] = {"kernel": _pair(m.kernel_size),
                              "stride": _pair(m.stride or m.kernel_size),
                              "padding": _pair(m.padding), "ceil": bool(m.ceil_mode)}
    if isinstance(m, nn.MaxPool2d):
        if _pair(m.dilation) != (1, 1) or m.return_indices:
            raise Unsupported("max-pools with dilation or indices")
        return Emit("maxpool", attrs, [x])
    if m.divisor_override is not None:
        raise Unsupported("average-pools with a divisor override")
    return Emit("avgpool", {**attrs, "count_pad": bool(m.count_include_pad)}, [x])


def _blur_pool(m: Any, x: T) -> Emit:
    """timm's BlurPool2d: padding by `same_padding(filt_size)` (reflect or zeros), its binomial
    filter checked value by value, depthwise at its stride. A model made on the meta device
    (the zoo bench) has no values to check: timm computes the filter from `filt_size` and
    never loads it (a buffer outside the state dict), so its own class is taken at its word."""
    size, stride, mode = int(m.filt_size), int(m.stride), str(m.pad_mode)
    padding, channels = list(m.padding), m.channels
    pad = same_padding(size)[0]
    if mode not in ("reflect", "constant") or padding != [pad] * 4 or \
            channels not in (None, x.shape[0]):
        raise Unsupported(f"blur-pools with padding {padding} ({mode}) for a {size}-tap filter; "
                          f"sedsl pads {pad} by reflection or zeros")
    taps = torch.tensor([math.comb(size - 1, k) for k in range(size)],
                        dtype=torch.float32) / (2 ** (size - 1))
    filt = taps[:, None] * taps[None, :]
    own: torch.Tensor = m.filt
    if own.is_meta and type(m).__module__ == "timm.layers.blur_pool":
        pass
    elif not all(torch.equal(f, filt) for f in own.detach().cpu().reshape(-1, size, size)):
        raise Unsupported("blur-pools with a filter other than the binomial one")
    return Emit("blur_pool", {"size": size, "stride": stride, "reflect": mode == "reflect"}, [x])


def _split_attention(m: nn.Module, path: str, x: Any) -> Emit:
    """Attention across branches (timm's SplitAttn, SelectiveKernel) over the concatenated
    branches `x`: `split_attention`, its tensors those of the module's attention layers."""
    try:
        split = attention.recognise_split(m)
    except attention.NotVariant as err:
        raise Unsupported(f"is attention across branches that sedsl reads as split_attention, "
                          f"but {err}") from None
    x = _tensor(x, "split attention")
    return Emit("split_attention", dict(split.attrs), [x],
                parts=tuple((f"{path}.{sub}", child) for sub, child in split.parts.items()))


def _frn(m: Any, x: T) -> Emit:
    """timm's FilterResponseNormTlu2d (its TLU: `tau`) or FilterResponseNormAct2d (its `act`
    after it) as `frn`; only the RMS form (timm's default)."""
    if not getattr(m, "rms", True) or len(x.shape) != 3 or x.last:
        raise Unsupported("normalises filter responses other than by their RMS over H x W")
    tlu = getattr(m, "tau", None) is not None
    then: list[tuple[str, str, dict[str, Attr]]] = []
    act = getattr(m, "act", None)
    if act is not None and not isinstance(act, nn.Identity):
        emitted = _activation_of(act, x)
        if emitted is None or emitted.op not in _PER_POSITION:
            raise Unsupported(f"runs `act` ({type(act).__name__}) inside its filter response "
                              "norm")
        then.append(("act", emitted.op, emitted.attrs))
    return Emit("frn", {"eps": float(m.eps), "tlu": tlu}, [x], tuple(then))


def _evonorm_s0(m: Any, x: T) -> Emit:
    """timm's EvoNorm2dS0: x * sigmoid(v x) / group_std(x) * weight + bias (without `v`: the
    affine part only), its tensors weight, bias, v; EvoNorm2dS0a divides by the group std
    without `v` too (`norm = true`)."""
    if len(x.shape) != 3 or x.last:
        raise Unsupported("normalises a tensor that is not a channels-first feature map")
    act = m._parameters.get("v") is not None  # not `m.v`: while tracing, that is a proxy
    return Emit("evonorm_s0", {"groups": int(m.groups), "eps": float(m.eps), "act": act,
                               "norm": act or type(m).__name__ == "EvoNorm2dS0a"}, [x])


def _grn(m: Any, x: T) -> Emit:
    """timm's GlobalResponseNorm (ConvNeXt-V2), channels-first, or channels-last on a tensor the
    model holds so (its MLP of Linear layers)."""
    if len(x.shape) != 3 or bool(m.channel_dim == -1) != x.last:
        raise Unsupported("normalises a tensor in another layout than it was made for")
    return Emit("grn", {"eps": float(m.eps)}, [x], last=x.last)  # as the model holds it


def _simple_norm(m: Any, x: T) -> Emit:
    """timm's SimpleNorm2d (ConvNeXt's RMS variants): x / sqrt(var_c(x) + eps) * weight."""
    if len(x.shape) != 3 or x.last or not m.elementwise_affine:
        raise Unsupported("simple-norms without a weight, or a tensor that is not a "
                          "channels-first feature map")
    return Emit("simple_norm", {"eps": float(m.eps)}, [x])


def _adaptive(size: Any, x: T, mode: str) -> Emit:
    if isinstance(size, int):
        size = (size, size)
    if None in tuple(size):
        raise Unsupported("pools adaptively to a size with `None`")
    h, w = _pair(size)
    if (h, w) == (1, 1):
        return Emit(f"global_{mode}pool", {}, [x])
    if mode == "max":
        raise Unsupported(f"max-pools adaptively to {h}x{w}")
    return Emit("adaptive_avgpool", {"size": (h, w)}, [x])


def _upsample(x: T, size: Any, scale: Any, mode: str, align: Any) -> Emit:
    """nn.Upsample / F.interpolate by a whole factor, nearest or bilinear."""
    if len(x.shape) != 3 or x.last:
        raise Unsupported("upsamples a tensor that is no C x H x W feature map")
    _, h, w = x.shape
    if scale is None and size is not None:
        sh, sw = _pair(size)
        scale = sh // h if sh % h == 0 and sw % w == 0 and sh // h == sw // w else None
    factors = {float(v) for v in (scale if isinstance(scale, tuple | list) else [scale])} \
        if scale is not None else set()
    if len(factors) != 1 or not next(iter(factors)).is_integer() or mode not in ("nearest",
                                                                                  "bilinear"):
        raise Unsupported(f"upsamples {mode} to size {size} / by {scale}; sedsl upsamples by a "
                          "whole factor, nearest or bilinear")
    return Emit("upsample", {"scale": int(factors.pop()), "bilinear": mode == "bilinear",
                             "align": bool(align)}, [x])


def _linear(m: nn.Linear, x: T) -> Emit:
    return Emit("linear", {"c_out": m.out_features, "bias": m.bias is not None}, [x])


def _dropout(p: float, x: T) -> Any:
    return Emit("dropout", {"p": float(p)}, [x]) if p > 0 else x


def _flatten(x: T, start_dim: int = 1, end_dim: int = -1) -> Emit:
    start, end = start_dim, end_dim
    if start != 1 or end not in (-1, len(x.shape)):
        raise Unsupported(f"flattens dims {start}..{end}; sedsl flattens all but the batch")
    return Emit("flatten", {}, [x])


# The leaf modules import maps, by class: each gives an Emit (the op and its attributes) for the
# module and its input. An importable construct is one entry here (with its op, if new).
# timm's modules read whole (leaves of the trace), by their class's path (their forwards
# reshape, reduce or standardise in ways sedsl does not trace): the module's tensors are the
# node's, under the same names. By path, so that timm stays optional.
TIMM_LEAVES: dict[str, Callable[[Any, T], Emit]] = {
    "timm.layers.blur_pool.BlurPool2d": _blur_pool,
    **{f"timm.layers.std_conv.{name}": _std_conv for name in (
        "StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame")},
    "timm.layers.filter_response_norm.FilterResponseNormTlu2d": _frn,
    "timm.layers.filter_response_norm.FilterResponseNormAct2d": _frn,
    "timm.layers.evo_norm.EvoNorm2dS0": _evonorm_s0,
    "timm.layers.evo_norm.EvoNorm2dS0a": _evonorm_s0,
    "timm.layers.grn.GlobalResponseNorm": _grn,
    "timm.layers.norm.SimpleNorm2d": _simple_norm,
}


def _timm_leaf(m: nn.Module) -> Callable[[Any, T], Emit] | None:
    return TIMM_LEAVES.get(f"{type(m).__module__}.{type(m).__qualname__}")


MODULES: dict[type, Callable[[Any, T], Any]] = {
    nn.Conv2d: _conv,
    nn.BatchNorm2d: _bn,
    nn.MaxPool2d: _pool,
    nn.AvgPool2d: _pool,
    nn.AdaptiveAvgPool2d: lambda m, x: _adaptive(m.output_size, x, "avg"),
    nn.AdaptiveMaxPool2d: lambda m, x: _adaptive(m.output_size, x, "max"),
    nn.Linear: _linear,
    nn.Dropout: lambda m, x: _dropout(m.p, x),
    nn.Flatten: lambda m, x: _flatten(x, m.start_dim, m.end_dim),
    nn.ChannelShuffle: lambda m, x: Emit("channel_shuffle", {"groups": m.groups}, [x]),
    nn.Upsample: lambda m, x: _upsample(x, m.size, m.scale_factor, m.mode, m.align_corners),
    nn.GroupNorm: lambda m, x: _group_norm(x, m.num_groups, m.affine, m.eps),
    **dict.fromkeys((nn.ZeroPad2d, nn.ConstantPad2d),
                    lambda m, x: _f_pad((x, m.padding), {"value": m.value})),
}

def map_call(kind: str, target: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """A function or method call as an op (an Emit), a pass-through, or a plain value."""
    if kind == "call_method":
        return _method(str(target), args, kwargs)
    if target in _ACTIVATION_CALLS:
        if any(k != "inplace" for k in kwargs) or len(args) > 2:
            raise Unsupported(f"calls {target.__name__} with options {dict(kwargs)}")
        return Emit(_ACTIVATION_CALLS[target], {}, [_tensor(args[0], target.__name__)])
    handler = _FUNCTIONS.get(target)
    if handler is not None:
        return handler(args, kwargs)
    if getattr(target, "__name__", "") == "stochastic_depth":
        # torchvision's drop-path: the identity at inference, which is what sedsl imports.
        return _tensor(args[0], "stochastic_depth")
    if target is operator.getitem:
        return _getitem(args[0], args[1])
    if target is getattr and isinstance(args[0], T | Param):
        return _attribute(args[0], str(args[1]))
    if target in (operator.floordiv, operator.sub, operator.truediv) and \
            not any(isinstance(a, T) for a in args):
        return target(*args)
    if target is operator.truediv and isinstance(args[0], T) and isinstance(args[1], int | float) \
            and args[1] > 0 and math.frexp(args[1])[0] == 0.5:
        return Emit("scale", {"factor": 1 / args[1]}, [args[0]])  # x / 2^k: exactly x * 2^-k
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", str(target))
    module = getattr(target, "__module__", None) or ""
    if module.startswith("torch._C") and hasattr(F, str(name)):
        module = "torch.nn.functional"  # F.gelu is torch._C._nn.gelu
    called = f"{module + '.' if module else ''}{name}"
    used = next((a for a in (*args, *kwargs.values()) if isinstance(a, Param)), None)
    if used is not None:
        raise Unsupported(_param_use(called, used))
    raise Unsupported(f"calls `{called}`, which sedsl has no op for")


def _param_use(called: str, p: Param) -> str:
    return (f"computes `{called}` with the tensor `{p.key}` directly; sedsl maps tensors "
            "read by a linear layer, a convolution, a layer norm, a layer scale or a gain")


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], i: int, name: str,
         default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _attribute(x: T | Param, name: str) -> Any:
    """`x.shape`, `x.dtype`, ... of a traced tensor: the values the forward would see (batch
    1, float32 on the CPU)."""
    if name == "shape":
        return torch.Size(_full_shape(x) or ())
    if name == "dtype":
        return torch.float32
    if name == "device":
        return torch.device("cpu")
    if name == "ndim":
        return len(_full_shape(x) or ())
    raise Unsupported(f"reads the tensor attribute `.{name}`")


def _module_of(p: Param) -> str:
    return p.key.rsplit(".", 1)[0] if "." in p.key else ""


def _weights(w: Any, b: Any, what: str) -> str:
    """The module whose `weight` (and `bias`) a functional call uses: the node takes its path."""
    if not isinstance(w, Param) or not (b is None or isinstance(b, Param)) or \
            not w.key.endswith(".weight") or (b is not None and b.key != w.key[:-6] + "bias"):
        raise Unsupported(f"calls {what} with weights that are not a module's `weight` and "
                          "`bias`")
    return _module_of(w)


def _f_linear(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Emit:
    x = _tensor(args[0], "linear")
    w, bias = _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
    module = _weights(w, bias, "F.linear")
    attrs: dict[str, Attr] = {"c_out": w.shape[0], "bias": bias is not None}
    if x.last:
        return Emit("channel_linear", attrs, [x], module=module, last=True)
    return Emit("linear", attrs, [x], module=module)


def _f_conv2d(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Emit:
    x = _tensor(args[0], "conv2d")
    w, bias = _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
    module = _weights(w, bias, "F.conv2d")
    stride, padding = _arg(args, kwargs, 3, "stride", 1), _arg(args, kwargs, 4, "padding", 0)
    dilation, groups = _arg(args, kwargs, 5, "dilation", 1), _arg(args, kwargs, 6, "groups", 1)
    kernel = (int(w.shape[2]), int(w.shape[3]))
    if padding == "same":
        if kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
            raise Unsupported("pads an even kernel `same` (unequal padding)")
        padding = same_padding(kernel, _pair(dilation))
    elif padding == "valid":
        padding = 0
    return Emit("conv", {"c_out": int(w.shape[0]), "kernel": kernel, "stride": _pair(stride),
                         "padding": _pair(padding), "dilation": _pair(dilation),
                         "groups": int(groups), "bias": bias is not None}, [x], module=module)


def _f_layer_norm(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Emit:
    x = _tensor(args[0], "layer_norm")
    w, bias = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
    shape = _arg(args, kwargs, 1, "normalized_shape")
    module = _weights(w, bias, "F.layer_norm") if w is not None else None
    return _layer_norm(x, tuple(shape), w is not None and bias is not None,
                       float(_arg(args, kwargs, 4, "eps", 1e-5)), module)


def _group_norm(x: T, groups: int, affine: bool, eps: float, module: str | None = None) -> Emit:
    """nn.GroupNorm, or F.group_norm with a module's weights (timm's GroupNormAct)."""
    if x.last or len(x.shape) != 3:
        raise Unsupported("group-normalises a tensor that is not C x H x W")
    if not affine:
        raise Unsupported("group-normalises without affine weights")
    return Emit("group_norm", {"groups": int(groups), "eps": float(eps)}, [x], module=module)


def _f_group_norm(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Emit:
    x = _tensor(args[0], "group_norm")
    w, bias = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
    module = _weights(w, bias, "F.group_norm") if w is not None else None
    return _group_norm(x, _arg(args, kwargs, 1, "num_groups"), w is not None and bias is not None,
                       float(_arg(args, kwargs, 4, "eps", 1e-5)), module)


def _f_pad(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    x = _tensor(args[0], "pad")
    pad = tuple(_arg(args, kwargs, 1, "pad"))
    mode, value = _arg(args, kwargs, 2, "mode", "constant"), _arg(args, kwargs, 3, "value", 0)
    if mode == "constant" and value == -math.inf and len(pad) == 4 and min(pad) >= 0 \
            and not x.last and len(x.shape) == 3:
        left, right, top, bottom = (int(v) for v in pad)
        return LowPadded(x, (left, right, top, bottom))
    if mode != "constant" or (value or 0) != 0 or len(pad) != 4 or x.last:
        raise Unsupported(f"pads {pad} with {mode} {value}; sedsl pads H and W with zeros")
    if not any(pad):
        return x
    left, right, top, bottom = (int(v) for v in pad)
    return Emit("pad", {"left": left, "right": right, "top": top, "bottom": bottom}, [x])


def _f_pool(kind: str) -> Callable[[tuple[Any, ...], Mapping[str, Any]], Emit]:
    """F.max_pool2d / F.avg_pool2d as the pooling ops."""
    def pool(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Emit:
        low = args[0] if kind == "max" and isinstance(args[0], LowPadded) else None
        x = low.x if low is not None else _tensor(args[0], f"{kind}_pool2d")
        kernel = _arg(args, kwargs, 1, "kernel_size")
        stride = _arg(args, kwargs, 2, "stride") or kernel
        attrs: dict[str, Attr] = {"kernel": _pair(kernel), "stride": _pair(stride),
                                  "padding": _pair(_arg(args, kwargs, 3, "padding", 0))}
        if kind == "max":
            if _pair(_arg(args, kwargs, 4, "dilation", 1)) != (1, 1) or \
                    _arg(args, kwargs, 6, "return_indices", False):
                raise Unsupported("max-pools with dilation or indices")
            attrs["ceil"] = bool(_arg(args, kwargs, 5, "ceil_mode", False))
            return Emit("maxpool", _low_padded(low, attrs) if low else attrs, [x])
        if _arg(args, kwargs, 6, "divisor_override") is not None:
            raise Unsupported("average-pools with a divisor override")
        return Emit("avgpool", {**attrs, "ceil": bool(_arg(args, kwargs, 4, "ceil_mode", False)),
                                "count_pad": bool(_arg(args, kwargs, 5, "count_include_pad",
                                                       True))}, [x])
    return pool


def _low_padded(low: LowPadded, attrs: dict[str, Attr]) -> dict[str, Attr]:
    """Max pooling of a tensor padded with -inf: the pad is the pooling's own (PyTorch's max
    pooling pads with -inf), TensorFlow's `same` for this window and stride, or equal on both
    sides (then the pooling's `padding`); anything else is refused."""
    if attrs["padding"] != (0, 0) or attrs["ceil"]:
        raise Unsupported(f"max-pools a tensor padded {low.pads} with -inf with its own padding "
                          "or ceil mode")
    left, right, top, bottom = low.pads
    if same_pads((low.x.shape[1], low.x.shape[2]), attrs["kernel"], attrs["stride"]) == low.pads:
        return {**attrs, "same": True}
    if (left, top) == (right, bottom) and 2 * top <= _pair(attrs["kernel"])[0] \
            and 2 * left <= _pair(attrs["kernel"])[1]:
        return {**attrs, "padding": (top, left)}
    raise Unsupported(f"max-pools a tensor padded {low.pads} with -inf: neither TensorFlow's "
                      "`same` padding nor equal on both sides")


def _f_leaky(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Emit:
    slope = _arg(args, kwargs, 1, "negative_slope", 0.01)
    return Emit("leaky_relu", {"slope": float(slope)}, [_tensor(args[0], "leaky_relu")])


def _f_split(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Pieces:
    """torch.split(x, size or sizes, dim) along the channels."""
    x = _tensor(args[0], "split")
    sizes, dim = _arg(args, kwargs, 1, "split_size_or_sections"), _arg(args, kwargs, 2, "dim", 0)
    if sizes is None:
        sizes = kwargs.get("split_size")
    return _pieces(x, sizes, dim)


def _pieces(x: T, sizes: Any, dim: int) -> Pieces:
    c = x.shape[0]
    if dim not in (1, -3) or len(x.shape) != 3 or x.last:
        raise Unsupported(f"splits along dim {dim}; sedsl splits channels")
    widths = [int(sizes)] * -(-c // int(sizes)) if isinstance(sizes, int) else \
        [int(v) for v in sizes]
    bounds, start = [], 0
    for w in widths:
        stop = min(start + w, c)
        bounds.append((start, stop))
        start = stop
    if start != c:
        raise Unsupported(f"splits {c} channels into {widths}")
    return Pieces(x, tuple(bounds))


def _f_chunk(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Pieces:
    x = _tensor(args[0], "chunk")
    n, dim = int(_arg(args, kwargs, 1, "chunks")), _arg(args, kwargs, 2, "dim", 0)
    return _pieces(x, -(-x.shape[0] // n), dim)


def _getitem(value: Any, index: Any) -> Any:
    """A piece of a split, a channel range `x[:, a:b]`, or an item of a plain value."""
    if isinstance(value, Pieces):
        start, stop = value.bounds[index]
        return _slice(value.x, start, stop)
    if not isinstance(value, T):
        return value[index]
    index = index if isinstance(index, tuple) else (index,)
    while len(index) > 2 and index[-1] == slice(None):  # x[:, a:b, :, :]
        index = index[:-1]
    if len(index) == 2 and index[0] == slice(None) and isinstance(index[1], slice) and \
            index[1].step in (None, 1) and len(value.shape) == 3 and not value.last:
        start, stop, _ = index[1].indices(value.shape[0])
        return _slice(value, start, stop)
    raise Unsupported(f"indexes a tensor with {index}; sedsl takes channel ranges x[:, a:b]")


def _slice(x: T, start: int, stop: int) -> Any:
    if (start, stop) == (0, x.shape[0]):
        return x
    return Emit("channel_slice", {"start": start, "stop": stop}, [x])


def _permute(x: Any, dims: tuple[int, ...]) -> T:
    """NCHW -> NHWC and back (ConvNeXt's channels-last MLP)."""
    x = _tensor(x, "permute")
    dims = tuple(d % 4 for d in dims)
    if len(x.shape) == 3 and dims == (0, 2, 3, 1) and not x.last:
        return T(x.node, x.shape, x.via, True)
    if dims == (0, 3, 1, 2) and x.last:
        return T(x.node, x.shape, x.via, False)
    raise Unsupported(f"permutes dims to {dims}; sedsl reads NCHW -> NHWC and back only")


def _transpose(x: Any, a: int, b: int) -> Grouped:
    if isinstance(x, Grouped) and sorted((a % 5, b % 5)) == [1, 2]:
        return Grouped(x.x, x.groups, not x.swapped)
    raise Unsupported(f"transposes dims {a} and {b}; sedsl reads channel shuffles only")


def _reshape(x: Any, dims: tuple[Any, ...]) -> Any:
    """Flattening; a channel shuffle's views (N x g x C/g x H x W and back)."""
    if isinstance(x, Param):
        return Param(x.key, _resolved_dims(dims, math.prod(x.shape)))
    if isinstance(x, Grouped):
        c, h, w = x.x.shape
        if tuple(dims[1:]) in ((c, h, w), (-1, h, w)):
            return Emit("channel_shuffle", {"groups": x.groups}, [x.x]) if x.swapped else x.x
        raise Unsupported(f"reshapes grouped channels to {tuple(dims)}")
    if isinstance(x, Blocks):
        c, h, w = x.x.shape
        b = x.block
        if x.permuted and tuple(dims[1:]) in ((c * b * b, h // b, w // b), (-1, h // b, w // b)):
            return Emit("space_to_depth", {"block": b}, [x.x])
        raise Unsupported(f"reshapes {b}x{b} blocks to {tuple(dims)}; sedsl reads such views "
                          "as space-to-depth only")
    x = _tensor(x, "view")
    if len(x.shape) == 3 and not x.last and len(dims) == 6 and dims[1] == x.shape[0] \
            and dims[3] == dims[5] and isinstance(dims[3], int) and dims[3] > 1 \
            and (dims[2] * dims[3], dims[4] * dims[5]) == x.shape[1:]:
        return Blocks(x, int(dims[3]))
    if len(dims) == 2 and dims[0] in (1, -1) and dims[1] in (-1, math.prod(x.shape)):
        return _flatten(x)
    if len(x.shape) == 3 and not x.last and len(dims) == 5 and \
            tuple(dims[3:]) == x.shape[1:] and dims[1] not in (-1, 1):
        groups = int(dims[1])
        if dims[2] in (-1, x.shape[0] // groups) and x.shape[0] % groups == 0:
            return Grouped(x, groups)
    if tuple(d for d in dims[1:]) == x.shape and not x.last:
        return x
    raise Unsupported(f"reshapes to {tuple(dims)}; sedsl reshapes by flattening and channel "
                      "shuffles only")


def _resolved_dims(dims: tuple[Any, ...], total: int) -> tuple[int, ...]:
    known = math.prod(int(d) for d in dims if d != -1)
    return tuple(total // known if d == -1 else int(d) for d in dims)


def _mean(x: Any, dims: Any, keep: bool) -> Emit:
    x = _tensor(x, "mean")
    axes = sorted(d % 4 for d in (dims if isinstance(dims, tuple | list) else [dims])) \
        if dims is not None else []
    if len(x.shape) == 3 and axes == [2, 3] and not x.last:
        return Emit("mean", {"keep": keep}, [x])
    raise Unsupported(f"averages over {dims} (keepdim={keep}); sedsl averages over H x W")


def _method(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    x = args[0]
    if isinstance(x, Param | Grouped) and name in ("view", "reshape", "contiguous", "to",
                                                   "transpose", "type_as"):
        if name in ("contiguous", "to", "type_as"):
            return x
        if name == "transpose":
            return _transpose(x, *args[1:3])
        return _reshape(x, _dims(args))
    if isinstance(x, Blocks):
        if name == "contiguous":
            return x
        if name == "permute" and not x.permuted and \
                tuple(d % 6 for d in _dims(args)) == (0, 3, 5, 1, 2, 4):
            return Blocks(x.x, x.block, True)
        if name in ("view", "reshape"):
            return _reshape(x, _dims(args))
        raise Unsupported(f"views a tensor as {x.block}x{x.block} blocks and calls `.{name}()` "
                          "on them; sedsl reads such views as space-to-depth only")
    if isinstance(x, Param):
        raise Unsupported(_param_use(f".{name}()", x))
    if isinstance(x, Grouped):
        raise Unsupported(f"views its channels as {x.groups} groups (N x g x C/g x H x W) and "
                          f"calls `.{name}()` on them; sedsl reads such views as channel "
                          "shuffles only")
    if not isinstance(x, T):
        raise Unsupported(f"calls `.{name}()` on {type(x).__name__}")
    if name == "size":
        full = _full_shape(x) or ()  # the batch is 1 while mapping
        dim = _arg(args, kwargs, 1, "dim")
        return full if dim is None else full[dim]
    if name == "dim":
        return len(_full_shape(x) or ())
    if name in ("contiguous", "float", "type_as") or (name == "to" and not any(
            isinstance(a, str) and a not in ("cpu",) for a in args[1:])):
        return x
    if name in _ACTIVATION_METHODS:
        return Emit(_ACTIVATION_METHODS[name], {}, [x])
    if name in ("add", "add_"):
        return _add(args, kwargs)
    if name in ("mul", "mul_"):
        return _mul(args)
    if name == "flatten":
        return _flatten(x, *args[1:], **kwargs)
    if name in ("view", "reshape"):
        return _reshape(x, _dims(args))
    if name == "permute":
        return _permute(x, _dims(args))
    if name == "transpose":
        return _transpose(x, *args[1:3])
    if name == "mean":
        return _mean(x, _arg(args, kwargs, 1, "dim"), bool(_arg(args, kwargs, 2, "keepdim",
                                                                   False)))
    if name in ("split", "chunk"):
        return (_f_split if name == "split" else _f_chunk)(args, kwargs)
    raise Unsupported(f"calls the tensor method `.{name}()`, which sedsl has no op for")


def _dims(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """A method's dims, given as `view(a, b)` or `view((a, b))`."""
    dims = args[1] if len(args) == 2 and isinstance(args[1], tuple | list) else args[1:]
    return tuple(dims)


def _add(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Emit | T:
    a, b = args[0], args[1]
    if isinstance(b, Scaled):
        a, b = b, a
    if isinstance(a, Scaled) and isinstance(b, Param) and b.shape == (1,) \
            and kwargs.get("alpha", 1) == 1:
        return Emit("affine", {}, [a.x], tensors=((a.key, "scale"), (b.key, "bias")))
    for x, zero in ((a, b), (b, a)):  # `out = 0; out += ...` (MobileOne's missing branches)
        if isinstance(x, T) and isinstance(zero, int | float) and zero == 0:
            return x
    if not (isinstance(a, T) and isinstance(b, T)) or kwargs.get("alpha", 1) != 1:
        raise Unsupported("adds a constant to a tensor; sedsl adds tensors of one shape")
    return Emit("add", {}, [a, b])


def _mul(args: tuple[Any, ...]) -> Emit | Scaled:
    a, b = args[0], args[1]
    if isinstance(b, T) and not isinstance(a, T):
        a, b = b, a
    if isinstance(a, T) and isinstance(b, Param) and b.shape == ():
        return Emit("gain", {}, [a], tensors=((b.key, "weight"),))  # NF-Nets' skipinit_gain
    if isinstance(a, T) and isinstance(b, Param) and b.shape == (1,) and len(a.shape) == 3 \
            and a.shape[0] != 1:
        return Scaled(a, b.key)  # `scale * x`; `+ bias` makes it an affine (HGNetV2)
    if isinstance(a, T) and isinstance(b, Param):
        return _layer_scale(a, b)
    if isinstance(a, T) and isinstance(b, int | float) and not isinstance(b, bool):
        return Emit("scale", {"factor": _constant(float(b))}, [a])
    if isinstance(a, T) and isinstance(b, T):
        if len(a.shape) == 3 and a.shape[1:] == (1, 1) and b.shape[1:] != (1, 1):
            a, b = b, a  # port 0 is the feature map, port 1 the per-channel gate
        if len(a.shape) == 3 and b.shape == (a.shape[0], 1, 1):
            return Emit("mul", {}, [a, b])
        if a.shape == b.shape and a.last == b.last:
            return Emit("product", {}, [a, b])  # StarNet's star: `parallel mul`
    raise Unsupported("multiplies tensors of shapes sedsl cannot scale (a feature map times a "
                      "per-channel gate or one of its own shape, or a constant)")


def _layer_scale(x: T, p: Param) -> Emit:
    """x times a parameter of one value per channel (layer scale), channels-first or last."""
    c = x.shape[0]
    ones = [d for d in p.shape if d != 1]
    per_channel = ones == [c] and (p.shape[-1] == c if x.last else
                                   len(p.shape) >= 3 and p.shape[-3] == c)
    if len(x.shape) != 3 or not per_channel:
        raise Unsupported(f"multiplies a {'x'.join(map(str, x.shape))} tensor by "
                          f"`{p.key}` of shape {p.shape}; sedsl scales by one value per channel")
    return Emit("layer_scale", {}, [x], tensors=((p.key, "weight"),))


def _cat(tensors: Any, dim: int = 0) -> Emit:
    xs = [_tensor(t, "cat") for t in tensors]
    if dim not in (1, -3) or any(len(x.shape) != 3 for x in xs):
        raise Unsupported(f"concatenates along dim {dim}; sedsl concatenates channels")
    return Emit("concat", {}, xs)


_FUNCTIONS: dict[Any, Callable[[tuple[Any, ...], Mapping[str, Any]], Any]] = {
    **dict.fromkeys((operator.add, operator.iadd, torch.add), _add),
    **dict.fromkeys((operator.mul, operator.imul, torch.mul), lambda a, k: _mul(a)),
    **dict.fromkeys((torch.cat, torch.concat), lambda a, k: _cat(*a, **k)),
    torch.flatten: lambda a, k: _flatten(_tensor(a[0], "flatten"), *a[1:], **k),
    F.adaptive_avg_pool2d: lambda a, k: _adaptive(_arg(a, k, 1, "output_size"),
                                                  _tensor(a[0], "pool"), "avg"),
    F.adaptive_max_pool2d: lambda a, k: _adaptive(_arg(a, k, 1, "output_size"),
                                                  _tensor(a[0], "pool"), "max"),
    F.dropout: lambda a, k: _dropout(_arg(a, k, 1, "p", 0.5), _tensor(a[0], "dropout")),
    F.linear: _f_linear,
    F.conv2d: _f_conv2d,
    F.layer_norm: _f_layer_norm,
    F.group_norm: _f_group_norm,
    F.pad: _f_pad,
    F.avg_pool2d: _f_pool("avg"),
    F.max_pool2d: _f_pool("max"),
    F.leaky_relu: _f_leaky,
    F.interpolate: lambda a, k: _upsample(_tensor(a[0], "interpolate"), _arg(a, k, 1, "size"),
                                          _arg(a, k, 2, "scale_factor"),
                                          _arg(a, k, 3, "mode", "nearest"),
                                          _arg(a, k, 4, "align_corners")),
    torch.split: _f_split,
    torch.chunk: _f_chunk,
    torch.permute: lambda a, k: _permute(a[0], tuple(_arg(a, k, 1, "dims"))),
    torch.transpose: lambda a, k: _transpose(a[0], a[1], a[2]),
    torch.mean: lambda a, k: _mean(a[0], _arg(a, k, 1, "dim"), bool(_arg(a, k, 2, "keepdim",
                                                                          False))),
    torch.reshape: lambda a, k: _reshape(a[0], tuple(_arg(a, k, 1, "shape"))),
}


