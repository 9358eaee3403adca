"""Passes: plain functions graph -> graph, with names. None mutates its input, and `run` checks
the IR's invariants after each one (a failure there is a bug in the pass: `CompilerError`).

    pipeline(se): apply_se            (what `sedsl.load` runs; idempotent)
    LOWERING:     fuse_se             (what the fused torch lowering runs on top)
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Iterable
from functools import partial

from sedsl.errors import CompilerError, Span, SpecError, did_you_mean
from sedsl.ir.graph import Graph, find_cycle
from sedsl.ir.node import ROLES, Node, SeTag, inputs, record, records
from sedsl.ir.ops import OPS, TRANSFORMS, Attr, Shape, Transform
from sedsl.ir.se import (
    STEP_KINDS,
    VARIANTS,
    Block,
    SeConfig,
    SeRule,
    SeSettings,
    Step,
    identity_problem,
    statistic,
    step_activations,
    step_kind_supported,
)
from sedsl.ir.vocab import KERNEL_ACTIVATIONS
from sedsl.record import Record
from sedsl.record import replace as replace_record

OUTPUT = ("<output>", 0)  # a pseudo-consumer: the graph's output


class Pass(Record):
    """A named rewrite of the graph."""

    name: str
    run: Callable[[Graph], Graph]


def run(g: Graph, passes: Iterable[Pass], after: str | None = None) -> Graph:
    """Run `passes` in order, verifying the graph after each; stop after the pass `after`."""
    for p in passes:
        g = verify(p.run(g), p.name)
        if p.name == after:
            break
    return g


# --- where blocks are ---------------------------------------------------------------------------


class Point(Record):
    """A tensor inside a block where an SE block can go: its producer, the consumers to rewire."""

    producer: str
    consumers: tuple[tuple[str, int], ...]  # (node, port); OUTPUT for the network's output
    branch: str | None


def instances(g: Graph) -> dict[str, str | None]:
    """Block instance path -> its block kind, in network order: every instance the elaborator
    placed (g.graph["blocks"]), also those whose layers all sit in named sub-blocks."""
    found: dict[str, str | None] = dict(g.graph.get("blocks", {}))
    for _, rec in records(g):  # graphs made elsewhere may not list their blocks
        if rec.block is not None and rec.block not in found:
            found[rec.block] = rec.kind
    return found


def scopes(g: Graph) -> dict[str, list[str]]:
    """Scope path -> its child scopes in network order ("" is the root)."""
    children: dict[str, list[str]] = {}
    for name in g.nodes:
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent, child = ".".join(parts[: i - 1]), ".".join(parts[:i])
            siblings = children.setdefault(parent, [])
            if child not in siblings:
                siblings.append(child)
    return children


def subtrees(g: Graph) -> dict[str, set[str]]:
    """Block instance -> its nodes, nested instances' included; one pass over the graph, so that
    placing SE blocks stays linear in its size."""
    out: dict[str, set[str]] = {}
    for n, r in records(g):
        if r.block is not None:
            parts = r.block.split(".")
            for i in range(1, len(parts) + 1):
                out.setdefault(".".join(parts[:i]), set()).add(n)
    return out


def _consumers(g: Graph, node: str) -> tuple[tuple[str, int], ...]:
    out = tuple((v, p) for _, v, p in g.out_edges(node, data="port"))
    return out + ((OUTPUT,) if g.graph.get("output") == node else ())


def find_point(g: Graph, block: str, rule: SeRule, inside: set[str]) -> Point | None:
    """Where `rule` puts an SE block in `block` (whose nodes are `inside`), or None if the block
    has no such point."""
    if rule.where == "after":
        node = f"{block}.{rule.target}"
        return Point(node, _consumers(g, node), record(g, node).branch) if node in inside else None
    branch, end = rule.target.rsplit(".", 1)
    if branch == "block":
        return _exit(g, inside) if end == "end" else _entry(g, inside, None)
    merges = [n for n in inside if record(g, n).block == block
              and branch in record(g, n).attrs.get("branches", ())]  # type: ignore[operator]
    if len(merges) > 1:
        raise SpecError(f"`{rule.target}` is ambiguous in {block}: it has {len(merges)} "
                        f"`{branch}` branches", rule.span, "name the units apart")
    if not merges:
        return None
    merge = merges[0]
    port = record(g, merge).attrs["branches"].index(branch)  # type: ignore[union-attr]
    members = {n for n in inside if record(g, n).branch == branch and record(g, n).block == block}
    if end == "start" and members:
        return _entry(g, members, branch)
    return Point(inputs(g, merge)[port], ((merge, port),), branch)  # the end, or an empty branch


def _entry(g: Graph, members: set[str], branch: str | None) -> Point | None:
    """The tensor flowing into a set of nodes, and the edges that carry it in."""
    edges = [(u, v, p) for u, v, p in g.in_edges(members, data="port") if u not in members]
    producers = {u for u, _, _ in edges}
    if len(producers) != 1:
        return None
    return Point(producers.pop(), tuple((v, p) for _, v, p in edges), branch)


def _exit(g: Graph, members: set[str]) -> Point | None:
    """The tensor leaving a set of nodes, and all its consumers."""
    last = [n for n in members if any(c[0] not in members for c in _consumers(g, n))]
    return Point(last[0], _consumers(g, last[0]), None) if len(last) == 1 else None


def _select(g: Graph, rule: SeRule, tree: dict[str, list[str]],
            found: dict[str, str | None]) -> list[str]:
    """The block instances a rule's `in` and `of` clauses pick, in network order."""
    chosen: list[str] = []
    for first, last, span in rule.ranges:
        parent = first.rsplit(".", 1)[0] if "." in first else ""
        if last is not None and parent and not last.startswith(parent + "."):
            last = f"{parent}.{last}"  # conv4.block1..block3
        siblings = tree.get(parent, [])
        for end in (first, last):
            if end is not None and end not in siblings:
                raise SpecError(f"no block or stage is called `{end}`", span,
                                did_you_mean(end.rsplit(".", 1)[-1],
                                             [s.rsplit(".", 1)[-1] for s in siblings]))
        i = siblings.index(first)
        j = siblings.index(last) if last is not None else i
        if j < i:
            raise SpecError(f"`{first}..{last}` runs backwards", span)
        chosen += siblings[i : j + 1]
    picked = [b for b in found
              if not chosen or any(b == s or b.startswith(s + ".") for s in chosen)]
    for kind in rule.kinds:
        if kind not in found.values():
            raise SpecError(f"no block of kind `{kind}` in this network", rule.span,
                            did_you_mean(kind, [k for k in found.values() if k]))
    return [b for b in picked if not rule.kinds or found[b] in rule.kinds]


