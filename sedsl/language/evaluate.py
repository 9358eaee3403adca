"""Evaluation: the values of the language, lexical environments, the built-in functions, and
expressions evaluated to values. No graph here: layers evaluate to *recipes* (`OpCall`,
`BlockCall`, ...) that the elaborator (`sedsl.compile.elaborate`) places once the input tensor is
known.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from difflib import get_close_matches
from fractions import Fraction
from typing import Any, TypeAlias

from sedsl import limits
from sedsl.errors import NOWHERE, Span, SpecError, did_you_mean
from sedsl.ir.ops import OPS, Attr, Op
from sedsl.ir.se import make_divisible
from sedsl.language import ast, numbers
from sedsl.language.library import Library
from sedsl.record import Record, replace

# --- values -------------------------------------------------------------------------------------


class OpCall(Record):
    """`conv(64, 3)` or a bare `bn`: an op with its arguments checked and normalised."""

    op: Op
    attrs: dict[str, Attr]
    span: Span


class BlockCall(Record):
    """`bottleneck(planes = 64)`: defaults are evaluated at placement, when `c_in` is known."""

    block: ast.BlockDef
    args: dict[str, Value]
    span: Span


class Sequence(Record):
    items: tuple[Layer, ...]
    span: Span


class Repeat(Record):
    layer: Layer
    count: int
    span: Span


class Closure(Record):
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
        return f"the number {num(value)}"
    if isinstance(value, str):
        return f'the string "{value}"'
    if isinstance(value, tuple):
        return f"the shape {'x'.join(map(str, value))}"
    return "a layer"


def kind_of(value: Value) -> str:
    for kind, types in (("a bool", bool), ("a number", Fraction), ("a string", str),
                        ("a shape", tuple)):
        if isinstance(value, types):
            return kind
    return "a layer"


def show(value: Value) -> str:
    return describe(value).split(" ", 2)[-1]


def num(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):g}"


def to_value(value: Any, name: str) -> Value:
    """A Python value as a spec value: numbers become exact; text stays text until the parameter
    it sets says what it must be (`coerce`)."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, Fraction):
        return numbers.check_number(value, NOWHERE)
    if isinstance(value, int | float):
        return numbers.python_number(value, NOWHERE)
    if isinstance(value, tuple) and all(isinstance(d, int) for d in value):
        return tuple(numbers.dimension(str(d), NOWHERE) for d in value)
    raise SpecError(f"cannot use {value!r} as the value of `{name}`", NOWHERE)


def parse_text(text: str) -> Value:
    """Command-line text where no default says its kind: a bool, number, shape, or the text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    parts = lowered.split("x")
    if len(parts) > 1 and all(p.isdigit() for p in parts):
        return tuple(numbers.dimension(p, NOWHERE) for p in parts)
    number = numbers.number_value(lowered, NOWHERE)
    return unquote(text) if number is None else number


def unquote(text: str) -> str:
    """`"caffe"` -> caffe: a string given with its quotes, as a spec would write it."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


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


# --- built-ins ----------------------------------------------------------------------------------

BUILTINS: dict[str, Callable[..., Fraction]] = {
    "floor": lambda x: Fraction(math.floor(x)),
    "ceil": lambda x: Fraction(math.ceil(x)),
    "round": lambda x: Fraction(math.floor(x + Fraction(1, 2))),
    "min": lambda *xs: min(xs),
    "max": lambda *xs: max(xs),
    "abs": lambda x: abs(x),
    # timm's make_divisible(x, d, round_limit = 0.9): see below
    "make_divisible": lambda x, d, limit=Fraction(9, 10): make_divisible(x, d, limit),
}


# --- the evaluator ------------------------------------------------------------------------------


class Evaluator:
    """Evaluates expressions against the blocks of a library."""

    def __init__(self, library: Library):
        self.library = library
        self.globals = Env({})

    def parameters(self, net: ast.BlockDef, overrides: Mapping[str, Value]) -> Env:
        """The network's parameters: defaults, replaced by overrides of the same kind."""
        env = Env({}, self.globals)
        for param in net.params:
            if param.default is None:
                raise SpecError(f"network parameter `{param.name}` has no default", param.span,
                                f"give it one, or set it: --set {param.name}=...")
            default = self.eval(param.default, env)
            allowed = self.choices(param, env)
            self.check_choice(param, default, allowed, param.default.span)
            value = overrides.get(param.name, default)
            if isinstance(value, str) and not isinstance(default, str):
                value = self.coerce(value, default, env)
            elif isinstance(value, str):
                value = unquote(value)
            if kind_of(value) != kind_of(default):
                raise SpecError(f"`{param.name}` takes {kind_of(default)} (default "
                                f"{show(default)}), not {describe(value)}", NOWHERE)
            # a value from outside the spec: the error points at the declaration
            self.check_choice(param, value, allowed, param.span)
            env.values[param.name] = value
        return env

    def choices(self, param: ast.Param, env: Env) -> list[Value]:
        """The values a parameter declares it takes (`size: "b0" | "b1"`); [] for any."""
        allowed: list[Value] = []
        for choice in param.choices:
            value = self.eval(choice, env)
            if isinstance(value, LAYERS):
                raise SpecError("the values a parameter takes are numbers, bools, strings or "
                                f"shapes, not layers: {describe(value)}", choice.span)
            allowed.append(value)
        return allowed

    def check_choice(self, param: ast.Param, value: Value, allowed: list[Value],
                     span: Span, block: str | None = None) -> None:
        """Refuse a value outside the parameter's declared values, with the closest of them."""
        if not allowed or any(kind_of(value) == kind_of(a) and value == a for a in allowed):
            return
        owner = f" of block `{block}`" if block else ""
        hints = [h for h in (closest(value, allowed),) if h]
        if (span.file, span.line) != (param.span.file, param.span.line):
            hints.append(f"`{param.name}` is declared at {param.span}")
        raise SpecError(f"`{param.name}`{owner} takes {alternatives(allowed)}, not "
                        f"{show(value)}", span, " ".join(hints) or None)

    def coerce(self, text: str, default: Value, env: Env) -> Value:
        """Override text as a value of the default's kind: `relu6` names a layer when the
        default is one; `8` is a number, `true` a bool, `3x3` a shape."""
        if isinstance(default, LAYERS) and text.strip().isidentifier():
            name = text.strip()
            return self.eval(ast.Name(name, NOWHERE), env)
        return parse_text(text)

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
                raise SpecError(f"block `{block.name}` needs {listing(missing)}", e.span,
                                f"its parameters: {signature(block)}")
            for param in block.params:
                if param.choices and param.name in args:
                    value, span = args[param.name]
                    allowed = self.choices(param, Env({}, self.globals))
                    self.check_choice(param, value, allowed, span, block.name)
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
            raise SpecError(f"{what} needs {listing(missing)}", e.span,
                            f"e.g. {op.example or op.name}")
        return OpCall(op, op.complete(attrs), e.span)

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



