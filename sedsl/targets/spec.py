"""Graph IR -> a readable `.se` spec: the inverse of elaboration, for imported models.

Instances of one block kind become one `block` definition whose parameters are the numbers that
differ between them; consecutive equal calls in a stage become `* n`. A structure the language
cannot state (a gate computed inside a block, a concat of branches, a mean) is reported as a note
and left out as a comment: what can be written is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sedsl.ir.graph import Graph
from sedsl.ir.node import Node, inputs, record, records
from sedsl.ir.ops import Attr

# --- rendering one op ----------------------------------------------------------------------------

Slot = tuple[str, int]  # ("c", 64): a number a block definition may turn into a parameter


@dataclass(frozen=True)
class Call:
    """One op call with its numbers as slots: `conv({0}, 3, stride = {1})` and their values."""

    text: str
    slots: tuple[Slot, ...]


def _int(value: object) -> int:
    assert isinstance(value, int), f"{value!r}: the elaborator and the importer store ints"
    return value


def _n(value: Attr) -> int:
    return _int(value[0] if isinstance(value, tuple) else value)


def _pair(value: Attr) -> str:
    assert isinstance(value, tuple)
    return str(value[0]) if value[0] == value[1] else "x".join(map(str, value))


def render(rec: Node) -> Call | None:
    """The spec call for one node, or None when the language has no such op."""
    a = rec.attrs
    if rec.op == "conv":
        k = a["kernel"]
        assert isinstance(k, tuple) and isinstance(a["dilation"], tuple)
        default_pad = tuple(_int(d) * (_int(x) - 1) // 2
                            for d, x in zip(a["dilation"], k, strict=True))
        slots: list[Slot] = [("c", _int(a["c_out"]))]
        text = "conv({}, " + _pair(k)
        if isinstance(a["stride"], tuple) and a["stride"][0] == a["stride"][1]:
            text += ", stride = {}"  # a slot even at 1: units that differ in stride share a block
            slots.append(("stride", _n(a["stride"])))
        else:
            text += f", stride = {_pair(a['stride'])}"
        if a["padding"] != default_pad:
            text += f", padding = {_pair(a['padding'])}"
        if a["dilation"] != (1, 1):
            text += f", dilation = {_pair(a['dilation'])}"
        text += ", groups = {}"
        slots.append(("c", _int(a["groups"])))
        if a["bias"]:
            text += ", bias = true"
        return Call(text + ")", tuple(slots))
    if rec.op == "bn":
        return Call("bn" if a["eps"] == 1e-5 else f"bn(eps = {a['eps']!r})", ())
    if rec.op in ("maxpool", "avgpool"):
        text = f"{rec.op}({_pair(a['kernel'])}"
        if a["stride"] != a["kernel"]:
            text += f", {_pair(a['stride'])}"
        if a["padding"] != (0, 0):
            text += f", padding = {_pair(a['padding'])}"
        if a["ceil"]:
            text += ", ceil = true"
        if rec.op == "avgpool" and not a.get("count_pad", True):
            text += ", count_pad = false"
        return Call(text + ")", ())
    if rec.op == "linear":
        return Call("linear({}" + (")" if a["bias"] else ", bias = false)"),
                    (("c", _int(a["c_out"])),))
    if rec.op == "dropout":
        return Call(f"dropout({a['p']!r})", ())
    if rec.op == "adaptive_avgpool":
        return Call(f"adaptive_avgpool({_pair(a['size'])})", ())
    if rec.op == "scale":
        return Call(f"scale({a['factor']!r})", ())
    if rec.op == "channel_shuffle":
        return Call(f"channel_shuffle({a['groups']})", ())
    if rec.op == "pad_channels":
        return Call("pad_channels({})", (("c", _int(a["c_out"])),))
    if rec.op in ("add", "concat", "mul", "squeeze", "se", "input"):
        return None
    return Call(rec.op, ())  # activations, global pools, flatten


# --- units: the body of one block instance -------------------------------------------------------


@dataclass(frozen=True)
class Body:
    """A unit's layers: `pre`, then optionally a residual unit (`res`, `short`), then `post`."""

    pre: tuple[Call, ...]
    res: tuple[Call, ...] | None
    short: tuple[Call, ...]
    post: tuple[Call, ...]

    @property
    def plain(self) -> bool:
        """A chain, or a chain wrapped in a residual unit with the identity shortcut."""
        return self.res is None or not (self.pre or self.post or self.short)

    def main(self) -> tuple[Call, ...]:
        return (self.res or ()) if self.plain and self.res is not None else \
            (*self.pre, *(self.res or ()), *self.post)

    def key(self) -> tuple[object, ...]:
        """What two instances must share to share a definition (numbers aside)."""
        if self.plain:
            return ("chain", tuple(c.text for c in self.main()))
        return ("unit", tuple(c.text for c in self.pre), tuple(c.text for c in self.res or ()),
                tuple(c.text for c in self.post))