select_blocks = _select  # the instances a rule selects (sedsl.compile.se_infer's notes)


# --- apply_se -----------------------------------------------------------------------------------


class Insertion(Record):
    block: str
    kind: str | None
    point: Point
    settings: SeSettings
    span: Span
    in_channels: int | None  # channels entering the block instance, where `base` asks for them


def plan_se(g: Graph, se: SeConfig) -> list[Insertion]:
    """Resolve the SE rules against a base graph: one insertion per point, the last rule wins."""
    tree, found, members = scopes(g), instances(g), subtrees(g)
    plan: dict[tuple[str, tuple[tuple[str, int], ...]], tuple[int, Insertion]] = {}
    for i, rule in enumerate(se.rules):
        matched = 0
        for block in _select(g, rule, tree, found):
            point = find_point(g, block, rule, members.get(block, set()))
            if point is None or (len(record(g, point.producer).shape) != 3 and not rule.kinds
                                 and rule.where == "at"):
                continue  # no such point; or flat features (a classifier head's block.end)
            matched += 1
            key = (point.producer, point.consumers)
            if key not in plan or plan[key][0] != i:  # nested blocks share points: first wins
                entering = None if rule.settings.base == "channels" \
                    else block_input_channels(g, members[block])
                plan[key] = (i, Insertion(block, found[block], point, rule.settings, rule.span,
                                          entering))
        if not matched:
            where = " in " + ", ".join(a + (f"..{b}" if b else "") for a, b, _ in rule.ranges) \
                if rule.ranges else ""
            what = f"a layer `{rule.target}`" if rule.where == "after" else f"a `{rule.target}`"
            raise SpecError(f"this SE rule matches nothing: no block{where} has {what}",
                            rule.span, _rule_hint(g, rule))
    return [ins for _, ins in plan.values() if ins.settings.enabled]


