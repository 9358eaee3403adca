"""SE rules from SE blocks: the `se { }` section whose rules put given attention blocks into a
base graph, exactly those and no others.

`sedsl.from_torch` finds a model's own attention modules (sedsl.pytorch.attention) and `sedsl
import` writes them back as rules; both need, in the names of one graph, the rules that place
exactly those blocks. Each block is `Wanted`: the tensor it recalibrates, the inputs its output
feeds, its variant and settings, and its sizes (the reduced width, ECA's kernel). `infer` finds
each block's instance and point (`at residual.end`, `block.end`, ... or `after LAYER`), groups
the blocks of one kind, point and settings into one rule, finds the reduction (ratio, round,
base) that gives every block its width (an explicit `width` where none does), and limits a rule
with `in` ranges where its kind and point alone would select other instances too. The rules are
then planned on the graph and compared with what was wanted (`check`): a difference is refused,
never written.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from sedsl.compile.passes import (
    OUTPUT,
    Insertion,
    Point,
    block_input_channels,
    find_point,
    instances,
    plan_se,
    scopes,
    se_units,
    subtrees,
)
from sedsl.compile.se_rules import parse_se
from sedsl.errors import Span, SpecError
from sedsl.ir.graph import Graph
from sedsl.ir.node import record
from sedsl.ir.se import SETTINGS, VARIANTS, SeConfig, SeRule, SeSettings
from sedsl.record import Record

Consumers = frozenset[tuple[str, int]]
Places = Mapping[tuple[str, Consumers], tuple[str, str, str]]  # block -> (instance, at, point)
Channels = Mapping[str, "int | None"]  # instance -> its input channels (None: several inputs)


class Wanted(Record):
    """An attention block a base graph should carry: the tensor it recalibrates (`producer`),
    the inputs its output feeds (`consumers`; passes.OUTPUT for the network's output), what it
    is (`settings`: the variant and the settings its module fixes, widths aside) and its sizes:
    the reduced width `rd` and ECA's `kernel` (None where the variant has none). `name` says
    where it came from, for errors (`layer1.0.se (SEModule)`)."""

    producer: str
    consumers: Consumers
    settings: SeSettings
    rd: int | None
    kernel: int | None
    name: str

    @property
    def key(self) -> tuple[str, Consumers]:
        return self.producer, self.consumers


SIZED = frozenset({"ratio", "width", "round", "round_limit", "base", "kernel", "gamma", "beta"})


def fixed(s: SeSettings) -> SeSettings:
    """The settings that say what a block is, its sizes (width, ECA's kernel) aside."""
    return SeSettings().set(**{k: getattr(s, k) for k in SETTINGS
                               if k in s.given and k not in SIZED})


class NoRule(SpecError):
    """An attention block that no SE rule places where it is."""


_SPAN = Span("<se>", 1, 1, 1, 1)
# Points a rule may name, in the order they are tried (the first that fits is written).
_POINTS = ("residual.end", "shortcut.end", "block.end", "residual.start", "block.start")


def infer(g: Graph, wanted: Sequence[Wanted]) -> str:
    """The `se { ... }` text whose rules put exactly `wanted` into the base graph `g` (names are
    `g`'s), or NoRule naming a block no rule places; the rules are checked by planning them."""
    if not wanted:
        return ""
    found, members = instances(g), subtrees(g)
    places = {w.key: _locate(g, w, found, members) for w in wanted}
    c_in = {b: _input_channels(g, members[b]) for b, _, _ in places.values()}
    wanted = [Wanted(w.producer, w.consumers, fixed(w.settings), w.rd, w.kernel, w.name)
              for w in wanted]
    groups: dict[tuple[Any, ...], list[Wanted]] = {}
    for w in wanted:
        block, where, target = places[w.key]
        groups.setdefault((found[block], where, target, w.settings), []).append(w)
    for attempt in ("joint", "group", "width"):
        rules: list[Rule] = []
        joint = _joint(g, wanted, places, c_in) if attempt == "joint" else {}
        for (kind, where, target, _), ws in groups.items():
            for sizes, part in _sizes(g, ws, places, c_in, attempt, joint):
                blocks = [places[w.key][0] for w in part]
                ranges = _ranges(g, blocks, kind, where, target, found, members)
                rules.append((where, target, ranges, (kind,) if kind else (),
                              part[0].settings.set(**sizes)))
        text = _text(_merge(rules))
        if _fits(g, parse_se(text), wanted):
            return text
    w = wanted[0]
    raise NoRule(f"{w.name}: no set of SE rules reproduces this model's attention blocks",
                 None, "tell the maintainers: sedsl should write every block it recognises")


def check(g: Graph, config: SeConfig, wanted: Sequence[Wanted]) -> None:
    """NoRule unless `config` puts exactly `wanted` into `g`."""
    if not _fits(g, config, wanted):
        raise NoRule("the SE rules do not reproduce the model's attention blocks", None,
                     "this is a bug in sedsl's rule inference; tell the maintainers")


def _fits(g: Graph, config: SeConfig, wanted: Sequence[Wanted]) -> bool:
    try:
        plan = plan_se(g, config)
    except SpecError:
        return False
    got = {(i.point.producer, frozenset(i.point.consumers)): i for i in plan}
    if len(got) != len(plan) or set(got) != {w.key for w in wanted}:
        return False
    return all(_same(g, got[w.key], w) for w in wanted)


def _same(g: Graph, ins: Insertion, w: Wanted) -> bool:
    """Whether a planned insertion builds the wanted block: the same steps, ops and sizes."""
    s, want = ins.settings.resolved(), w.settings.resolved()
    c = record(g, ins.point.producer).shape[0]
    base = c if ins.in_channels is None else ins.in_channels
    if w.rd is not None and s.reduced(base) != w.rd:
        return False
    if w.kernel is not None and s.eca_kernel(c) != w.kernel:
        return False
    return all(getattr(s, k) == getattr(want, k) for k in SETTINGS if k not in SIZED)


# --- where each block is -------------------------------------------------------------------------


def _probe(where: str, target: str) -> SeRule:
    return SeRule(where, target, (), (), SeSettings(), _SPAN)


def _locate(g: Graph, w: Wanted, found: Mapping[str, str | None],
            members: Mapping[str, set[str]]) -> tuple[str, str, str]:
    """(block instance, "at" or "after", point or layer) of a rule that reaches this block."""
    nodes = {w.producer} | {n for n, _ in w.consumers if (n, 0) != OUTPUT}
    holders = [b for b in found if found[b] is not None and nodes & members.get(b, set())]
    holders.sort(key=lambda b: -b.count("."))  # innermost first (a stable sort: network order)
    for block in holders:
        inside = members[block]
        forms = [("at", p) for p in _POINTS]
        if w.producer in inside and w.producer.startswith(block + "."):
            forms.append(("after", w.producer[len(block) + 1:]))
        for where, target in forms:
            point = _point(g, block, where, target, inside)
            if point is not None and (point.producer, frozenset(point.consumers)) == w.key:
                return block, where, target
    raise NoRule(f"{w.name} sits where no SE rule places a block: not at a point of a block "
                 "instance (residual.end, block.end, ...) nor right after one of its layers",
                 None, "sedsl places attention blocks inside block instances; a block whose "
                 "input also feeds other layers has no rule")


def _input_channels(g: Graph, inside: set[str]) -> int | None:
    """The block's input channels, or None for a block with several inputs."""
    try:
        return block_input_channels(g, inside)
    except SpecError:
        return None


def _point(g: Graph, block: str, where: str, target: str, inside: set[str]) -> Point | None:
    try:
        return find_point(g, block, _probe(where, target), inside)
    except SpecError:  # an ambiguous point: several residual units in one block
        return None


# --- the reduced width ---------------------------------------------------------------------------

_ROUNDS: tuple[tuple[str | int, float], ...] = (
    ("floor", 0.0), ("ceil", 0.0), *((d, limit) for limit in (0.0, 0.9)
                                     for d in (1, 2, 4, 8, 16, 32)))


def _joint(g: Graph, wanted: Sequence[Wanted], places: Places,
           c_in: Channels) -> dict[SeSettings, dict[str, Any]]:
    """One reduction for all blocks of one settings, where one fits them all (EfficientNet's
    C_in / 4 holds in every block, with or without expansion: `base = block_in`)."""
    by: dict[SeSettings, list[Wanted]] = {}
    for w in wanted:
        by.setdefault(w.settings, []).append(w)
    out = {}
    for settings, ws in by.items():
        fit = _reduction(g, ws, places, c_in)
        if fit is not None:
            out[settings] = fit
    return out


def _sizes(g: Graph, ws: list[Wanted], places: Places, c_in: Channels, attempt: str,
           joint: Mapping[SeSettings, dict[str, Any]]
           ) -> Iterable[tuple[dict[str, Any], list[Wanted]]]:
    """(size settings, the blocks they hold for): one reduction for the group where one fits,
    else one per set of blocks that share their simplest one (a per-stage ratio), else an
    explicit width per width; ECA's kernel `auto` where timm's rule gives it."""
    parts: list[tuple[dict[str, Any], list[Wanted]]] = []
    fit = joint.get(ws[0].settings) if attempt == "joint" else None
    if fit is None and attempt != "width":
        fit = _reduction(g, ws, places, c_in)
    if fit is not None or all(w.rd is None for w in ws):
        parts = [(fit or {}, ws)]
    elif attempt != "width":
        own = [(w, _reduction(g, [w], places, c_in)) for w in ws]
        if all(r is not None for _, r in own):
            for w, r in own:
                group = next((p for p in parts if p[0] == r), None)
                if group is None:
                    parts.append((r or {}, [w]))
                else:
                    group[1].append(w)
    if not parts:
        by_rd: dict[int | None, list[Wanted]] = {}
        for w in ws:
            by_rd.setdefault(w.rd, []).append(w)
        parts = [({"width": rd} if rd is not None else {}, part) for rd, part in by_rd.items()]
    for sizes, part in parts:
        if all(w.kernel is None or w.kernel == _auto_kernel(g, w) for w in part):
            yield sizes, part
            continue
        by_k: dict[int | None, list[Wanted]] = {}
        for w in part:
            by_k.setdefault(w.kernel, []).append(w)
        for k, same in by_k.items():
            yield ({**sizes, "kernel": k} if k is not None else sizes), same


def _auto_kernel(g: Graph, w: Wanted) -> int:
    return w.settings.set(kernel="auto").resolved().eca_kernel(record(g, w.producer).shape[0])


def _reduction(g: Graph, ws: Sequence[Wanted], places: Places,
               c_in: Channels) -> dict[str, Any] | None:
    """The simplest ratio, rounding and base that give every block its width, or None."""
    if any(w.rd is None for w in ws):
        return None if any(w.rd is not None for w in ws) else {}
    bases = {"channels": [record(g, w.producer).shape[0] for w in ws]}
    entering = [c_in[places[w.key][0]] for w in ws]
    if None not in entering:
        bases["block_in"] = [c for c in entering if c is not None]
    widths = [w.rd for w in ws]
    settings = ws[0].settings
    best: tuple[tuple[Any, ...], dict[str, Any]] | None = None
    for base, channels in bases.items():
        ratios = {Fraction(c, rd) for c, rd in zip(channels, widths, strict=True) if rd}
        ratios |= {Fraction(r) for r in (2, 4, 8, 16, 24, 32)}
        for ratio, (rnd, limit) in itertools.product(sorted(ratios), _ROUNDS):
            if ratio.denominator & (ratio.denominator - 1) or ratio <= 0:
                continue  # not exact as a decimal number in the spec
            r: int | float = int(ratio) if ratio.denominator == 1 else float(ratio)
            s = settings.set(ratio=r, round=rnd, round_limit=limit, base=base).resolved()
            if all(s.reduced(c) == rd for c, rd in zip(channels, widths, strict=True)):
                values = {"ratio": r, "round": rnd, "round_limit": limit, "base": base}
                written = _written(settings.set(**values))
                score = (len(written), ratio.denominator != 1, base != "channels", ratio)
                if best is None or score < best[0]:
                    best = (score, values)
    return None if best is None else best[1]


# --- which instances ----------------------------------------------------------------------------


def _ranges(g: Graph, blocks: list[str], kind: str | None, where: str, target: str,
            found: Mapping[str, str | None], members: Mapping[str, set[str]]) -> list[str]:
    """`in` ranges that select exactly `blocks` among the instances of `kind` that have the
    point (none: the kind alone selects them)."""
    able = [b for b in found if found[b] == kind
            and _point(g, b, where, target, members.get(b, set())) is not None]
    chosen = set(blocks)
    if chosen == set(able):
        return []
    tree = scopes(g)

    def under(scope: str, among: Iterable[str]) -> set[str]:
        return {b for b in among if not scope or b == scope or b.startswith(scope + ".")}

    def pick(scope: str) -> list[str]:
        mine, all_ = under(scope, chosen), under(scope, able)
        if not mine:
            return []
        if mine == all_:
            return [scope] if scope else []
        out: list[str] = []
        run: list[str] = []  # a run of whole siblings (and siblings without such instances)
        for child in tree.get(scope, []):
            m, a = under(child, chosen), under(child, able)
            if m and m == a:
                run.append(child)
                continue
            if not a and run:
                run.append(child)
                continue
            out += _run(run)
            run = []
            if m:
                out += pick(child)
        return out + _run(run)

    return pick("")


def _run(run: list[str]) -> list[str]:
    """A run of sibling scopes as one range (trailing siblings without instances dropped)."""
    if not run:
        return []
    first, last = run[0], run[-1]
    return [first if first == last else f"{first}..{last.rsplit('.', 1)[-1]}"]


# --- the text -----------------------------------------------------------------------------------


Rule = tuple[str, str, list[str], tuple[str, ...], SeSettings]


def _merge(rules: list[Rule]) -> list[Rule]:
    """Rules that differ only in their kind, without ranges, as one (`of A, B`)."""
    out: list[Rule] = []
    for where, target, ranges, kinds, s in rules:
        same = next((i for i, r in enumerate(out) if not ranges and not r[2]
                     and (r[0], r[1], r[4]) == (where, target, s)), None)
        if same is None:
            out.append((where, target, ranges, kinds, s))
        else:
            r = out[same]
            out[same] = (r[0], r[1], r[2], (*r[3], *kinds), r[4])
    return out


def _written(s: SeSettings) -> dict[str, Any]:
    """The settings a rule must state: those that differ from its variant's defaults (with the
    width, ratio and rounding that do not matter left out)."""
    mine, default = s.resolved(), SeSettings(variant=s.variant).resolved()
    out = {k: getattr(mine, k) for k in SETTINGS if getattr(mine, k) != getattr(default, k)}
    if "width" in out:
        for k in ("ratio", "round", "round_limit", "base"):
            out.pop(k, None)
    if out.get("round") in ("floor", "ceil"):
        out.pop("round_limit", None)
    out.pop("variant", None)
    return {"variant": mine.variant, **out} if mine.variant != "se" else out


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _text(rules: list[Rule]) -> str:
    """The section: settings every rule shares first, then one rule per line."""
    own = [_written(s) for *_, s in rules]
    shared = {k: v for k, v in own[0].items() if all(o.get(k, v) == v and k in o for o in own)}
    lines = [f"  {k} = {_value(v)}" for k, v in sorted(shared.items(), key=_order)]
    for (where, target, ranges, kinds, _), settings in zip(rules, own, strict=True):
        line = f"  {where} {target}"
        if ranges:
            line += " in " + ", ".join(ranges)
        if kinds:
            line += " of " + ", ".join(kinds)
        rest = sorted(((k, v) for k, v in settings.items() if k not in shared), key=_order)
        if rest:
            line += " { " + ", ".join(f"{k} = {_value(v)}" for k, v in rest) + " }"
        lines.append(line)
    return "se {\n" + "\n".join(lines) + "\n}\n"


def _order(item: tuple[str, Any]) -> int:
    return SETTINGS.index(item[0])


# --- the blocks a graph carries -------------------------------------------------------------------


def units_at(g: Graph) -> dict[tuple[str, Consumers], str]:
    """(the tensor an SE block recalibrates, the inputs its output feeds) -> the block's unit
    name, for every (unfused) SE block of `g`."""
    out = {}
    for unit, steps in se_units(g).items():
        nodes = set(steps.values())
        (x,) = {u for n in nodes for u in g.predecessors(n) if u not in nodes}
        tag = record(g, next(iter(nodes))).se
        assert tag is not None
        last = steps[VARIANTS[tag.settings.variant].steps_for(tag.settings)[-1].name]
        consumers = {(v, p) for _, v, p in g.out_edges(last, data="port")}
        if g.graph.get("output") == last:
            consumers.add(OUTPUT)
        out[(str(x), frozenset(consumers))] = unit
    return out


# --- what a rule reaches -------------------------------------------------------------------------


def coverage_notes(g: Graph, config: SeConfig) -> list[str]:
    """A note for each rule at a residual unit's point (`residual.end`, `residual.start`,
    `shortcut.end`) that reaches some but not all of the adds in the blocks it selects: an add
    that is no residual unit sedsl recognises (or one of several in a block) gets no block."""
    from sedsl.compile.passes import select_blocks

    notes = []
    tree, found, members = scopes(g), instances(g), subtrees(g)
    for rule in config.rules:
        if rule.where != "at" or rule.target.split(".")[0] not in ("residual", "shortcut"):
            continue
        try:
            blocks = select_blocks(g, rule, tree, found)
        except SpecError:
            continue  # the rule's own error is raised where it is applied
        reached, adds = 0, []
        for block in blocks:
            inside = members.get(block, set())
            if _point(g, block, "at", rule.target, inside) is not None:
                reached += 1
            adds += [n for n in inside if record(g, n).op == "add" and record(g, n).role == "base"
                     and record(g, n).block == block]
        if reached < len(adds):
            missed = [n for n in adds if "branches" not in record(g, n).attrs] or adds
            shown = ", ".join(f"`{n}`" for n in sorted(missed)[:3])
            notes.append(f"`at {rule.target}` reaches {reached} of the {len(adds)} adds in the "
                         f"blocks it selects; not reached: {shown}"
                         + (" ..." if len(missed) > 3 else ""))
    return notes
