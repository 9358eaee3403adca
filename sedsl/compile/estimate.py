"""How many nodes a network places at least, from its syntax tree alone: repeat counts multiplied
through block calls, before anything is elaborated. A spec whose syntax already passes the node
limit (`block l4 { l3 * 100 }`, one `* 100` where `* 10` was meant) is refused in milliseconds,
at the repeat that multiplies it, instead of after elaborating 10^5 nodes.

The count is a lower bound on the elaborator's own (`sedsl.limits.Budget`: every node, and every
placement of a block, group, sequence or repeat), so the estimate never refuses a network the
elaborator would build: where a value is not known without elaborating (a count or a condition
that depends on `c_in`, a name bound to a layer), it takes the least the syntax allows (a count
of 1, the smaller branch of an `if`, one node for a layer it cannot see into)."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

from sedsl import limits
from sedsl.errors import Span, SpecError
from sedsl.ir.ops import OPS
from sedsl.language import ast
from sedsl.language.evaluate import BUILTINS, LAYERS, Env, Evaluator

UNKNOWN = object()  # a value the syntax alone does not give
_WORK = 200_000  # syntax nodes visited at most; past it the estimate gives up (never refuses)
_SHOWN = 10**15  # counts above this print as "more than 10^15"


class _GiveUp(Exception):
    """The estimate took too long or went too deep: the elaborator's own checks decide."""


class Bound:
    """At least `nodes` placements; `chain`: the repeats that multiply the largest part of it,
    outermost first, as (span, count)."""

    __slots__ = ("chain", "nodes")

    def __init__(self, nodes: int = 0, chain: tuple[tuple[Span, int], ...] = ()):
        self.nodes, self.chain = nodes, chain

    def __add__(self, other: Bound) -> Bound:
        heavier = self.chain if self.nodes >= other.nodes else other.chain
        return Bound(self.nodes + other.nodes, heavier or self.chain or other.chain)


def least(net: ast.BlockDef, params: Env, evaluator: Evaluator) -> Bound | None:
    """At least how many nodes and placements elaborating `net` counts; None when the estimate
    gives up (too much syntax to walk)."""
    try:
        return _Estimate(evaluator).body(net.body, _Scope(Env(dict(params.values),
                                                               params.parent), frozenset()))
    except _GiveUp:
        return None


def check(net: ast.BlockDef, params: Env, evaluator: Evaluator) -> None:
    """Refuse a network whose syntax places more than the node limit (a SpecError at the
    repeat with the largest count among those that multiply it)."""
    limit = limits.current().nodes
    bound = least(net, params, evaluator)
    if bound is None or bound.nodes <= limit:
        return
    if not bound.chain:  # no repeat: that many layers written out
        raise limits.exceeded(f"the network would have at least {_count(bound.nodes)} nodes",
                              "nodes", net.span)
    span, _ = max(bound.chain, key=lambda link: link[1])  # the largest count, outermost first
    chain = ", ".join(f"* {c:,} at {s}" for s, c in bound.chain)
    raise limits.exceeded(
        f"this repeat would give the network at least {_count(bound.nodes)} nodes", "nodes",
        span, f"the repeats that multiply it, outermost first: {chain}")


def _count(n: int) -> str:
    return f"{n:,}" if n <= _SHOWN else "more than 10^15"


class _Scope:
    """What the estimate knows in one scope: values (an Env the evaluator reads) and the names
    bound to values it does not know (which must not fall through to an outer name)."""

    __slots__ = ("env", "unknown")

    def __init__(self, env: Env, unknown: frozenset[str]):
        self.env, self.unknown = env, unknown

    def child(self) -> _Scope:
        return _Scope(Env({}, self.env), self.unknown)

    def bind(self, name: str, value: object) -> None:
        if value is UNKNOWN:
            self.unknown = self.unknown | {name}
            self.env.values.pop(name, None)
        else:
            self.env.values[name] = value  # type: ignore[assignment]
            self.unknown = self.unknown - {name}