def _rule_hint(g: Graph, rule: SeRule) -> str:
    found = instances(g)
    kinds = sorted({k for k in found.values() if k})
    if rule.where == "after":
        return "name a layer of the block, e.g. `after relu2`"
    return ("residual units have residual.start/.end and shortcut.end; every block has "
            f"block.start/.end; block kinds here: {', '.join(kinds) or 'none'}")


def apply_se(g: Graph, se: SeConfig) -> Graph:
    """The graph with the SE blocks `se` asks for, and no others: SE blocks already in `g` are
    removed first, so applying the same configuration twice gives the same graph."""
    base = strip_se(g)
    return insert_se(base, plan_se(base, se))


def strip_se(g: Graph) -> Graph:
    """The graph without its (unfused) SE blocks: each block's consumers read its input again."""
    units = se_units(g)
    if not units:
        return g
    if any(r.op == "se" for _, r in records(g)):
        raise ValueError("SE blocks are fused already: apply SE rules before `fuse_se`")
    source = {}  # an SE block's output -> the tensor it recalibrated
    for steps in units.values():
        source[steps[_last_step(g, steps)]] = _unit_input(g, set(steps.values()))
    drop = {n for steps in units.values() for n in steps.values()}

    def origin(node: str) -> str:
        while node in source:
            node = source[node]
        return node

    out = Graph(**{**g.graph, "output": origin(g.graph["output"])})
    for name, rec in records(g):
        if name not in drop:
            out.add_node(name, record=rec)
    for u, v, p in g.edges(data="port"):
        if v not in drop:
            out.add_edge(origin(u), v, port=p)
    return out


def _unit_input(g: Graph, members: set[str]) -> str:
    """The tensor an attention block recalibrates: the one producer outside it feeding it."""
    (x,) = {u for n in members for u in g.predecessors(n) if u not in members}
    return str(x)


def se_units(g: Graph) -> dict[str, dict[str, str]]:
    """SE block -> its steps (step name -> node), in network order, from the nodes' SE tags."""
    units: dict[str, dict[str, str]] = {}
    for name, rec in records(g):
        if rec.se is not None:
            units.setdefault(rec.se.unit, {})[rec.se.step] = name
    return units


def _last_step(g: Graph, steps: dict[str, str]) -> str:
    """The step whose output leaves the SE block (its scale)."""
    tag = record(g, next(iter(steps.values()))).se
    assert tag is not None
    return VARIANTS[tag.settings.variant].steps_for(tag.settings)[-1].name


def insert_se(g: Graph, plan: Iterable[Insertion]) -> Graph:
    """Add one SE block per insertion, right after the tensor it scales. Points on one tensor
    may overlap (a block's `block.end` feeds the next block's `residual.start`): the SE block
    whose point covers more of the tensor's consumers comes first, and the narrower one
    recalibrates its output, whatever the order of the rules."""
    plan = list(plan)
    source = {(v, p): u for u, v, p in g.edges(data="port")}
    source[OUTPUT] = g.graph["output"]
    follows: dict[str, list[tuple[str, Node, list[str]]]] = {}  # node -> SE nodes after it
    taken = {name.rsplit(".", i)[0] for name in g.nodes for i in range(name.count(".") + 1)}
    scopes = [_unit_name(ins.block, taken) for ins in plan]  # named in the rules' order
    order = sorted(range(len(plan)), key=lambda i: -len(plan[i].point.consumers))
    for i in order:
        ins = plan[i]
        u = _recalibrated(source, ins, plan) if ins.point.consumers else ins.point.producer
        nodes = _se_nodes(g, ins, u, scopes[i])
        follows.setdefault(u, []).extend(nodes)
        for consumer in ins.point.consumers:
            source[consumer] = nodes[-1][0]
    out = Graph(**{**g.graph, "output": source[OUTPUT]})

    def emit(name: str) -> None:
        for se_name, rec, _ in follows.get(name, []):
            out.add_node(se_name, record=rec)
            emit(se_name)

    for name, rec in records(g):
        out.add_node(name, record=rec)
        emit(name)
    for (v, p), u in source.items():
        if (v, p) != OUTPUT:
            out.add_edge(u, v, port=p)
    for chain in follows.values():
        for name, _, srcs in chain:
            for p, u in enumerate(srcs):
                out.add_edge(u, name, port=p)
    return out


