"""AST -> graph IR. Binds parameters, evaluates arithmetic, expands blocks, repeats and stages into
a flat graph with hierarchical names, and infers and checks every shape on the way.

Evaluation yields values: numbers (exact fractions), bools, strings, shapes, and *layers*, which
are recipes that `place` turns into nodes once the input tensor is known."""

from __future__ import annotations

import keyword
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, TypeAlias

import networkx as nx

from sedsl import ast, limits
from sedsl.errors import NOWHERE, Span, SpecError, did_you_mean
from sedsl.ir import Node, add_node
from sedsl.ops import OPS, Attr, Op, Shape, complete
from sedsl.se import SeConfig, evaluate_se

# --- values -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpCall:
    """`conv(64, 3)` or a bare `bn`: an op with its arguments checked and normalised."""

    op: Op
    attrs: dict[str, Attr]
    span: Span


@dataclass(frozen=True)
class BlockCall:
    """`bottleneck(planes = 64)`: defaults are evaluated at placement, when `c_in` is known."""

    block: ast.BlockDef
    args: dict[str, Value]
    span: Span


@dataclass(frozen=True)
class Sequence:
    items: tuple[Layer, ...]
    span: Span


@dataclass(frozen=True)
class Repeat:
    layer: Layer
    count: int
    span: Span


@dataclass(frozen=True)
class Closure:
    """A group, residual or parallel unit with the environment it was written in."""

    node: ast.Group | ast.Residual | ast.Parallel
    env: Env
    scale: float | None = None


Layer: TypeAlias = OpCall | BlockCall | Sequence | Repeat | Closure
Value: TypeAlias = Fraction | bool | str | tuple[int, ...] | Layer
LAYERS = (OpCall, BlockCall, Sequence, Repeat, Closure)


def describe(value: Value) -> str:
    if isinstance(value, bool):
        return f"the bool {'true' if value else 'false'}"
    if isinstance(value, Fraction):
        return f"the number {_num(value)}"
    if isinstance(value, str):
        return f'the string "{value}"'
    if isinstance(value, tuple):
        return f"the shape {'x'.join(map(str, value))}"
    return "a layer"


def _kind(value: Value) -> str:
    for kind, types in (("a bool", bool), ("a number", Fraction), ("a string", str),
                        ("a shape", tuple)):
        if isinstance(value, types):
            return kind
    return "a layer"


def _show(value: Value) -> str:
    return describe(value).split(" ", 2)[-1]


def _num(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):g}"


# --- environments -------------------------------------------------------------------------------


@dataclass
class Env:
    """Lexical scope: values bound by parameters and `name = value` statements."""

    values: dict[str, Value]
    parent: Env | None = None

    def lookup(self, name: str) -> Value | None:
        env: Env | None = self
        while env is not None:
            if name in env.values:
                return env.values[name]
            env = env.parent
        return None

    def names(self) -> set[str]:
        return set(self.values) | (self.parent.names() if self.parent else set())


@dataclass(frozen=True)
class Library:
    """The blocks a spec can call: its own and those of the files it `use`s."""

    blocks: dict[str, ast.BlockDef]


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


@dataclass(frozen=True)
class Scope:
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


@dataclass(frozen=True)
class Tensor:
    node: str
    shape: Shape


# --- the elaborator -----------------------------------------------------------------------------

BUILTINS: dict[str, Callable[..., Fraction]] = {
    "floor": lambda x: Fraction(math.floor(x)),
    "ceil": lambda x: Fraction(math.ceil(x)),
    "round": lambda x: Fraction(math.floor(x + Fraction(1, 2))),
    "min": lambda *xs: min(xs),
    "max": lambda *xs: max(xs),
    "abs": lambda x: abs(x),
    # timm's make_divisible: nearest multiple of d, at least d, and never below 90% of x
    "make_divisible": lambda x, d: _make_divisible(x, d),
}