class NoSpecForm(Exception):
    """A structure the language cannot state."""


def _chain(g: Graph, names: Sequence[str], start: str) -> tuple[Call, ...]:
    """Calls of a linear chain of nodes fed by `start`, or NoSpecForm."""
    calls, prev = [], start
    for n in names:
        rec = record(g, n)
        if inputs(g, n) != [prev]:
            raise NoSpecForm(f"`{n}` ({rec.op}) does not follow the layer before it")
        call = render(rec)
        if call is None:
            raise NoSpecForm(f"`{n}` is a `{rec.op}`, which a spec cannot write here")
        calls.append(call)
        prev = n
    return tuple(calls)


def unit_body(g: Graph, names: list[str], entry: str) -> Body:
    """The body of the unit made of `names` (declaration order), fed by `entry`."""
    ops = {record(g, n).op for n in names}
    if "concat" in ops:
        raise NoSpecForm("it concatenates parallel branches, which sedsl does not write back yet")
    if "mul" in ops:
        raise NoSpecForm("it scales by a gate it computes (the model's own SE or attention "
                         "block): write it as an `se` rule")
    adds = [n for n in names if record(g, n).attrs.get("branches") == ("residual", "shortcut")]
    if not adds:
        return Body(_chain(g, names, entry), None, (), ())
    if len(adds) > 1:
        raise NoSpecForm("it has more than one residual unit")
    add = adds[0]
    res = [n for n in names if record(g, n).branch == "residual"]
    short = [n for n in names if record(g, n).branch == "shortcut"]
    pre = [n for n in names[: names.index(add)] if n not in res and n not in short]
    post = names[names.index(add) + 1:]
    start = pre[-1] if pre else entry
    return Body(_chain(g, pre, entry), _chain(g, res, start), _chain(g, short, start),
                _chain(g, post, add))


# --- block definitions ---------------------------------------------------------------------------


def _fill(calls: Sequence[Call], exprs: Sequence[str]) -> str:
    """Calls with their slots filled; `stride = 1` and `groups = 1` are the defaults."""
    values, out = iter(exprs), []
    for c in calls:
        text = c.text.format(*(next(values) for _ in c.slots))
        out.append(text.replace(", stride = 1", "").replace(", groups = 1", ""))
    return " ".join(out)


def _slots(calls: Sequence[Call]) -> list[Slot]:
    return [s for c in calls for s in c.slots]