def _recalibrated(source: dict[tuple[str, int], str], ins: Insertion,
                  plan: list[Insertion]) -> str:
    """The tensor an insertion's consumers read now: the point's own, or the output of an SE
    block already placed on a wider point of it. Two points that share some consumers but not
    all cannot both be honoured."""
    now = {source[c] for c in ins.point.consumers}
    if len(now) > 1:
        other = next((o for o in plan if o is not ins and o.point.producer == ins.point.producer
                      and set(o.point.consumers) & set(ins.point.consumers)), ins)
        raise SpecError(f"this SE block in {ins.block} overlaps another one on the same tensor "
                        f"(the rule at line {other.span.line}) without containing it", ins.span,
                        "put the two blocks at points that do not share a tensor")
    return now.pop()


def _se_nodes(g: Graph, ins: Insertion, u: str, scope: str) -> list[tuple[str, Node, list[str]]]:
    """The steps of the block's variant as nodes named `scope`.<step> (<block>.se[k]),
    recalibrating `u`: each step kind builds its op and attributes, the op table gives the
    shape. `u` is the point's tensor or an SE block's output on it: the same shape."""
    s, shape = ins.settings.resolved(), record(g, ins.point.producer).shape
    if len(shape) != 3:
        raise SpecError(f"an SE block needs a CxHxW feature map; {ins.block} has a flat one here",
                        ins.span)
    steps = VARIANTS[s.variant].steps_for(s)
    problem, identity = identity_problem(s), VARIANTS[s.variant].identity
    if problem is not None:  # se_rules refuses these; settings made in Python may not be
        raise SpecError(problem, ins.span)
    marks = dict(identity.marks) if s.init == "identity" and identity is not None else {}
    base = shape[0] if ins.in_channels is None else ins.in_channels
    rd = s.reduced(base)
    if rd < 1 and any("rd" in (step.width, step.arg("c_in")) for step in steps):
        raise SpecError(f"ratio {s.ratio} leaves no channels in the SE block of {ins.block} "
                        f"({base} / {s.ratio} rounds to {rd})", ins.span,
                        "use a smaller ratio here, or an explicit width")
    tag = partial(SeTag, unit=scope, settings=s, channels=shape[0], base_channels=base,
                  rd_channels=rd)
    names: dict[str, str] = {"x": u}
    shapes: dict[str, Shape] = {"x": shape}
    nodes: list[tuple[str, Node, list[str]]] = []
    for step in steps:
        names["prev"], shapes["prev"] = names.get("prev", u), shapes.get("prev", shape)
        op, attrs = STEP_KINDS[step.kind].build(step, Block(s, shape, rd, dict(shapes)))
        if step.name in marks:  # init = identity: the lowering starts this node at `init`
            attrs = {**attrs, "init": marks[step.name]}
        srcs = [names[i] for i in step.sources()]
        try:
            out = OPS[op].infer(attrs, [shapes[i] for i in step.sources()])
        except SpecError as err:
            raise SpecError(f"the `{s.variant}` block of {ins.block} does not fit here: "
                            f"{err.message}", ins.span, err.hint) from None
        rec = Node(op, attrs, out, ins.block.split(".")[0], ins.block, ins.kind,
                   ins.point.branch, "se", ins.span, tag(step=step.name))
        names[step.name] = names["prev"] = f"{scope}.{step.name}"
        shapes[step.name] = shapes["prev"] = out
        nodes.append((names[step.name], rec, srcs))
    if shapes["prev"] != shape:
        raise SpecError(f"the `{s.variant}` block of {ins.block} would change its "
                        f"{'x'.join(map(str, shape))} input", ins.span)
    return nodes


def _unit_name(block: str, taken: set[str]) -> str:
    """`<block>.se`, or `.se2`, `.se3` ... when the block has several SE blocks; `taken` holds
    every node name and every prefix of one."""
    scope, k = f"{block}.se", 1
    while scope in taken:
        k += 1
        scope = f"{block}.se{k}"
    taken.add(scope)
    return scope


def block_input_channels(g: Graph, inside: set[str]) -> int:
    """Channels of the tensor entering a block instance (whose nodes are `inside`)."""
    entry = _entry(g, inside, None)
    if entry is None:
        block = record(g, next(iter(inside))).block
        raise SpecError(f"`base = block_in` needs the block's input channels, but {block} has "
                        "several inputs", None, "use base = channels here")
    return record(g, entry.producer).shape[0]


