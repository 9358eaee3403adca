"""Per-layer cost reports (`sedsl cost --by layer`), as fvcore's `flop_count_table` and torchinfo
print them: one row per module path up to a depth, with output shape, parameters, FLOPs and
activations, plus a training-memory estimate. Reads the graph IR; no torch."""

from __future__ import annotations

from collections.abc import Sequence

from sedsl.ir.graph import Graph
from sedsl.ir.node import Node, input_shapes, records
from sedsl.ir.ops import OPS, Shape, numel
from sedsl.record import Record
from sedsl.targets.cost import node_costs


def activations(g: Graph, name: str, rec: Node) -> int:
    """Activations of one node in fvcore's ActivationCountAnalysis convention (batch 1): the op
    table's rule (the output elements of convolutions, linear layers and matmuls only)."""
    return OPS[rec.op].activations(rec.attrs, input_shapes(g, name), rec.shape)


class Layer(Record):
    """One row of the table: a module path (a node, or a group of nodes below a depth)."""

    name: str
    depth: int  # 1 for a stage, 2 for a block, ...
    op: str  # the node's op, or the block definition's name for a group
    shape: Shape  # output shape (of the group's last node), without the batch
    params: int
    flops: int
    activations: int
    se: bool  # every node below is an SE node


def layers(g: Graph, convention: str = "fvcore", depth: int = 2) -> list[Layer]:
    """Rows for every module path of at most `depth` components, in network order."""
    recs = dict(records(g))
    acc: dict[str, list[int]] = {}  # path -> [params, flops, activations]
    info: dict[str, tuple[str, Shape, bool]] = {}  # path -> (op, shape of last node, all SE)
    for n in node_costs(g, convention):
        if n.op == "input":
            continue
        rec = recs[n.name]
        parts = n.name.split(".")
        for d in range(1, min(depth, len(parts)) + 1):
            path = ".".join(parts[:d])
            totals = acc.setdefault(path, [0, 0, 0])
            totals[0] += n.params
            totals[1] += n.flops
            totals[2] += activations(g, n.name, rec)
            leaf = d == len(parts)
            op = rec.op if leaf else _group_op(rec, path)
            all_se = info[path][2] if path in info else True
            info[path] = (info[path][0] if path in info else op, rec.shape,
                          all_se and rec.role == "se")
    return [Layer(p, p.count(".") + 1, info[p][0], info[p][1], acc[p][0], acc[p][1], acc[p][2],
                  info[p][2]) for p in acc]


def _group_op(rec: Node, path: str) -> str:
    """What a group of nodes is: its block definition, or the stage's."""
    if rec.block == path:
        return rec.kind or "block"
    if rec.stage == path:
        return "stage"
    return "se" if rec.se is not None and rec.se.unit == path else path.rsplit(".", 1)[-1]


def total_activations(g: Graph) -> int:
    """The network's activations in fvcore's convention (batch 1)."""
    return sum(activations(g, name, rec) for name, rec in records(g))


def stored_elements(g: Graph) -> int:
    """Elements of the layer outputs autograd keeps for backward (batch 1), input included: every
    node's, except ReLUs and adds that overwrite their input in place (as timm and the lowering
    run them)."""
    total = 0
    for name, rec in records(g):
        if rec.op == "add":
            continue
        if rec.op == "relu":
            (u,) = g.predecessors(name)
            if OPS[g.nodes[u]["record"].op].fresh and g.out_degree(u) == 1:  # its own tensor
                continue
        total += numel(rec.shape)
    return total


# Optimizer states per parameter: SGD with momentum keeps one buffer, Adam two.
OPTIMIZER_STATES = {"sgd": 1, "adam": 2}


def training_memory(g: Graph, params: int, batch: int, optimizer: str = "adam",
                    bytes_per_element: int = 4) -> int:
    """Bytes to train at `batch` in fp32: weights, gradients and optimizer states, plus the layer
    outputs kept for the backward pass (workspace and allocator slack not included)."""
    states = (2 + OPTIMIZER_STATES[optimizer]) * params
    return bytes_per_element * (states + batch * stored_elements(g))


def parse_batches(text: str) -> list[int]:
    """`1,32,256` -> [1, 32, 256]."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or not all(v.isdigit() and int(v) > 0 for v in values):
        raise ValueError(f"expected positive batch sizes like 1,32,256, got `{text}`")
    return [int(v) for v in values]


def human(n: float, unit: str = "") -> str:
    """12345678 -> '12.35M' (fvcore's table style)."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= factor:
            return f"{n / factor:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


def gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def shape_text(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))