@dataclass
class Definition:
    name: str
    bodies: list[Body] = field(default_factory=list)
    c_in: list[int] = field(default_factory=list)
    c_out: list[int] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    values: dict[str, list[int]] = field(default_factory=dict)  # parameter -> per instance
    main: list[str] = field(default_factory=list)  # the text of each slot of the main chain
    short: list[str] = field(default_factory=list)  # ... of the shortcut
    condition: str | None = None  # of the shortcut (units) or of the residual wrapper (chains)

    def expr(self, values: Sequence[int], kind: str, k: Sequence[int]) -> str:
        """A slot's text from its values at instances `k`: a number, a parameter, `n * p`."""
        for p, vs in self.values.items():
            if [vs[i] for i in k] == list(values):
                return p
        if len(set(values)) == 1:
            return str(values[0])
        for p, vs in self.values.items():
            ratios = {v // vs[i] if vs[i] and v % vs[i] == 0 else 0 for v, i in zip(values, k,
                                                                               strict=True)}
            if len(ratios) == 1 and ratios != {0} and ratios != {1}:
                return f"{ratios.pop()} * {p}"
        if len(k) != len(self.bodies):
            raise NoSpecForm(f"a shortcut of `{self.name}` has numbers no parameter gives")
        p = "stride" if kind == "stride" and "stride" not in self.values else \
            f"c{sum(q.startswith('c') for q in self.params) + 1}"
        self.params.append(p)
        self.values[p] = list(values)
        return p

    def solve(self) -> None:
        """Name the slots: constants stay numbers, equal ones share a parameter."""
        every = range(len(self.bodies))
        columns = zip(*(_slots(b.main()) for b in self.bodies), strict=True)
        self.main = [self.expr([v for _, v in col], col[0][0], every) for col in columns]
        with_short = [k for k in every if self.bodies[k].short]
        if with_short:
            if len({tuple(c.text for c in self.bodies[k].short) for k in with_short}) > 1:
                raise NoSpecForm(f"the shortcuts of `{self.name}` differ")
            cols = zip(*(_slots(self.bodies[k].short) for k in with_short), strict=True)
            self.short = [self.expr([v for _, v in col], col[0][0], with_short) for col in cols]
        self.params.sort(key=lambda p: p == "stride")  # required parameters first
        self.condition = self._condition([bool(b.short) for b in self.bodies]
                                         if not self.bodies[0].plain else
                                         [b.res is not None for b in self.bodies])

    def _condition(self, present: list[bool]) -> str | None:
        """When only some instances project (units) or add their input (chains): the rule."""
        if all(present) or not any(present):
            return None
        strides = self.values.get("stride", [1] * len(self.bodies))
        out = self.main[max(i for i, s in enumerate(_slots(self.bodies[0].main()))
                            if s[0] == "c" and self._is_c_out(i))]
        changes = [s != 1 or ci != co for s, ci, co in zip(strides, self.c_in, self.c_out,
                                                           strict=True)]
        if self.bodies[0].plain and present == [not c for c in changes]:
            return ("stride == 1 and " if "stride" in self.values else "") + f"c_in == {out}"
        if not self.bodies[0].plain and present == changes:
            return ("stride != 1 or " if "stride" in self.values else "") + f"c_in != {out}"
        raise NoSpecForm(f"only some `{self.name}` units have a residual connection or a "
                         "projection, by no rule sedsl can state")

    def _is_c_out(self, index: int) -> bool:
        """Slot `index` of the main chain is the first slot of a call (its c_out)."""
        i = 0
        for c in self.bodies[0].main():
            if i == index:
                return True
            i += len(c.slots)
        return False

    def args(self, k: int) -> list[int]:
        return [self.values[p][k] for p in self.params]

    def text(self) -> list[str]:
        sig = ", ".join(p + (" = 1" if p == "stride" else "") for p in self.params)
        head = f"block {self.name}({sig}) {{"
        b = self.bodies[0]
        if b.plain:
            chain = _fill(b.main(), self.main)
            if self.condition is None:
                inner = f"residual {{ {chain} }}" if b.res is not None else chain
                return [head, *_wrap(inner, "  "), "}"]
            call = f"{self.name}_body({', '.join(self.params)})"
            return [f"block {self.name}_body({sig}) {{", *_wrap(chain, "  "), "}",
                    head, f"  if {self.condition} {{ residual {{ {call} }} }}",
                    f"  else {{ {call} }}", "}"]
        n_pre, n_res = len(_slots(b.pre)), len(_slots(b.res or ()))
        pre = _fill(b.pre, self.main[:n_pre])
        res = _fill(b.res or (), self.main[n_pre:n_pre + n_res])
        post = _fill(b.post, self.main[n_pre + n_res:])
        with_short = next((x for x in self.bodies if x.short), b)
        short = _fill(with_short.short, self.short)
        if short and self.condition:
            short = f"if {self.condition} {{ {short} }}"
        lines = [head, *(_wrap(pre, "  ") if pre else []), "  residual {",
                 *_wrap(res, "    "), "  }" + (f" shortcut {{ {short} }}" if short else ""),
                 *(_wrap(post, "  ") if post else []), "}"]
        return lines