def _make_divisible(x: Fraction, d: Fraction) -> Fraction:
    v = max(d, Fraction(math.floor(x + d / 2) // d) * d)
    return v + d if v < Fraction(9, 10) * x else v


class Elaborator:
    def __init__(self, library: Library):
        self.library = library
        self.graph = nx.DiGraph()
        self.globals = Env({})
        self.budget = limits.Budget()  # nodes placed and nesting, against sedsl.limits

    # -- entry point --

    def network(self, net: ast.BlockDef, overrides: Mapping[str, Value],
                input_shape: tuple[int, ...] | None) -> tuple[nx.DiGraph, Env]:
        """The network's graph, and its parameters (the scope of the se section)."""
        env = self.parameters(net, overrides)
        shape, span = _input_shape(net, input_shape)
        self.graph.graph.update(name=net.name, input=shape, file=net.span.file)
        x = self._input(shape, span)
        out = self.run(net.body, env, x, Scope("", Namespace({"input": span})))
        self.graph.graph["output"] = out.node
        return self.graph, env

    def parameters(self, net: ast.BlockDef, overrides: Mapping[str, Value]) -> Env:
        """The network's parameters: defaults, replaced by overrides of the same kind."""
        env = Env({}, self.globals)
        for param in net.params:
            if param.default is None:
                raise SpecError(f"network parameter `{param.name}` has no default", param.span,
                                f"give it one, or set it: --set {param.name}=...")
            default = self.eval(param.default, env)
            value = overrides.get(param.name, default)
            if _kind(value) != _kind(default):
                raise SpecError(f"`{param.name}` takes {_kind(default)} (default "
                                f"{_show(default)}), not {describe(value)}", NOWHERE)
            env.values[param.name] = value
        return env

    def _input(self, shape: Shape, span: Span) -> Tensor:
        rec = Node("input", {"shape": shape}, shape, None, None, None, None, "base", span)
        add_node(self.graph, "input", rec, [])
        return Tensor("input", shape)

    # -- statements --

    def run(self, body: tuple[ast.Stmt, ...], env: Env, x: Tensor, scope: Scope) -> Tensor:
        for stmt in body:
            x = self.statement(stmt, env, x, scope)
        return x

    def statement(self, stmt: ast.Stmt, env: Env, x: Tensor, scope: Scope) -> Tensor:
        if isinstance(stmt, ast.Bind):
            value = self.eval(stmt.value, env)
            if isinstance(value, LAYERS):
                return self.place(value, x, scope, stmt.name, stmt.name_span)
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
            return self.place(value, x, scope, None, stmt.span)
        if isinstance(stmt, ast.If):
            test = self.eval(stmt.test, env)
            if not isinstance(test, bool):
                raise SpecError(f"`if` needs a condition, got {describe(test)}", stmt.test.span)
            return self.run(stmt.body if test else stmt.orelse, env, x, scope)
        if scope.path or scope.calls:
            raise SpecError("`input` belongs at the top of the network, not inside a block",
                            stmt.span)
        return x  # the network's own `input` statement, already handled

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
            scope = scope.enter(name, kind, instance=True)
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
            layer = rep.layer if k == 1 else with_unit_stride(rep.layer)
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
        env = Env(dict(builtins), self.globals)
        for param in block.params:
            if param.name in call.args:
                env.values[param.name] = call.args[param.name]
            else:
                assert param.default is not None, "checked when the call was evaluated"
                env.values[param.name] = self.eval(param.default, env)
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
        if unit.merge not in ("add", "concat"):
            raise SpecError(f"parallel branches merge by `add` or `concat`, not `{unit.merge}`",
                            unit.merge_span)
        outs: list[Tensor] = []
        names: list[str] = []
        for stmt in unit.body:
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
        merge = OpCall(OPS[unit.merge], {"branches": tuple(names)}, unit.span)
        return self._place_op(merge, outs, scope, None)

    # -- evaluation --

    def eval(self, e: ast.Expr, env: Env) -> Value:
        if isinstance(e, ast.Number):
            return e.value
        if isinstance(e, ast.ShapeLit):
            return e.dims
        if isinstance(e, ast.String | ast.Bool):
            return e.value
        if isinstance(e, ast.Name):
            return self._name(e, env)
        if isinstance(e, ast.Call):
            return self._call(e, env)
        if isinstance(e, ast.BinOp):
            return self._binop(e, env)
        if isinstance(e, ast.UnaryOp):
            return self._unary(e, env)
        if isinstance(e, ast.Cond):
            test = self.eval(e.test, env)
            if not isinstance(test, bool):
                raise SpecError(f"`if` needs a condition, got {describe(test)}", e.test.span)
            return self.eval(e.then if test else e.orelse, env)
        if isinstance(e, ast.Seq):
            items = [self.eval(item, env) for item in e.items]
            for item, value in zip(e.items, items, strict=True):
                if not isinstance(value, LAYERS):
                    raise SpecError(f"a sequence holds layers, but this is {describe(value)}",
                                    item.span)
            return Sequence(tuple(items), e.span)  # type: ignore[arg-type]
        if isinstance(e, ast.Residual):
            scale = self._residual_scale(e, env)
            return Closure(e, env, scale)
        return Closure(e, env)

    def _name(self, e: ast.Name, env: Env) -> Value:
        value = env.lookup(e.id)
        if value is not None:
            return value
        if e.id == "identity":
            return Sequence((), e.span)
        if (e.id in OPS and OPS[e.id].user) or e.id in self.library.blocks:
            return self._call(ast.Call(e.id, (), e.span, e.span), env)
        hint = did_you_mean(e.id, self.visible(env))
        raise SpecError(f"unknown name `{e.id}`", e.span, hint)

    def visible(self, env: Env) -> set[str]:
        ops = {n for n, op in OPS.items() if op.user}
        return env.names() | ops | set(self.library.blocks) | set(BUILTINS) | {"identity"}

    def _call(self, e: ast.Call, env: Env) -> Value:
        if e.func in BUILTINS:
            return self._builtin(e, env)
        if e.func in OPS and OPS[e.func].user:
            return self._op_call(OPS[e.func], e, env)
        if e.func in self.library.blocks:
            block = self.library.blocks[e.func]
            args = self._bind(e, [p.name for p in block.params], env, f"block `{block.name}`")
            missing = [p.name for p in block.params if p.default is None and p.name not in args]
            if missing:
                raise SpecError(f"block `{block.name}` needs {_list(missing)}", e.span,
                                f"its parameters: {_signature(block)}")
            return BlockCall(block, {k: v for k, (v, _) in args.items()}, e.span)
        hint = did_you_mean(e.func, self.visible(env))
        if env.lookup(e.func) is not None:
            hint = f"`{e.func}` is a value here, not something to call"
        raise SpecError(f"unknown layer or function `{e.func}`", e.func_span, hint)

    def _bind(self, e: ast.Call, params: list[str], env: Env,
              what: str) -> dict[str, tuple[Value, Span]]:
        """Match a call's arguments to parameter names; evaluate them."""
        args: dict[str, tuple[Value, Span]] = {}
        positional = [a for a in e.args if a.name is None]
        if len(positional) > len(params):
            raise SpecError(f"{what} takes at most {len(params)} positional arguments, "
                            f"got {len(positional)}", positional[len(params)].span)
        seen_keyword = False
        for i, arg in enumerate(e.args):
            if arg.name is None:
                if seen_keyword:
                    raise SpecError("a positional argument cannot follow keyword arguments",
                                    arg.span)
                name = params[i]
            else:
                seen_keyword = True
                name = arg.name
                if name not in params:
                    raise SpecError(f"{what} has no parameter `{name}`", arg.span,
                                    did_you_mean(name, params) or f"its parameters: "
                                    f"{', '.join(params) or 'none'}")
            if name in args:
                raise SpecError(f"argument `{name}` is given twice", arg.span)
            args[name] = (self.eval(arg.value, env), arg.value.span)
        return args

    def _op_call(self, op: Op, e: ast.Call, env: Env) -> OpCall:
        what = f"`{op.name}`"
        args = self._bind(e, [a.name for a in op.args], env, what)
        attrs: dict[str, Any] = {}
        missing = []
        for spec in op.args:
            if spec.name in args:
                value, span = args[spec.name]
                attrs[spec.name] = convert(value, spec.kind, f"{what} argument `{spec.name}`", span)
            elif spec.default is not None:
                attrs[spec.name] = convert_default(spec.default, spec.kind)
            elif spec.derived:
                attrs[spec.name] = None
            else:
                missing.append(spec.name)
        if missing:
            raise SpecError(f"{what} needs {_list(missing)}", e.span, f"e.g. {_example(op)}")
        return OpCall(op, complete(op, attrs), e.span)

    def _builtin(self, e: ast.Call, env: Env) -> Fraction:
        if any(a.name for a in e.args):
            raise SpecError(f"`{e.func}` takes positional arguments only", e.span)
        values = [self.eval(a.value, env) for a in e.args]
        for a, v in zip(e.args, values, strict=True):
            if not isinstance(v, Fraction) or isinstance(v, bool):
                raise SpecError(f"`{e.func}` needs numbers, got {describe(v)}", a.span)
        try:
            return BUILTINS[e.func](*values)
        except (TypeError, ValueError, ZeroDivisionError):
            raise SpecError(f"wrong arguments for `{e.func}`", e.span) from None

    def _binop(self, e: ast.BinOp, env: Env) -> Value:
        if e.op in ("and", "or"):
            left = self.eval(e.left, env)
            if not isinstance(left, bool):
                raise SpecError(f"`{e.op}` needs bools, got {describe(left)}", e.left.span)
            if (e.op == "and") != left:
                return left
            right = self.eval(e.right, env)
            if not isinstance(right, bool):
                raise SpecError(f"`{e.op}` needs bools, got {describe(right)}", e.right.span)
            return right
        left, right = self.eval(e.left, env), self.eval(e.right, env)
        if e.op == "*" and isinstance(left, LAYERS):
            return Repeat(left, repeat_count(right, e.right.span), e.span)
        if e.op in ("==", "!="):
            if isinstance(left, LAYERS) or isinstance(right, LAYERS):
                raise SpecError("layers cannot be compared", e.span)
            return (left == right) == (e.op == "==")
        for side, value in ((e.left, left), (e.right, right)):
            if not isinstance(value, Fraction):
                raise SpecError(f"`{e.op}` needs numbers, got {describe(value)}", side.span)
        assert isinstance(left, Fraction) and isinstance(right, Fraction)
        return arithmetic(e.op, left, right, e.span)

    def _unary(self, e: ast.UnaryOp, env: Env) -> Value:
        value = self.eval(e.operand, env)
        if e.op == "not":
            if not isinstance(value, bool):
                raise SpecError(f"`not` needs a bool, got {describe(value)}", e.operand.span)
            return not value
        if not isinstance(value, Fraction):
            raise SpecError(f"`-` needs a number, got {describe(value)}", e.operand.span)
        return -value

    def _residual_scale(self, e: ast.Residual, env: Env) -> float | None:
        if not e.args:
            return None
        if len(e.args) != 1 or e.args[0].name not in (None, "scale"):
            raise SpecError("`residual` takes one argument, `scale`", e.args[0].span)
        value = self.eval(e.args[0].value, env)
        scale = convert(value, "float", "residual scale", e.args[0].span)
        assert isinstance(scale, float)
        return scale


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


def arithmetic(op: str, a: Fraction, b: Fraction, span: Span) -> Value:
    if op in ("/", "//", "%") and b == 0:
        raise SpecError("division by zero", span)
    table: dict[str, Callable[[], Value]] = {
        "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
        "//": lambda: Fraction(a // b), "%": lambda: a % b,
        "<": lambda: a < b, "<=": lambda: a <= b, ">": lambda: a > b, ">=": lambda: a >= b,
    }
    result = table[op]()
    return limits.check_number(result, span) if isinstance(result, Fraction) else result


def repeat_count(value: Value, span: Span) -> int:
    if not isinstance(value, Fraction) or value.denominator != 1 or value < 1:
        raise SpecError(f"a layer repeats a whole number of times (>= 1), not {describe(value)}",
                        span)
    return limits.repeat_count(int(value), span)


def with_unit_stride(layer: Layer) -> Layer:
    """Repeats after the first: `stride` is 1 (the stride belongs to the first repeat only)."""
    if isinstance(layer, OpCall) and "stride" in layer.attrs and layer.op.name == "conv":
        return replace(layer, attrs={**layer.attrs, "stride": (1, 1)})
    if isinstance(layer, BlockCall) and any(p.name == "stride" for p in layer.block.params):
        return replace(layer, args={**layer.args, "stride": Fraction(1)})
    return layer


def item_span(layer: Layer, default: Span) -> Span:
    span = getattr(layer, "span", None)
    if span is None and isinstance(layer, Closure):
        span = layer.node.span
    return span or default


def convert(value: Value, kind: str, what: str, span: Span) -> Attr:
    """A spec value as an op attribute of the given kind, or a SpecError at `span`."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise SpecError(f"{what} must be true or false, got {describe(value)}", span)
    if kind in ("pair", "pair0") and isinstance(value, tuple):
        if len(value) != 2:
            raise SpecError(f"{what} must be a number or HxW, got {describe(value)}", span)
        return (value[0], value[1])
    if not isinstance(value, Fraction) or isinstance(value, bool):
        raise SpecError(f"{what} must be a number, got {describe(value)}", span)
    if kind == "float":
        return float(value)
    if kind == "prob":
        if not 0 <= value < 1:
            raise SpecError(f"{what} must be in [0, 1), got {_num(value)}", span)
        return float(value)
    least = 0 if kind == "pair0" else 1
    if value.denominator != 1 or value < least:
        raise SpecError(f"{what} must be a whole number >= {least}, got {_num(value)}", span,
                        "use // for whole-number division" if value.denominator != 1 else None)
    n = int(value)
    return (n, n) if kind in ("pair", "pair0") else n


def convert_default(value: Attr, kind: str) -> Attr:
    if kind in ("pair", "pair0") and isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    return value


def _list(names: list[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _signature(block: ast.BlockDef) -> str:
    return f"{block.name}({', '.join(p.name for p in block.params)})"


def _example(op: Op) -> str:
    return {"conv": "conv(64, 3)", "linear": "linear(1000)", "maxpool": "maxpool(3, 2)",
            "avgpool": "avgpool(3, 2)", "channel_shuffle": "channel_shuffle(4)",
            "scale": "scale(0.2)"}.get(op.name, op.name)


# --- top level ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Elaborated:
    graph: nx.DiGraph  # the base network; its SE configuration is in graph.graph["se"]
    se: SeConfig


def elaborate(module: ast.Module, library: Library, overrides: Mapping[str, Value],
              input_shape: tuple[int, ...] | None = None) -> Elaborated:
    """The base graph of the module's network, plus its SE configuration."""
    if not module.networks:
        raise SpecError("this file defines no network", Span(module.file, 1, 1, 1, 2),
                        "a spec needs `network name(...) { input 3x224x224 ... }`")
    if len(module.networks) > 1:
        raise SpecError("a spec defines one network", module.networks[1].span)
    net = module.networks[0]
    el = Elaborator(library)
    params = {p.name for p in net.params}
    graph, env = el.network(net, {k: v for k, v in overrides.items() if k in params},
                            input_shape)
    se = evaluate_se(module.se, el, env, {k: v for k, v in overrides.items() if k not in params})
    graph.graph["se"] = se.to_json()
    return Elaborated(graph, se)
