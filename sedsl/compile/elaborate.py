"""AST -> graph IR. Expands blocks, repeats and stages into a flat graph with hierarchical names,
and infers and checks every shape on the way. Expressions are evaluated by
`sedsl.language.evaluate`: a
layer evaluates to a recipe, which `place` turns into nodes once its input tensor is known."""

from __future__ import annotations

import keyword
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from sedsl import limits
from sedsl.compile import estimate
from sedsl.compile.se_rules import evaluate_se
from sedsl.errors import NOWHERE, Span, SpecError, did_you_mean
from sedsl.ir.graph import Graph
from sedsl.ir.node import Node, add_node
from sedsl.ir.ops import MERGES, OPS, Shape
from sedsl.ir.residuals import mark_residuals
from sedsl.ir.se import SETTINGS, SeConfig
from sedsl.language import ast
from sedsl.language.evaluate import (
    LAYERS,
    BlockCall,
    Closure,
    Env,
    Evaluator,
    Layer,
    OpCall,
    Repeat,
    Sequence,
    Value,
    describe,
    first_copy_only,
    item_span,
)
from sedsl.language.library import Library
from sedsl.record import Record, replace

# --- placement context --------------------------------------------------------------------------

# Layer names become Python attributes of the generated torch module: these would clash.
MODULE_ATTRIBUTES = frozenset({
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children",
    "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward",
    "get_buffer", "get_extra_state", "get_parameter", "get_submodule", "half", "ipu",
    "load_state_dict", "modules", "mtia", "named_buffers", "named_children", "named_modules",
    "named_parameters", "parameters", "register_backward_hook", "register_buffer",
    "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook", "register_module", "register_parameter",
    "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_",
    "set_extra_state", "set_submodule", "share_memory", "smart_apply", "state_dict", "to",
    "to_empty", "train", "training", "type", "xpu", "zero_grad", "input",
})


@dataclass
class Namespace:
    """The names taken under one path; auto names count per base name (conv1, conv2, ...)."""

    taken: dict[str, Span] = field(default_factory=dict)
    next: dict[str, int] = field(default_factory=dict)  # per base: where auto names resume

    def claim(self, name: str | None, base: str, span: Span) -> str:
        if name is None:
            k = self.next.get(base, 1)  # names are never freed: resume, or this is quadratic
            while f"{base}{k}" in self.taken:
                k += 1
            name = f"{base}{k}"
            self.next[base] = k + 1
        elif name in self.taken:
            raise SpecError(f"`{name}` is already used here (line {self.taken[name].line})", span,
                            "names of layers must be unique inside a block")
        elif name.startswith("_") or keyword.iskeyword(name) or name in MODULE_ATTRIBUTES:
            raise SpecError(f"`{name}` cannot name a layer: it clashes with the generated "
                            "PyTorch module", span, "choose another name")
        self.taken[name] = span
        return name


