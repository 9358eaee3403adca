"""Copy weights between two models of the same architecture, matched by structure.

Python classes register their modules in whatever order their authors wrote `__init__`
(torchvision's RegNet registers the shortcut before the residual branch), and two correct forward
passes may run independent branches in different orders (timm's SE-ResNet runs the SE block before
the shortcut; sedsl's fused op takes the shortcut as an input). So neither order is compared.
Instead each model is run once on a dummy input while every torch operation is watched: each layer
that holds tensors (a *unit*: a conv, a bn, a linear) is recorded with the units whose outputs
reach its input. Units are then paired when they hold tensors of the same shapes, have the same
stride, and are fed by units already paired with each other; among several such candidates the one
the target runs first wins, unless a later unit then finds no partner: then the next is tried.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from sedsl.errors import ModelError
from sedsl.record import Record

Tensors = list[tuple[str, torch.Tensor]]


class Unit(Record):
    """A module holding parameters or buffers, as one forward pass used it."""

    name: str
    tensors: Tensors
    stride: tuple[int, ...]
    feeds: frozenset[int]  # the units whose outputs reach this unit's input (indices)
    reached: bool = True  # False: the forward never used it (GoogLeNet's auxiliary heads in eval)

    @cached_property
    def signature(self) -> tuple[object, ...]:
        return (tuple(_core(t.shape) for _, t in self.tensors), self.stride)

    def describe(self) -> str:
        """`layer.name (weight 64x3x7x7, bias 64)`."""
        return f"{self.name or '(root)'} (" + ", ".join(
            f"{k.rsplit('.', 1)[-1]} {'x'.join(map(str, t.shape))}" for k, t in self.tensors) + ")"


def _kept(key: str) -> bool:
    return not key.endswith("num_batches_tracked")


def _core(shape: torch.Size) -> tuple[int, ...]:
    """The shape without trailing 1s past the first dim: a linear layer equals a 1x1 conv, a
    per-channel scale of shape (C, 1, 1) one of shape (C,)."""
    dims = tuple(shape)
    while len(dims) > 1 and dims[-1] == 1:
        dims = dims[:-1]
    return dims


def _own_tensors(module: nn.Module, prefix: str) -> Tensors:
    """The parameters and buffers a module holds itself (not its children's)."""
    own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
    return [(f"{prefix}.{k}" if prefix else k, v) for k, v in own if v is not None and _kept(k)]


def _tensors_in(value: Any) -> Iterator[torch.Tensor]:
    return (t for t in tree_leaves(value) if isinstance(t, torch.Tensor))


class _Tracer(TorchFunctionMode):
    """Follows which units each tensor came from through every torch function."""

    def __init__(self) -> None:
        super().__init__()
        self.source: dict[int, frozenset[int]] = {}  # id(tensor) -> units it derives from
        self.alive: list[torch.Tensor] = []  # keeps ids unique while tracing
        self.read: set[int] = set()  # ids of the tensors some function read
        # id(tensor) -> the unit a function that reads it uses, given what feeds the function:
        # the tensors of a block that holds some itself (NF-Nets' skipinit_gain)
        self.loose: dict[int, Callable[[frozenset[int]], int]] = {}

    def sources(self, value: Any) -> frozenset[int]:
        return frozenset().union(*(self.source.get(id(t), frozenset())
                                   for t in _tensors_in(value)))

    def mark(self, value: Any, units: frozenset[int]) -> None:
        for t in _tensors_in(value):
            self.source[id(t)] = units
            self.alive.append(t)

    def __torch_function__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        read = list(_tensors_in((args, kwargs)))
        self.read.update(id(t) for t in read)
        users = [self.loose[id(t)] for t in read if id(t) in self.loose]
        if users and len(users) == len(read):  # a view of a block's own tensor (ConvNeXt's
            for t in _tensors_in(out):  # `gamma.reshape(1, -1, 1, 1)`): its reader decides
                self.loose[id(t)] = users[0]
                self.alive.append(t)
            return out
        units = self.sources((args, kwargs))
        for use in users:
            units = frozenset({use(units)})
        self.mark(out, units)
        return out


def trace_units(model: nn.Module, input_shape: Sequence[int]) -> list[Unit]:
    """The units of `model` in the order one eval-mode forward pass on zeros first uses them.

    A unit forward never calls itself (a fused op reading a child's weights directly) counts as
    used, fed by its parent's input, when its parent returns; a module that holds tensors and
    has units inside (NF-Nets' block and its `skipinit_gain`) is a unit where a function first
    reads its tensors, fed by what feeds that function; units never reached come last
    (`reached = False`)."""
    tracer = _Tracer()
    units: list[Unit] = []
    index: dict[str, int] = {}
    owned = {name: _own_tensors(m, name) for name, m in model.named_modules()}
    children = {name: [c for c in owned if c.startswith(f"{name}.") or (not name and c)]
                for name in owned}
    entered: list[frozenset[int]] = []
    loose = {name for name in owned if owned[name] and any(owned[c] for c in children[name])}

    def add(name: str, feeds: frozenset[int]) -> int:
        module = model.get_submodule(name)
        stride = tuple(getattr(module, "stride", ())) if isinstance(module, nn.Conv2d) else ()
        index[name] = len(units)
        units.append(Unit(name, owned[name], stride, feeds))
        return index[name]

    def use(name: str, feeds: frozenset[int]) -> int:
        return index[name] if name in index else add(name, feeds)

    def user(name: str) -> Callable[[frozenset[int]], int]:
        return lambda feeds: use(name, feeds)

    for name in loose:
        for _, t in owned[name]:
            tracer.loose[id(t)] = user(name)

    def before(name: str, args: Any) -> None:
        entered.append(tracer.sources(args))
        if owned[name] and name not in index and name not in loose:
            add(name, entered[-1])

    def after(name: str, output: Any) -> None:
        feeds = entered.pop()
        if owned[name] and name not in loose:
            tracer.mark(output, frozenset({index[name]}))
            return
        last = None
        for child in children[name]:  # units the module used without calling them
            if owned[child] and child not in index and \
                    any(id(t) in tracer.read for _, t in owned[child]):
                last = add(child, feeds if last is None else frozenset({last}))
        if last is not None:
            tracer.mark(output, tracer.sources(output) | {last})

    hooks = []
    for name, module in model.named_modules():
        hooks.append(module.register_forward_pre_hook(
            lambda m, args, name=name: before(name, args)))
        hooks.append(module.register_forward_hook(
            lambda m, args, out, name=name: after(name, out)))
    was_training = model.training
    try:
        with torch.no_grad(), tracer:
            model.eval()(torch.zeros(1, *input_shape))
    except Exception as e:  # the model's own forward failed: say on what
        raise ModelError(f"cannot run {type(model).__name__} on a {tuple(input_shape)} input to "
                        f"see its structure: {e}",
                        "pass input=(C, H, W) that both models accept") from None
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    for name, tensors in owned.items():
        if tensors and name not in index:
            module = model.get_submodule(name)
            stride = tuple(getattr(module, "stride", ())) if isinstance(module, nn.Conv2d) else ()
            units.append(Unit(name, tensors, stride, frozenset(), reached=False))
    return units


def input_shape_of(model: nn.Module) -> tuple[int, ...] | None:
    """The input shape a sedsl-generated model states in its docstring (`..., input 3x224x224.`)."""
    found = re.search(r"\binput (\d+(?:x\d+)*)", type(model).__doc__ or "")
    return tuple(int(d) for d in found.group(1).split("x")) if found else None


# Pairings tried before a unit without a partner is an error: twin units (a block's 1x1 conv and
# its shortcut's, of one shape and fed alike) may pair either way until a later unit tells.
MAX_TRIES = 10_000


def match_units(theirs: list[Unit], ours: list[Unit]) -> list[tuple[Unit, Unit]]:
    """Pair every unit of `theirs` with one of `ours` by structure (see the module docstring);
    where several fit, the one the target runs first, and the next if a later unit then finds
    no partner."""
    partner: list[int] = []  # the unit of ours for each unit of theirs paired so far
    options: list[list[int]] = []  # for each, the other fits not tried yet
    used: set[int] = set()
    failure: ModelError | None = None  # the first unit without a partner
    tries = 0
    while len(partner) < len(theirs):
        unit = theirs[len(partner)]
        want = frozenset(partner[f] for f in unit.feeds if f < len(partner))
        free = [j for j in range(len(ours)) if j not in used]
        same = [j for j in free if ours[j].signature == unit.signature]
        fits = [j for j in same if ours[j].feeds == want]
        if fits:
            partner.append(fits[0])
            options.append(fits[1:])
            used.add(fits[0])
            continue
        failure = failure or ModelError(
            _no_partner(len(partner), unit, theirs, ours, same, free),
            "the two models differ in structure here; the units before it matched")
        while options and not options[-1]:  # back to the last pairing that had another fit
            options.pop()
            used.discard(partner.pop())
        tries += 1
        if not options or tries > MAX_TRIES:
            raise failure
        used.discard(partner[-1])
        partner[-1] = options[-1].pop(0)
        used.add(partner[-1])
    free = [j for j in range(len(ours)) if j not in used]
    if free:
        raise ModelError(f"the source has {len(theirs)} layers with tensors and the target "
                        f"{len(ours)}; the first without a partner is {ours[free[0]].describe()}")
    return [(theirs[i], ours[j]) for i, j in enumerate(partner)]


def _no_partner(i: int, unit: Unit, theirs: list[Unit], ours: list[Unit], same: list[int],
                free: list[int]) -> str:
    def fed(u: Unit, units: list[Unit]) -> str:
        return ", ".join(units[f].name for f in sorted(u.feeds)) or "the input"

    what = f"layer {i} of the source, {unit.describe()}, fed by {fed(unit, theirs)},"
    if not free:
        return f"{what} has no partner: the target has only {len(ours)} layers with tensors"
    if same:
        other = ours[same[0]]
        return (f"{what} matches {other.describe()} of the target in shape but not in what "
                f"feeds it ({fed(other, ours)})")
    return (f"{what} fits no layer of the target; the target's next unmatched layer is "
            f"{ours[free[0]].describe()}")


def transfer_weights(src: Any, dst: nn.Module,
                     input: Sequence[int] | None = None) -> nn.Module:
    """Copy `src`'s parameters and buffers into `dst`, matched by structure.

    `src` is a module or a state dict. Two modules are run on zeros of `input` (default: the
    input shape of the sedsl-generated model) and matched layer by layer as described above; a
    state dict, which has no forward, is paired with `dst`'s tensors in registration order. The
    first tensor without a partner is an error that names it. Layers `src`'s forward never
    calls (GoogLeNet's and Inception-v3's auxiliary heads in eval) go to `dst`'s such layers in
    order, or are left out where `dst` has none (the import of such a model leaves them out).
    `dst` is returned."""
    if isinstance(src, nn.Module):
        shape = input or input_shape_of(dst) or input_shape_of(src)
        if shape is None:
            raise ModelError("transfer_weights needs the input shape to run the two models",
                             "pass input=(C, H, W)")
        pairs = [pair for a, b in _matched(*_trace_both(src, dst, shape))
                 for pair in zip(a.tensors, b.tensors, strict=True)]
    elif isinstance(src, Mapping):
        pairs = _in_order(src, dst)
    else:
        raise TypeError(f"expected a module or a state dict, got {type(src).__name__}")
    with torch.no_grad():
        for (_, s), (_, d) in pairs:
            d.copy_(s.reshape(d.shape))
    return dst


def _matched(theirs: list[Unit], ours: list[Unit]) -> list[tuple[Unit, Unit]]:
    """The units the forward passes use, paired by structure; then the layers they never call
    (auxiliary heads in eval) in order, where the target has such layers too: where it has
    none (an imported model, which leaves them out), the source's are left out."""
    pairs = match_units([u for u in theirs if u.reached], [u for u in ours if u.reached])
    idle = [u for u in ours if not u.reached]
    return pairs + (match_units([u for u in theirs if not u.reached], idle) if idle else [])


def _trace_both(src: nn.Module, dst: nn.Module,
                shape: Sequence[int]) -> tuple[list[Unit], list[Unit]]:
    """Trace both models, at 32x32 first: the structure is the same at any size the models
    accept, and a small input is fast. Models with a fixed-size head get their own size."""
    c, *spatial = shape
    small = (c, *(min(s, 32) for s in spatial))
    if small != tuple(shape):
        try:
            return trace_units(src, small), trace_units(dst, small)
        except ModelError:
            pass
    return trace_units(src, shape), trace_units(dst, shape)


def _in_order(state: Mapping[str, torch.Tensor], dst: nn.Module) -> list[tuple[Any, Any]]:
    theirs = [(k, v) for k, v in state.items() if _kept(k)]
    ours = [(k, v) for k, v in dst.state_dict(keep_vars=True).items() if _kept(k)]
    for i, ((src_key, s), (dst_key, d)) in enumerate(zip(theirs, ours, strict=False)):
        if _core(s.shape) != _core(d.shape):
            raise ModelError(
                f"tensor {i}: {src_key} {tuple(s.shape)} does not fit {dst_key} {tuple(d.shape)}",
                "the two models differ in structure at this point (a state dict is paired "
                "in its own order; pass the module to match by structure)")
    if len(theirs) != len(ours):
        extra = theirs[len(ours)][0] if len(theirs) > len(ours) else ours[len(theirs)][0]
        raise ModelError(f"the source has {len(theirs)} tensors and the target {len(ours)}; "
                        f"the first without a partner is {extra}")
    return list(zip(theirs, ours, strict=True))