# --- fuse_se ------------------------------------------------------------------------------------


def fuse_se(g: Graph) -> Graph:
    """[BN ->] SE block [+ residual add [+ activation]] -> one `se` node (the fused kernel), for
    every attention block the kernels implement (`fused_transform`: its variant names the fused
    op's transform, sedsl.ir.ops.TRANSFORMS); the others stay plain ops. Where the transform
    takes one, a BN whose output only the block reads is folded in (`_folded_bn`): the node then
    reads the BN's input and names the BN in its attributes, whose module the lowering keeps."""
    fusions = []
    claimed: set[str] = set()  # an add both of whose inputs are SE blocks joins one of them
    for steps in se_units(g).values():
        fusion = _match_se(g, steps, claimed)
        if fusion is not None:
            fusions.append(fusion)
            claimed.update(fusion[1])
    if not fusions:
        return g
    drop = {n for f in fusions for n in f[1]}
    first = {f[1][0]: f for f in fusions}
    out = Graph(**g.graph)
    rename = {n: f[0] for f in fusions for n in f[1]}
    for name, rec in records(g):
        if name in first:
            unit, _, fused, _ = first[name]
            out.add_node(unit, record=fused)
        elif name not in drop:
            out.add_node(name, record=rec)
    for unit, _, _, srcs in fusions:
        for p, u in enumerate(srcs):
            out.add_edge(rename.get(u, u), unit, port=p)
    for u, v, p in g.edges(data="port"):
        if v not in drop:
            out.add_edge(rename.get(u, u), v, port=p)
    out.graph["output"] = rename.get(g.graph["output"], g.graph["output"])
    return out


def kernel_supports(s: SeSettings) -> bool:
    """Whether the fused kernels compute an attention block with these (resolved) settings."""
    return fused_transform(s) is not None


def fused_transform(s: SeSettings) -> str | None:
    """The transform (sedsl.ir.ops.TRANSFORMS) with which the fused ops compute an attention
    block with these (resolved) settings: the variant's own op (`Variant.fused`) where it
    computes exactly these steps, else the generic one where the step kinds have its shape
    (`_generic_supports`), else None: plain ops."""
    variant = VARIANTS[s.variant]
    steps = variant.steps_for(s)
    if variant.fused is not None and _op_supports(TRANSFORMS[variant.fused], steps, s):
        return variant.fused
    generic = next(t for t in TRANSFORMS.values() if t.generic)
    return generic.name if _generic_supports(steps, s, generic) else None


def _op_supports(transform: Transform, steps: tuple[Step, ...], s: SeSettings) -> bool:
    """A dedicated op's rule: the steps are exactly squeeze, the transform's, gate, scale,
    every kind a kernel's, its squeeze one the transform takes, and the activations its steps
    apply kernel activations."""
    variant = VARIANTS[s.variant]
    if tuple(step.kind for step in steps) != ("squeeze", *transform.steps, "gate", "scale"):
        return False
    return (step_kind_supported(variant, s)
            and steps[0].arg("mode", s.squeeze) in transform.squeezes  # the step's own or the
            # setting (GCT's squeeze is l2 whatever `squeeze` says)
            and float(steps[-1].arg("offset", 0.0)) == transform.offset
            and step_activations(variant, s) <= KERNEL_ACTIVATIONS)


def _generic_supports(steps: tuple[Step, ...], s: SeSettings, transform: Transform) -> bool:
    """The generic transform's rule: a statistic the kernel computes (se.statistic), then steps
    that act on the squeezed vectors alone, each reading the one before (a chain of modules),
    then a gate and the scale of x by it (no offset). Their activations may be any: torch
    runs them."""
    stat = statistic(steps, s)
    if stat is None or stat[0] not in transform.squeezes:
        return False
    middle, scale = steps[stat[1]:-1], steps[-1]
    return (bool(middle) and middle[-1].kind == "gate"
            and all(STEP_KINDS[step.kind].per_channel and step.sources() == ("prev",)
                    for step in middle)
            and scale.kind == "scale" and scale.sources() == ("x", "prev")
            and float(scale.arg("offset", 0.0)) == 0.0)