class _Estimate:
    def __init__(self, evaluator: Evaluator):
        self.ev = evaluator
        self.blocks = evaluator.library.blocks
        self.work = 0
        self.calls: list[str] = []
        self.memo: dict[object, Bound] = {}

    def _tick(self) -> None:
        self.work += 1
        if self.work > _WORK:
            raise _GiveUp

    # -- values --

    def value(self, e: ast.Expr, scope: _Scope) -> object:
        """The value of `e` if the syntax gives it (constants, parameters), else UNKNOWN."""
        if any(n in scope.unknown for n in _names(e)):
            return UNKNOWN
        try:
            return self.ev.eval(e, scope.env)
        except SpecError:  # c_in, a name bound inside a block: known only when placed
            return UNKNOWN

    def _is_layer(self, e: ast.Expr, scope: _Scope) -> bool:
        """Whether `e` is certainly a layer, from its form (its value may be unknown)."""
        if isinstance(e, ast.Seq | ast.Group | ast.Residual | ast.Parallel):
            return True
        if isinstance(e, ast.Name | ast.Call):
            name = e.id if isinstance(e, ast.Name) else e.func
            if name in scope.unknown or scope.env.lookup(name) is not None:
                return False
            return name == "identity" or name in self.blocks or (
                name in OPS and OPS[name].user and name not in BUILTINS)
        if isinstance(e, ast.BinOp) and e.op == "*":
            return self._is_layer(e.left, scope)
        return False

    # -- statements --

    def body(self, stmts: tuple[ast.Stmt, ...], scope: _Scope) -> Bound:
        total = Bound()
        for stmt in stmts:
            total = total + self.statement(stmt, scope)
        return total

    def statement(self, stmt: ast.Stmt, scope: _Scope) -> Bound:
        self._tick()
        if isinstance(stmt, ast.Place):
            return self.placed(stmt.value, scope)
        if isinstance(stmt, ast.Bind):
            value = self.value(stmt.value, scope)
            if isinstance(value, LAYERS) or (value is UNKNOWN and self._is_layer(stmt.value,
                                                                                  scope)):
                return self.placed(stmt.value, scope)
            if stmt.name not in scope.env.values or value is UNKNOWN:
                scope.bind(stmt.name, value)  # a number, bool, string, shape: or unknown
            return Bound()
        if isinstance(stmt, ast.If):
            test = self.value(stmt.test, scope)
            if isinstance(test, bool):
                return self.body(stmt.body if test else stmt.orelse, scope)
            return self._either(stmt.body, stmt.orelse, scope)
        return Bound()  # `input`

    def _either(self, a: tuple[ast.Stmt, ...], b: tuple[ast.Stmt, ...], scope: _Scope) -> Bound:
        """The smaller of two bodies whose choice the syntax does not give; what either binds
        is unknown after them."""
        results = []
        for branch in (a, b):
            inner = _Scope(Env(dict(scope.env.values), scope.env.parent), scope.unknown)
            results.append((self.body(branch, inner), inner))
        for _, inner in results:
            for name in set(inner.env.values) | inner.unknown:
                if inner.env.values.get(name, UNKNOWN) is not scope.env.values.get(name, UNKNOWN):
                    scope.bind(name, UNKNOWN)
        return min((bound for bound, _ in results), key=lambda bound: bound.nodes)

    # -- layers --

    def placed(self, e: ast.Expr, scope: _Scope, first: bool = True) -> Bound:
        """At least what placing the layer `e` counts (`first`: not a later copy of a repeat,
        whose stride the elaborator resets to 1)."""
        self._tick()
        if isinstance(e, ast.Name):
            if e.id in scope.unknown or scope.env.lookup(e.id) is not None:
                return Bound(1)  # a layer bound to a name: one node at least
            if e.id in self.blocks:
                return self._block(self.blocks[e.id], (), scope, first, e.span)
            return Bound(1)  # an op, identity (an empty placement), or an error
        if isinstance(e, ast.Call):
            if e.func in self.blocks and not (e.func in scope.unknown
                                              or scope.env.lookup(e.func) is not None):
                return self._block(self.blocks[e.func], e.args, scope, first, e.span)
            return Bound(1)
        if isinstance(e, ast.BinOp) and e.op == "*":
            return self._repeat(e, scope)
        if isinstance(e, ast.Seq):
            total = Bound(1)
            for item in e.items:
                total = total + self.placed(item, scope)
            return total
        if isinstance(e, ast.Group):
            return Bound(1) + self.body(e.body, scope.child())
        if isinstance(e, ast.Residual):
            inner = scope.child()
            total = Bound(2 + (1 if e.args else 0)) + self.body(e.body, inner)  # unit, add, scale
            return total + self.body(e.shortcut or (), inner.child())
        if isinstance(e, ast.Parallel):
            inner = scope.child()
            return Bound(2) + self.body(e.body, inner)  # the unit and its merge
        if isinstance(e, ast.Cond):
            test = self.value(e.test, scope)
            if isinstance(test, bool):
                return self.placed(e.then if test else e.orelse, scope, first)
            return min(self.placed(e.then, scope, first), self.placed(e.orelse, scope, first),
                       key=lambda bound: bound.nodes)
        return Bound(1)  # not a layer: the elaborator says so

    def _repeat(self, e: ast.BinOp, scope: _Scope) -> Bound:
        count = self.value(e.right, scope)
        n = 1
        if isinstance(count, Fraction) and count.denominator == 1 \
                and 1 <= count <= limits.current().repeat:
            n = int(count)  # else the elaborator's own error, or an unknown count: 1
        once = self.placed(e.left, scope)
        rest = self.placed(e.left, scope, first=False) if n > 1 else Bound()
        nodes = 1 + once.nodes + (n - 1) * rest.nodes
        if n == 1:
            return Bound(nodes, once.chain)
        return Bound(nodes, ((e.span, n), *(rest.chain or once.chain)))

    def _block(self, block: ast.BlockDef, args: tuple[ast.Arg, ...], scope: _Scope,
               first: bool, span: Span) -> Bound:
        if block.name in self.calls or len(self.calls) >= limits.current().depth:
            return Bound(1)  # recursion, or nesting the elaborator refuses itself
        env = Env({}, self.ev.globals)
        inner = _Scope(env, frozenset({"c_in", "h_in", "w_in"}))
        names = [p.name for p in block.params]
        given: dict[str, object] = {}
        for i, arg in enumerate(args):
            name = arg.name if arg.name is not None else (names[i] if i < len(names) else None)
            if name is not None:
                given[name] = self.value(arg.value, scope)
        if not first and "stride" in names:
            given["stride"] = Fraction(1)  # copies after the first of `* n` (first_copy_only)
        key = (block.name, tuple(sorted((k, _key(v)) for k, v in given.items())))
        if key in self.memo:
            return self.memo[key]
        for p in block.params:
            if p.name in given:
                inner.bind(p.name, given[p.name])
            elif p.default is not None:
                inner.bind(p.name, self.value(p.default, inner))
            else:
                inner.bind(p.name, UNKNOWN)
        self.calls.append(block.name)
        try:
            bound = Bound(1) + self.body(block.body, inner.child())
        finally:
            self.calls.pop()
        self.memo[key] = bound
        return bound


def _key(value: object) -> object:
    """A value as part of a memo key (layers by identity: equal recipes are rare)."""
    if value is UNKNOWN or isinstance(value, Fraction | bool | str | tuple):
        return (type(value).__name__, value if value is not UNKNOWN else "?")
    return ("layer", id(value))


def _names(e: ast.Expr) -> Iterator[str]:
    """Every name `e` reads (a call's function too)."""
    stack: list[object] = [e]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            yield node.id
        elif isinstance(node, ast.Call):
            yield node.func
            stack.extend(a.value for a in node.args)
        elif isinstance(node, ast.BinOp):
            stack += [node.left, node.right]
        elif isinstance(node, ast.UnaryOp):
            stack.append(node.operand)
        elif isinstance(node, ast.Cond):
            stack += [node.test, node.then, node.orelse]
        elif isinstance(node, ast.Seq):
            stack.extend(node.items)


__all__ = ["Bound", "check", "least"]