def _wrap(text: str, indent: str, width: int = 96) -> list[str]:
    """Split a sequence of calls at spaces outside parentheses, to lines under `width`."""
    words, depth, word = [], 0, ""
    for ch in text:
        depth += (ch in "({") - (ch in ")}")
        if ch == " " and depth == 0:
            words.append(word)
            word = ""
        else:
            word += ch
    words.append(word)
    lines, line = [], ""
    for w in words:
        if line and len(indent) + len(line) + 1 + len(w) > width:
            lines.append(indent + line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    return [*lines, indent + line]


# --- the spec ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    text: str
    notes: list[str]  # structures with no spec form


def write_spec(g: Graph, se_text: str = "") -> Written:
    """A `.se` spec for the base graph `g` (declaration order), and what it could not write."""
    notes: list[str] = []
    stages: dict[str, list[tuple[str | None, list[str]]]] = {}  # stage -> units
    for name, rec in records(g):
        if rec.op == "input" or rec.role != "base":
            continue
        units = stages.setdefault(rec.stage or name, [])
        if units and units[-1][0] == rec.block:  # the same instance, or loose layers in a row
            units[-1][1].append(name)
        else:
            units.append((rec.block, [name]))
    defs: dict[tuple[object, ...], Definition] = {}
    placed: dict[str, list[tuple[Definition | None, int, str]]] = {}  # stage -> items
    for stage, units in stages.items():
        items = placed.setdefault(stage, [])
        for block, names in units:
            entry = _entry(g, names)
            try:
                if block is None:
                    calls = _chain(g, names, entry)
                    items.append((None, 0, _fill(calls, [str(v) for _, v in _slots(calls)])))
                    continue
                body = unit_body(g, names, entry)
            except NoSpecForm as why:
                notes.append(f"{block or stage}: {why}")
                items.append((None, 0, f"# {block or stage}: no spec form ({why})"))
                continue
            kind = record(g, names[0]).kind or "unit"
            key = (kind, body.key())
            d = defs.get(key)
            if d is None:
                same = sum(k[0] == kind for k in defs)
                d = defs[key] = Definition(kind if not same else f"{kind}{same + 1}")
            d.bodies.append(body)
            d.c_in.append(record(g, entry).shape[0])
            d.c_out.append(record(g, names[-1]).shape[0])
            items.append((d, len(d.bodies) - 1, ""))
    for d in defs.values():
        try:
            d.solve()
        except NoSpecForm as why:
            notes.append(str(why))
    lines = [f"# {g.graph['name']}: written by `sedsl import` from {g.graph.get('file', '')}",
             "", f"network {g.graph['name']} {{",
             f"  input {'x'.join(map(str, g.graph['input']))}"]
    for stage, items in placed.items():
        runs = _runs(items)
        if len(runs) == 1:
            lines.append(f"  {stage} = {runs[0]}")
        else:
            lines.append(f"  {stage} = {{")
            lines += [f"    {c}" for c in runs]
            lines.append("  }")
    lines.append("}")
    for d in defs.values():
        lines += ["", *d.text()]
    if se_text.strip():
        lines += ["", se_text.strip()]
    for note in notes:
        lines.insert(1, f"# no spec form: {note}")
    return Written("\n".join(lines) + "\n", notes)


def _entry(g: Graph, names: list[str]) -> str:
    inside = set(names)
    outside = [u for n in names for u in inputs(g, n) if u not in inside]
    return outside[0] if outside else "input"


def _runs(items: list[tuple[Definition | None, int, str]]) -> list[str]:
    """Calls, with a call followed by equal calls at stride 1 written once with `* n`."""
    out: list[str] = []
    last: tuple[Definition, list[int], int] | None = None
    for d, k, text in items:
        if d is None:
            if last is not None:
                out.append(_call(*last))
                last = None
            out.append(text)
            continue
        args = d.args(k)
        if last is not None and last[0] is d and _unit_stride(d, last[1]) == args:
            last = (d, last[1], last[2] + 1)
            continue
        if last is not None:
            out.append(_call(*last))
        last = (d, args, 1)
    if last is not None:
        out.append(_call(*last))
    return out


def _unit_stride(d: Definition, args: list[int]) -> list[int]:
    return [1 if p == "stride" else a for p, a in zip(d.params, args, strict=True)]


def _call(d: Definition, args: list[int], n: int) -> str:
    shown = [f"stride = {a}" if p == "stride" else str(a)
             for p, a in zip(d.params, args, strict=True) if not (p == "stride" and a == 1)]
    call = d.name + (f"({', '.join(shown)})" if shown else "")
    return call + (f" * {n}" if n > 1 else "")