def _mlp_attrs(tag: SeTag, nodes: dict[str, Node]) -> dict[str, Attr]:
    t = tag.settings
    return {"rd_channels": tag.rd_channels, "squeeze": t.squeeze, "excite": t.excite,
            "bias": t.bias}


def _channel_conv_attrs(tag: SeTag, nodes: dict[str, Node]) -> dict[str, Attr]:
    (conv,) = (rec for rec in nodes.values() if rec.op == "channel_conv")
    assert conv.attrs["c_in"] == conv.attrs["c_out"] == 1 and not conv.attrs["bias"], conv.attrs
    return {"kernel": conv.attrs["kernel"], "padding": conv.attrs["padding"]}


def _gct_norm_attrs(tag: SeTag, nodes: dict[str, Node]) -> dict[str, Attr]:
    """GCT's eps (the op takes one for both roots, as the release: the l2 squeeze's is 1e-5)
    and the norm's `init` (init = identity)."""
    (norm,) = (rec for rec in nodes.values() if rec.op == "gct_norm")
    assert norm.attrs["eps"] == 1e-5, norm.attrs
    init = norm.attrs.get("init")
    return {"eps": norm.attrs["eps"], **({"init": init} if init else {})}


def _steps_attrs(tag: SeTag, nodes: dict[str, Node]) -> dict[str, Attr]:
    """The generic transform's: the statistic, and the block's plain nodes as data
    (sedsl.ir.ops.sub_nodes reads them back)."""
    steps = VARIANTS[tag.settings.variant].steps_for(tag.settings)
    stat = statistic(steps, tag.settings)
    assert stat is not None
    attrs: dict[str, Attr] = {"statistic": stat[0],
                              "statistic_steps": tuple(st.name for st in steps[:stat[1]]),
                              "steps": tuple(st.name for st in steps),
                              "ops": tuple(nodes[st.name].op for st in steps)}
    for i, step in enumerate(steps):
        prev = steps[i - 1].name if i else "x"
        attrs[f"{step.name}.inputs"] = tuple(prev if src == "prev" else src
                                             for src in step.sources())
        attrs.update({f"{step.name}.{k}": v for k, v in nodes[step.name].attrs.items()})
    return attrs


# A fused node's own attributes for each transform (see sedsl.ir.ops.Transform), from the SE
# tag and the block's nodes by step name.
TRANSFORM_ATTRS: dict[str, Callable[[SeTag, dict[str, Node]], dict[str, Attr]]] = {
    "mlp": _mlp_attrs, "channel_conv": _channel_conv_attrs, "identity": lambda tag, nodes: {},
    "gct_norm": _gct_norm_attrs, "steps": _steps_attrs}


def _match_se(g: Graph, steps: dict[str, str],
              claimed: set[str]) -> tuple[str, list[str], Node, list[str]] | None:
    """(unit, the nodes it replaces, the fused record, its inputs) or None: not fusable. The
    residual add after it (and an activation after that) join it unless another SE block's
    fusion has `claimed` them (SE on both the residual branch and the shortcut)."""
    tag = record(g, next(iter(steps.values()))).se
    assert tag is not None
    kept = VARIANTS[tag.settings.variant].steps_for(tag.settings)
    name = fused_transform(tag.settings)
    if name is None or set(steps) != {s.name for s in kept}:
        return None  # not the op's steps, or fused already (its one step is "block")
    members = [steps[s.name] for s in kept]
    squeeze = record(g, members[0])  # kernel_supports: the first step is the squeeze
    scale = members[-1]
    srcs, last, merge_act = [inputs(g, scale)[0]], scale, "none"
    add = _sole_consumer(g, scale)
    if add is not None and add not in claimed and record(g, add).op == "add" \
            and g.in_degree(add) == 2:
        members.append(add)
        srcs.append(next(x for x in inputs(g, add) if x != scale))
        last = add
        post = _sole_consumer(g, add)
        if post is not None and record(g, post).op in KERNEL_ACTIVATIONS:
            members.append(post)
            merge_act = record(g, post).op
            last = post
    transform = TRANSFORMS[name]
    own = TRANSFORM_ATTRS[transform.name](tag, {k: record(g, n) for k, n in steps.items()})
    attrs: dict[str, Attr] = {"transform": transform.name, **own, "gate": tag.settings.gate,
                              "act": merge_act}
    bn = _folded_bn(g, srcs[0], members[0], scale) if transform.folds_bn else None
    if bn is not None:  # BN -> SE: the op takes the BN's input, the BN module is its companion
        members.insert(0, bn)
        srcs[0] = inputs(g, bn)[0]
        bn_attrs = record(g, bn).attrs
        attrs.update(bn=bn, bn_eps=bn_attrs["eps"], bn_momentum=bn_attrs.get("momentum", 0.1))
    fused = replace_record(record(g, last), op="se", attrs=attrs, role="se", span=squeeze.span,
                           branch=squeeze.branch, se=replace_record(tag, step="block"))
    return tag.unit, members, fused, srcs