class Scope(Record):
    """Where placed nodes go: their name prefix and the scope fields of their records."""

    path: str
    ns: Namespace
    block: str | None = None
    kind: str | None = None
    branch: str | None = None
    calls: tuple[str, ...] = ()  # the block call stack, to catch recursion

    def child(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def enter(self, name: str, kind: str | None, instance: bool) -> Scope:
        path = self.child(name)
        if not instance:
            return replace(self, path=path, ns=Namespace())
        return replace(self, path=path, ns=Namespace(), block=path, kind=kind, branch=None)

    def in_branch(self, branch: str) -> Scope:
        """Nodes placed here belong to `branch` (unless an enclosing branch already claims them)."""
        return self if self.branch is not None else replace(self, branch=branch)

    def branch_scope(self, branch: str) -> Scope:
        """A branch with names of its own: `shortcut.conv1`, `b2.conv1`."""
        return replace(self.in_branch(branch), path=self.child(branch), ns=Namespace())


class Tensor(Record):
    node: str
    shape: Shape


@dataclass
class Dataflow:
    """One body's data flow: its input, the outputs of its named statements (what `from` reads)
    and the outputs no statement has read yet (an error unless the last)."""

    input: Tensor
    later: dict[str, Span]  # every statement name of the body (a `from` may not read ahead)
    dag: bool = False  # a statement of the body reads by `from`: the body is one unit, and
    # its named statements are scopes of names only, not block instances (as in an import)
    named: dict[str, Tensor] = field(default_factory=dict)
    unread: dict[str, tuple[str | None, Span]] = field(default_factory=dict)  # node -> statement

    def read(self, names: ast.From, values: Env) -> list[Tensor]:
        out = []
        for n in names.names:
            if n.id == "input":
                out.append(self.input)
            elif n.id in self.named:
                out.append(self.named[n.id])
            elif values.lookup(n.id) is not None:
                raise SpecError(f"`{n.id}` is a value, not the output of a statement", n.span)
            elif n.id in self.later:
                raise SpecError(f"`{n.id}` is computed later (line {self.later[n.id].line}); "
                                "`from` reads earlier statements", n.span)
            else:
                raise SpecError(f"no statement before this one is called `{n.id}`", n.span,
                                did_you_mean(n.id, [*self.named, "input"]))
            first = next((m for m, t in zip(names.names, out[:-1], strict=False)
                          if t.node == out[-1].node), None)
            if first is not None:
                same = "is read twice" if first.id == n.id else \
                    f"is the same tensor as `{first.id}`"
                raise SpecError(f"`{n.id}` {same}: a merge reads each tensor once", n.span,
                                "the graph has one edge between two layers; `scale(2)` doubles "
                                "a tensor")
        for t in out:
            self.unread.pop(t.node, None)
        return out

    def placed(self, stmt: ast.Bind | ast.Place, ins: list[Tensor], out: Tensor) -> None:
        name = stmt.name if isinstance(stmt, ast.Bind) else None
        if name is not None:
            self.named[name] = out
        if all(t.node != out.node for t in ins):  # an empty statement's output is what it read
            self.unread[out.node] = (name, stmt.name_span if isinstance(stmt, ast.Bind)
                                     else stmt.span)

    def check(self, out: Tensor) -> None:
        """Every statement's output is read, but the body's own."""
        for node, (name, span) in self.unread.items():
            if node != out.node:
                what = f"`{name}`" if name else "this layer"
                raise SpecError(f"{what} is computed but never read", span,
                                "read it with `from`, or remove it")


def reads_by_from(body: tuple[ast.Stmt, ...]) -> bool:
    """Whether a statement of the body (or of its `if` bodies) has a `from` clause."""
    return any((isinstance(s, ast.Bind | ast.Place) and s.source is not None)
               or (isinstance(s, ast.If) and reads_by_from(s.body + s.orelse)) for s in body)


def statement_names(body: tuple[ast.Stmt, ...]) -> dict[str, Span]:
    """The names of a body's statements, those in its `if` bodies too."""
    out: dict[str, Span] = {}
    for stmt in body:
        if isinstance(stmt, ast.Bind):
            out.setdefault(stmt.name, stmt.name_span)
        elif isinstance(stmt, ast.If):
            out.update({k: v for k, v in statement_names(stmt.body + stmt.orelse).items()
                        if k not in out})
    return out


# --- the elaborator -----------------------------------------------------------------------------


class Elaborator:
    """Places a network's layers into a graph, evaluating expressions with an `Evaluator`."""

    def __init__(self, library: Library):
        self.evaluator = Evaluator(library)
        self.eval = self.evaluator.eval
        self.graph = Graph()
        self.blocks: dict[str, str | None] = {}  # block instance path -> its block kind
        self.budget = limits.Budget()  # nodes placed and nesting, against sedsl.limits
        self.flows: list[Dataflow] = []  # the bodies being run, innermost last
        self.merged: list[str] = []  # the adds `from a, b add` placed

    # -- entry point --

    def network(self, net: ast.BlockDef, overrides: Mapping[str, Value],
                input_shape: tuple[int, ...] | None) -> tuple[Graph, Env]:
        """The network's graph, and its parameters (the scope of the se section)."""
        env = self.evaluator.parameters(net, overrides)
        estimate.check(net, env, self.evaluator)  # a network past the node limit, refused now
        shape, span = _input_shape(net, input_shape)
        self.graph.graph.update(name=net.name, input=shape, file=net.span.file)
        x = self._input(shape, span)
        out = self.run(net.body, env, x, Scope("", Namespace({"input": span})))
        self.graph.graph.update(output=out.node, blocks=self.blocks)
        mark_residuals(self.graph, set(self.merged))
        return self.graph, env

    def _input(self, shape: Shape, span: Span) -> Tensor:
        rec = Node("input", {"shape": shape}, shape, None, None, None, None, "base", span)
        add_node(self.graph, "input", rec, [])
        return Tensor("input", shape)

    # -- statements --

    def run(self, body: tuple[ast.Stmt, ...], env: Env, x: Tensor, scope: Scope) -> Tensor:
        """A body's statements from its input `x`; its output is its last statement's."""
        flow = Dataflow(x, statement_names(body), dag=reads_by_from(body))
        self.flows.append(flow)
        try:
            out = self._statements(body, env, x, scope)
        finally:
            self.flows.pop()
        flow.check(out)
        return out

    def _statements(self, body: tuple[ast.Stmt, ...], env: Env, x: Tensor,
                    scope: Scope) -> Tensor:
        for stmt in body:
            x = self.statement(stmt, env, x, scope)
        return x

    def statement(self, stmt: ast.Stmt, env: Env, x: Tensor, scope: Scope) -> Tensor:
        if isinstance(stmt, ast.Bind | ast.Place) and stmt.source is not None:
            return self._from(stmt, stmt.source, env, scope)
        if isinstance(stmt, ast.Bind):
            value = self.eval(stmt.value, env)
            if isinstance(value, LAYERS):
                return self._read(stmt, [x], self.place(value, x, scope, stmt.name,
                                                        stmt.name_span))
            if stmt.name in env.values:
                raise SpecError(f"`{stmt.name}` is already defined here", stmt.name_span)
            env.values[stmt.name] = value
            return x
        if isinstance(stmt, ast.Place):
            value = self.eval(stmt.value, env)
            if not isinstance(value, LAYERS):
                raise SpecError(f"expected a layer, got {describe(value)}", stmt.span,
                                "a statement on its own must be a layer; "
                                "bind values with `name = ...`")
            return self._read(stmt, [x], self.place(value, x, scope, None, stmt.span))
        if isinstance(stmt, ast.If):
            test = self.eval(stmt.test, env)
            if not isinstance(test, bool):
                raise SpecError(f"`if` needs a condition, got {describe(test)}", stmt.test.span)
            return self._statements(stmt.body if test else stmt.orelse, env, x, scope)
        if scope.path or scope.calls:
            raise SpecError("`input` belongs at the top of the network, not inside a block",
                            stmt.span)
        return x  # the network's own `input` statement, already handled

    def _read(self, stmt: ast.Bind | ast.Place, ins: list[Tensor], out: Tensor) -> Tensor:
        """Note that a statement read `ins` and computed `out` (in the innermost body)."""
        if self.flows:
            flow = self.flows[-1]
            for t in ins:
                flow.unread.pop(t.node, None)
            flow.placed(stmt, ins, out)
        return out

    def _from(self, stmt: ast.Bind | ast.Place, source: ast.From, env: Env,
              scope: Scope) -> Tensor:
        """`name = from a, b merge layers`: the named outputs, merged when there are several,
        then the statement's layers."""
        if not self.flows:
            raise SpecError("`from` reads the outputs of a body's statements; there is no body "
                            "here", source.span)
        ins = self.flows[-1].read(source, env)
        name = stmt.name if isinstance(stmt, ast.Bind) else None
        span = stmt.name_span if isinstance(stmt, ast.Bind) else stmt.span
        items = stmt.value.items if isinstance(stmt.value, ast.Seq) else (stmt.value,)
        if len(ins) == 1:
            value = self.eval(stmt.value, env)
            if not isinstance(value, LAYERS):
                raise SpecError(f"`from` feeds layers, but this is {describe(value)}",
                                stmt.value.span)
            return self._read(stmt, ins, self.place(value, ins[0], scope, name, span))
        first = items[0]
        if not isinstance(first, ast.Name) or first.id not in MERGES:
            *others, last = MERGES
            raise SpecError(f"`from` with {len(ins)} sources needs a merge first: "
                            f"{', '.join(others)} or {last}", first.span,
                            f"e.g. from {', '.join(n.id for n in source.names)} "
                            f"{next(iter(MERGES))} ...")
        rest = [self.eval(item, env) for item in items[1:]]
        for item, value in zip(items[1:], rest, strict=True):
            if not isinstance(value, LAYERS):
                raise SpecError(f"a sequence holds layers, but this is {describe(value)}",
                                item.span)
        if name is not None and rest:  # a named sequence gets a scope of its own
            scope = scope.enter(scope.ns.claim(name, "", span), None, instance=False)
            name = None
        self.budget.step(span)
        merge = OpCall(MERGES[first.id], {}, first.span)
        y = self._place_op(merge, ins, scope, name)
        if first.id == "add":
            self.merged.append(y.node)
        for item, value in zip(items[1:], rest, strict=True):
            y = self.place(value, y, scope, None, item_span(value, item.span))  # type: ignore[arg-type]
        return self._read(stmt, ins, y)

    # -- placement: layers become nodes --

    def place(self, layer: Layer, x: Tensor, scope: Scope, name: str | None, span: Span) -> Tensor:
        if not isinstance(layer, OpCall):  # an op counts as the node it adds
            self.budget.step(span)
        with self.budget.nested(span):
            return self._place(layer, x, scope, name, span)

    def _place(self, layer: Layer, x: Tensor, scope: Scope, name: str | None,
               span: Span) -> Tensor:
        if isinstance(layer, OpCall):
            return self._place_op(layer, [x], scope, name)
        if isinstance(layer, Repeat):
            return self._place_repeat(layer, x, scope, name, span)
        if name is not None:  # a named block, sequence or unit gets a scope of its own
            name = scope.ns.claim(name, "", span)
            kind = layer.block.name if isinstance(layer, BlockCall) else None
            instance = kind is not None or not (self.flows and self.flows[-1].dag)
            scope = scope.enter(name, kind, instance)
            if instance:
                self.blocks[scope.path] = kind
        if isinstance(layer, BlockCall):
            return self._place_block(layer, x, scope)
        if isinstance(layer, Sequence):
            for item in layer.items:
                x = self.place(item, x, scope, None, item_span(item, span))
            return x
        return self._place_closure(layer, x, scope)

    def _place_op(self, call: OpCall, xs: list[Tensor], scope: Scope, name: str | None) -> Tensor:
        self.budget.step(call.span)
        in_shapes = [t.shape for t in xs]
        try:
            call.op.check(call.attrs, in_shapes)
            shape = call.op.infer(call.attrs, in_shapes)
        except SpecError as err:
            raise SpecError(err.message, call.span, err.hint) from None
        node = scope.child(scope.ns.claim(name, call.op.name, call.span))
        stage = node.split(".")[0]
        rec = Node(call.op.name, call.attrs, shape, stage, scope.block, scope.kind, scope.branch,
                   "base", call.span)
        add_node(self.graph, node, rec, [t.node for t in xs])
        return Tensor(node, shape)

    def _place_repeat(self, rep: Repeat, x: Tensor, scope: Scope, name: str | None,
                      span: Span) -> Tensor:
        if name is not None:
            scope = scope.enter(scope.ns.claim(name, "", span), None, instance=False)
        for k in range(1, rep.count + 1):
            layer = rep.layer if k == 1 else first_copy_only(rep.layer)
            before = self.budget.steps
            x = self.place(layer, x, scope, f"block{k}" if name else None, span)
            if k == 2:  # repeats 2..n are alike: refuse now what the rest would exceed
                self.budget.expect((self.budget.steps - before) * (rep.count - 2), span)
        return x

    def _place_block(self, call: BlockCall, x: Tensor, scope: Scope) -> Tensor:
        block = call.block
        if block.name in scope.calls:
            chain = " -> ".join((*scope.calls, block.name))
            raise SpecError(f"block `{block.name}` calls itself ({chain})", call.span,
                            "blocks cannot be recursive; use `* n` to repeat")
        scope = replace(scope, calls=(*scope.calls, block.name))
        builtins: dict[str, Value] = {}
        if len(x.shape) == 3:
            builtins = {"c_in": Fraction(x.shape[0]), "h_in": Fraction(x.shape[1]),
                        "w_in": Fraction(x.shape[2])}
        env = Env(dict(builtins), self.evaluator.globals)
        for param in block.params:
            if param.name in call.args:
                env.values[param.name] = call.args[param.name]
            else:
                assert param.default is not None, "checked when the call was evaluated"
                env.values[param.name] = self.eval(param.default, env)
                if param.choices:  # a default may depend on c_in: checked where it is placed
                    allowed = self.evaluator.choices(param, env)
                    self.evaluator.check_choice(param, env.values[param.name], allowed,
                                                param.default.span, block.name)
        return self.run(block.body, Env({}, env), x, scope)

    def _place_closure(self, c: Closure, x: Tensor, scope: Scope) -> Tensor:
        env = Env({}, c.env)
        if isinstance(c.node, ast.Group):
            return self.run(c.node.body, env, x, scope)
        if isinstance(c.node, ast.Residual):
            return self._place_residual(c.node, c.scale, env, x, scope)
        return self._place_parallel(c.node, env, x, scope)

    def _place_residual(self, unit: ast.Residual, scale: float | None, env: Env, x: Tensor,
                        scope: Scope) -> Tensor:
        if not unit.body:
            raise SpecError("a residual unit needs at least one layer", unit.span)
        body = scope.in_branch("residual")
        y = self.run(unit.body, env, x, body)
        if scale is not None:
            y = self._place_op(OpCall(OPS["scale"], {"factor": scale}, unit.span), [y], body, None)
        short = x
        if unit.shortcut is not None:
            scope.ns.claim("shortcut", "", unit.shortcut_span or unit.span)
            short = self.run(unit.shortcut, Env({}, env), x, scope.branch_scope("shortcut"))
        if y.node == short.node:
            raise SpecError("the residual branch and the shortcut are the same tensor", unit.span)
        merge = OpCall(OPS["add"], {"branches": ("residual", "shortcut")}, unit.span)
        return self._place_op(merge, [y, short], scope, None)

    def _place_parallel(self, unit: ast.Parallel, env: Env, x: Tensor, scope: Scope) -> Tensor:
        if unit.merge not in MERGES:
            words = ", ".join(f"`{w}`" for w in MERGES)
            raise SpecError(f"parallel branches merge by {words}, not `{unit.merge}`",
                            unit.merge_span)
        outs: list[Tensor] = []
        names: list[str] = []
        for stmt in unit.body:
            if isinstance(stmt, ast.Bind | ast.Place) and stmt.source is not None:
                raise SpecError("a branch of `parallel` reads the unit's input; `from` belongs "
                                "in a body of statements", stmt.source.span,
                                "put the branch's statements in `{ }`")
            if isinstance(stmt, ast.Bind | ast.Place):
                value = self.eval(stmt.value, env)
                if not isinstance(value, LAYERS):
                    if isinstance(stmt, ast.Bind) and stmt.name not in env.values:
                        env.values[stmt.name] = value
                        continue
                    raise SpecError(f"a branch must be a layer, got {describe(value)}", stmt.span)
                label = stmt.name if isinstance(stmt, ast.Bind) else None
                branch = scope.ns.claim(label, "branch", stmt.span)
                outs.append(self.place(value, x, scope.branch_scope(branch), None, stmt.span))
                names.append(branch)
            else:
                raise SpecError("only branches (layers) belong inside `parallel`", stmt.span)
        if len(outs) < 2:
            raise SpecError("`parallel` needs at least two branches", unit.span)
        if len({t.node for t in outs}) != len(outs):
            raise SpecError("two branches of `parallel` are the same tensor (empty branches?)",
                            unit.span)
        merge = OpCall(MERGES[unit.merge], {"branches": tuple(names)}, unit.span)
        return self._place_op(merge, outs, scope, None)

    # -- evaluation --


# --- helpers ------------------------------------------------------------------------------------


def _input_shape(net: ast.BlockDef,
                 override: tuple[int, ...] | None) -> tuple[tuple[int, int, int], Span]:
    """The network's `input` shape; an override of 224 (square) or 320x240 keeps its channels."""
    inputs = [s for s in net.body if isinstance(s, ast.Input)]
    if len(inputs) != 1:
        raise SpecError("a network needs exactly one `input` statement",
                        net.span if not inputs else inputs[1].span, "e.g. input 3x224x224")
    shape = inputs[0].dims
    if override and len(override) > 3:
        raise SpecError(f"input takes 224, 320x240 or 3x320x240, not "
                        f"{'x'.join(map(str, override))}", NOWHERE)
    if override:
        size = override * 2 if len(override) == 1 else override
        shape = (*shape[: 3 - len(size)], *size)
    if len(shape) != 3 or min(shape) < 1:
        raise SpecError(f"the input must be CxHxW, got {'x'.join(map(str, shape))}",
                        inputs[0].span)
    c, h, w = shape
    return (c, h, w), inputs[0].span


# --- top level ----------------------------------------------------------------------------------


class Elaborated(Record):
    graph: Graph  # the base network
    se: SeConfig  # where its SE blocks go, and what they are


def elaborate(module: ast.Module, library: Library, overrides: Mapping[str, Value],
              input_shape: tuple[int, ...] | None = None,
              elaborator: Callable[[Library], Elaborator] = Elaborator) -> Elaborated:
    """The base graph of the module's network, plus its SE configuration. `elaborator` makes
    the Elaborator (the language server's records which statement placed which nodes)."""
    if not module.networks:
        raise SpecError("this file defines no network", Span(module.file, 1, 1, 1, 2),
                        "a spec needs `network name(...) { input 3x224x224 ... }`")
    if len(module.networks) > 1:
        raise SpecError("a spec defines one network", module.networks[1].span)
    net = module.networks[0]
    el = elaborator(library)
    params = {p.name for p in net.params}
    graph, env = el.network(net, {k: v for k, v in overrides.items() if k in params},
                            input_shape)
    for name in overrides:  # after the network: a mistake in it is the first to report
        if name not in params and name not in SETTINGS:
            raise SpecError(f"unknown parameter `{name}`", NOWHERE,
                            did_you_mean(name, params | set(SETTINGS))
                            or f"the parameters of `{net.name}`: "
                            f"{', '.join(p.name for p in net.params) or 'none'}; or an SE "
                            "setting (ratio, squeeze, ...)")
    se = evaluate_se(module.se, el.evaluator, env,
                     {k: v for k, v in overrides.items() if k not in params})
    return Elaborated(graph, se)