def arithmetic(op: str, a: Fraction, b: Fraction, span: Span) -> Value:
    if op in ("/", "//", "%") and b == 0:
        raise SpecError("division by zero", span)
    table: dict[str, Callable[[], Value]] = {
        "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
        "//": lambda: Fraction(a // b), "%": lambda: a % b,
        "<": lambda: a < b, "<=": lambda: a <= b, ">": lambda: a > b, ">=": lambda: a >= b,
    }
    result = table[op]()
    return numbers.check_number(result, span) if isinstance(result, Fraction) else result


def repeat_count(value: Value, span: Span) -> int:
    if not isinstance(value, Fraction) or value.denominator != 1 or value < 1:
        raise SpecError(f"a layer repeats a whole number of times (>= 1), not {describe(value)}",
                        span)
    return limits.repeat_count(int(value), span)


def first_copy_only(layer: Layer) -> Layer:
    """A copy after the first of `layer * n`: what the op table's `resets` name goes back to
    (the stride belongs to the first copy), and a block's `stride` parameter to 1."""
    if isinstance(layer, OpCall) and layer.op.resets:
        return replace(layer, attrs={**layer.attrs, **layer.op.resets})
    if isinstance(layer, BlockCall) and any(p.name == "stride" for p in layer.block.params):
        return replace(layer, args={**layer.args, "stride": Fraction(1)})
    return layer


def item_span(layer: Layer, default: Span) -> Span:
    span = getattr(layer, "span", None)
    if span is None and isinstance(layer, Closure):
        span = layer.node.span
    return span or default


def convert(value: Value, kind: str, what: str, span: Span) -> Attr:
    """A spec value as an op attribute of the given kind (`sedsl.ir.ops.Arg`), or a SpecError
    at `span`. A pair is a number or an HxW shape, and each of its parts obeys the rule a
    number would (`stride = 3x0` is refused as `stride = 0` is)."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise SpecError(f"{what} must be true or false, got {describe(value)}", span)
    if kind in ("pair", "pair0") and isinstance(value, tuple):
        if len(value) != 2:
            raise SpecError(f"{what} must be a number or HxW, got {describe(value)}", span)
        least = 0 if kind == "pair0" else 1
        if min(value) < least:
            raise SpecError(f"{what} must be whole numbers >= {least}, got {show(value)}", span)
        return (value[0], value[1])
    if not isinstance(value, Fraction) or isinstance(value, bool):
        raise SpecError(f"{what} must be a number, got {describe(value)}", span)
    if kind == "float":
        return float(value)
    if kind == "positive":
        if value <= 0:
            raise SpecError(f"{what} must be a number > 0, got {num(value)}", span)
        return float(value)
    if kind == "prob":
        if not 0 <= value < 1:
            raise SpecError(f"{what} must be in [0, 1), got {num(value)}", span)
        return float(value)
    lowest: int | None = {"pair0": 0, "index": 0, "int": None}.get(kind, 1)
    if value.denominator != 1 or (lowest is not None and value < lowest):
        bound = "" if lowest is None else f" >= {lowest}"
        raise SpecError(f"{what} must be a whole number{bound}, got {num(value)}", span,
                        "use // for whole-number division" if value.denominator != 1 else None)
    n = int(value)
    return (n, n) if kind in ("pair", "pair0") else n


def convert_default(value: Attr, kind: str) -> Attr:
    if kind in ("pair", "pair0") and isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    return value


def alternatives(values: list[Value]) -> str:
    """`"a", "b" or "c"`: values as a spec writes them."""
    shown = [show(v) for v in values]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def closest(value: Value, allowed: list[Value]) -> str | None:
    """`did you mean "timm"?` for a value near one of the allowed ones: the same letters in
    another case (`B3`), or a close spelling (`tim`)."""
    text = value if isinstance(value, str) else show(value)
    spelled = {(a if isinstance(a, str) else show(a)): a for a in allowed}
    same = [a for t, a in spelled.items() if t.lower() == text.lower()]
    near = same or [spelled[t] for t in get_close_matches(text, list(spelled), n=1, cutoff=0.6)]
    return f"did you mean {show(near[0])}?" if near else None


def listing(names: list[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def signature(block: ast.BlockDef) -> str:
    return f"{block.name}({', '.join(p.name for p in block.params)})"