def _folded_bn(g: Graph, u: str, squeeze: str, scale: str) -> str | None:
    """The `bn` node producing the SE block's input when the fused op can take it in
    (sedsl.pytorch.kernels.bn_op): a 2-D BN whose output only the SE block reads (its squeeze
    and scale), before an avg squeeze (max of a * x + b would need min x where a < 0)."""
    rec = record(g, u)
    readers = {v for _, v in g.out_edges(u)}
    if (rec.op != "bn" or len(rec.shape) != 3 or g.graph.get("output") == u
            or record(g, squeeze).attrs.get("mode") != "avg" or readers != {squeeze, scale}):
        return None
    return u


def _sole_consumer(g: Graph, node: str) -> str | None:
    succ = list(g.successors(node))
    if len(succ) != 1 or g.graph.get("output") == node:
        return None
    return str(succ[0])


# --- verify -------------------------------------------------------------------------------------


def verify(g: Graph, pass_name: str = "verify") -> Graph:
    """Check the IR's invariants; a violation is a bug of the pass that ran (CompilerError)."""
    if "input" not in g or g.graph.get("output") not in g:
        raise CompilerError("the graph needs an `input` node and an existing `output` node",
                            pass_name)
    cycle = find_cycle(g)
    if cycle:
        raise CompilerError(f"the graph has a cycle: {' -> '.join(cycle)}", pass_name)
    for name, rec in records(g):
        problem = _node_problem(g, name, rec)
        if problem:
            raise CompilerError(problem, pass_name, name)
    return g


def _node_problem(g: Graph, name: str, rec: Node) -> str | None:
    """What is wrong with one node, or None."""
    if not isinstance(rec, Node):
        return "carries no Node record under 'record'"
    if not all(p.isdigit() or (p.isidentifier() and not keyword.iskeyword(p))
               for p in name.split(".")):
        return "its name must be dotted Python identifiers (or indices: `layer1.0.conv1`)"
    if rec.op not in OPS:
        return f"unknown op `{rec.op}`; ops are {', '.join(sorted(OPS))}"
    if rec.role not in ROLES:
        return f"role must be one of {ROLES}, not {rec.role!r}"
    if (rec.role == "se") != (rec.se is not None):
        return f"a node of role {rec.role!r} {'needs' if rec.role == 'se' else 'has'} an SE tag"
    wired = sorted((p, u) for u, _, p in g.in_edges(name, data="port"))
    ports = [p for p, _ in wired]
    if ports != list(range(len(ports))):
        return f"input ports must be 0..{len(ports) - 1}, got {ports}"
    arity = OPS[rec.op].arity
    if (arity is not None and len(ports) != arity) or (arity is None and len(ports) < 1):
        return f"`{rec.op}` takes {arity or 'several'} inputs, it has {len(ports)}"
    try:
        shape = OPS[rec.op].infer(rec.attrs, [record(g, u).shape for _, u in wired])
    except SpecError as err:
        return err.message
    if shape != rec.shape:
        return f"recorded shape {rec.shape} but its inputs give {shape}"
    return None


def pipeline(se: SeConfig) -> tuple[Pass, ...]:
    """The passes `sedsl.load` runs on the elaborated base graph."""
    return (Pass("apply_se", partial(apply_se, se=se)),)


LOWERING: tuple[Pass, ...] = (Pass("fuse_se", fuse_se),)
PASSES = ("apply_se", *(p.name for p in LOWERING))  # every pass name, in order


__all__ = ["LOWERING", "PASSES", "Pass", "apply_se", "fuse_se", "pipeline", "plan_se", "run",
           "strip_se", "verify"]
