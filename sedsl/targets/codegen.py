"""Graph -> PyTorch source. One lowering: the graph becomes Python source (a `Model(nn.Module)`
whose attribute tree mirrors the spec's names); sedsl.pytorch.module executes that same source,
the way torch.fx turns its graphs into code. The op table supplies each node's constructor or
expression. Nothing here imports torch: the source is text."""

from __future__ import annotations

from sedsl.compile import passes
from sedsl.ir.graph import Graph
from sedsl.ir.node import Node, execution_order, input_shapes, inputs, record, records
from sedsl.ir.ops import OPS, TorchExpr, TorchModule
from sedsl.ir.vocab import ACTIVATIONS, SQUEEZES
from sedsl.targets.support import SUPPORT
from sedsl.version import __version__

# The fused modules when sedsl is installed; otherwise the same blocks (same state-dict keys) in
# plain PyTorch, so that a generated model.py stands alone. Each fused op's lowering names its
# module in `support` (sedsl.ir.ops.TRANSFORMS); the tables come from the vocabulary.
_FUSED: dict[str, str] = {
    "SqueezeExcite": '''
    class SqueezeExcite(nn.Module):  # type: ignore[no-redef]
        """act(x * gate(fc2(excite(fc1(squeeze(x))))) + identity)."""

        def __init__(self, channels: int, rd_channels: int, bias: bool = True,
                     squeeze: str = "avg", excite: str = "relu", gate: str = "sigmoid",
                     act: str = "none") -> None:
            super().__init__()
            self.reduce = _REDUCE[squeeze]  # a Tensor method over (2, 3)
            self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=bias)
            self.excite = _ACT[excite]()
            self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=bias)
            self.gate = _ACT[gate]()
            self.act = _ACT[act]()

        def forward(self, x: torch.Tensor, identity: torch.Tensor | None = None,
                    bn: nn.Module | None = None) -> torch.Tensor:
            if bn is not None:  # the BatchNorm before the block, which sedsl's op folds in
                x = bn(x)
            z = getattr(x, self.reduce)((2, 3), keepdim=True)
            s = self.gate(self.fc2(self.excite(self.fc1(z))))
            return self.act(x * s if identity is None else x * s + identity)''',
    "EfficientChannelAttention": '''
    class EfficientChannelAttention(nn.Module):  # type: ignore[no-redef]
        """act(x * gate(conv1d(mean(x))) + identity), the conv across channels."""

        def __init__(self, kernel_size: int = 3, padding: str = "zero", gate: str = "sigmoid",
                     act: str = "none") -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 1, kernel_size, bias=False)
            self.padding = "circular" if padding == "circular" else "constant"
            self.gate = _ACT[gate]()
            self.act = _ACT[act]()

        def forward(self, x: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
            pad = (self.conv.kernel_size[0] - 1) // 2
            z = nn.functional.pad(x.mean((2, 3))[:, None], (pad, pad), mode=self.padding)
            s = self.gate(self.conv(z)).view(x.shape[0], -1, 1, 1)
            return self.act(x * s if identity is None else x * s + identity)''',
    "GatherExcite": '''
    class GatherExcite(nn.Module):  # type: ignore[no-redef]
        """act(x * gate(mean(x)) + identity): Gather-Excite's parameter-free form."""

        def __init__(self, gate: str = "sigmoid", act: str = "none") -> None:
            super().__init__()
            self.gate = _ACT[gate]()
            self.act = _ACT[act]()

        def forward(self, x: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
            s = self.gate(x.mean((2, 3), keepdim=True))
            return self.act(x * s if identity is None else x * s + identity)''',
    "GatedChannelTransformation": '''
    class GCTParameters(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
            self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
            self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    class GatedChannelTransformation(nn.Module):  # type: ignore[no-redef]
        """act(x * (1 + gate(t)) + identity), t GCT's normalised L2 embedding."""

        def __init__(self, channels: int, eps: float = 1e-5, gate: str = "tanh",
                     act: str = "none") -> None:
            super().__init__()
            self.norm = GCTParameters(channels)
            self.eps = eps
            self.gate = _ACT[gate]()
            self.act = _ACT[act]()

        def forward(self, x: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
            p = self.norm
            embedding = (x.pow(2).sum((2, 3), keepdim=True) + self.eps).pow(0.5) * p.alpha
            norm = p.gamma / (embedding.pow(2).mean(dim=1, keepdim=True) + self.eps).pow(0.5)
            y = x * (1.0 + self.gate(embedding * norm + p.beta))
            return self.act(y if identity is None else y + identity)''',
    "ChannelAttention": '''
    class ChannelAttention(nn.Module):  # type: ignore[no-redef]
        """act(x * transform(statistic(x)) + identity), the transform the plain steps."""

        def __init__(self, statistic: str, steps: dict[str, nn.Module],
                     act: str = "none") -> None:
            super().__init__()
            for name, module in steps.items():
                self.add_module(name, module)
            self.statistic, self.post = statistic, _ACT[act]()

        def forward(self, x: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
            s = x.mean((2, 3), keepdim=True)
            if self.statistic == "avgstd":
                s = torch.cat([s, x.std((2, 3), keepdim=True)], 3)
            for name, module in self.named_children():
                if name != "post":
                    s = module(s)
            return self.post(x * s if identity is None else x * s + identity)''',
}


def _fused_source(names: list[str]) -> str:
    """Import the fused modules `names` from sedsl, else define them in plain PyTorch."""
    acts = ", ".join(['"none": nn.Identity', *(f'"{a.name}": nn.{a.module}'
                                                for a in ACTIVATIONS.values())])
    reduce = ", ".join(f'"{s.name}": "{s.reduce}"' for s in SQUEEZES.values() if s.kernel)
    return "\n".join([f"try:\n    from sedsl.pytorch.kernels import {', '.join(names)}",
                      "except ImportError:", f"    _ACT = {{{acts}}}",
                      f"    _REDUCE = {{{reduce}}}",
                      *(_FUSED[name] for name in names)])


def generate(g: Graph, fused: bool = False) -> str:
    """Standalone source of the network; `fused` uses sedsl's SE op (and imports sedsl)."""
    if fused:
        g = passes.run(g, passes.LOWERING)
    name, shape = g.graph["name"], tuple(g.graph["input"])
    imports = ["import torch", "from torch import nn"]
    support = _support(g)
    fused_modules = [name for name in support if name in _FUSED]
    if fused_modules:
        imports.append(_fused_source(fused_modules))
    imports += [SUPPORT[name] for name in support if name not in _FUSED]
    lines = [
        f'"""{name}: generated by sedsl {__version__}."""',
        f"# spec: {g.graph['file']!r}",  # repr: a path cannot break out of the comment
        "",
        *imports,
        "",
        "",
        "class Model(nn.Module):",
        f'    """{name}, input {"x".join(map(str, shape))}."""',
        "",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        *_constructors(g),
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        *_forward(g),
        "",
    ]
    return "\n".join(lines)


def _support(g: Graph) -> list[str]:
    """The helper classes and functions the graph's lowerings name, in first-use order."""
    needed: dict[str, None] = {}
    for name, rec in records(g):
        needed.update(dict.fromkeys(_lowering(g, name, rec).support))
    return list(needed)


def _lowering(g: Graph, name: str, rec: Node) -> TorchModule | TorchExpr:
    return OPS[rec.op].torch(rec.attrs, input_shapes(g, name), rec.shape)


def _attr(name: str) -> str:
    """`self.layer1["0"].conv1`: an index-like part (an imported module path) is a dict key."""
    return "self" + "".join(f'["{p}"]' if p.isdigit() else f".{p}" for p in name.split("."))


def _constructors(g: Graph) -> list[str]:
    lines: list[str] = []
    made = {""}
    indexed = {".".join(n.split(".")[:i]) for n in g.nodes for i, p in
               enumerate(n.split(".")) if p.isdigit()}  # containers with index-like children
    for name, rec in records(g):
        ins = input_shapes(g, name)
        for _, path, module in OPS[rec.op].companions(rec.attrs, ins):  # a folded BN's place
            _construct(lines, made, indexed, path, module.source)
        lowering = OPS[rec.op].torch(rec.attrs, ins, rec.shape)
        if not isinstance(lowering, TorchModule):
            continue
        source = lowering.source
        inplace = OPS[rec.op].inplace
        if inplace is not None and _may_overwrite(g, name):  # a module: `nn.ReLU(inplace=True)`
            source = inplace
        _construct(lines, made, indexed, name, source)
        lines += [f"        {stmt.replace('{m}', _attr(name))}" for stmt in lowering.init]
    return lines or ["        pass"]


def _construct(lines: list[str], made: set[str], indexed: set[str], name: str,
               source: str) -> None:
    """`self.<name> = <source>`, after the containers on its path."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        container = ".".join(parts[:i])
        if container not in made:
            kind = "nn.ModuleDict()" if container in indexed else "nn.Module()"
            lines.append(f"        {_attr(container)} = {kind}")
            made.add(container)
    lines.append(f"        {_attr(name)} = {source}")
    made.add(name)  # a layer may hold others (timm's BatchNormAct2d holds its `act`)


def _may_overwrite(g: Graph, node: str) -> bool:
    """Whether `node` may compute in place: its input is fresh and read by nobody else."""
    (u,) = g.predecessors(node)
    return _fresh_value(g, u) and g.out_degree(u) == 1


def _fresh_value(g: Graph, node: str) -> bool:
    """A tensor of its own (no view of another), that autograd does not keep for backward."""
    return OPS[record(g, node).op].fresh


def _forward(g: Graph) -> list[str]:
    """Straight-line code: the running value lives in `x`; a value still needed later is kept
    in a variable named after its layer before `x` moves on."""
    uses = {n: g.out_degree(n) for n in g.nodes}
    uses[g.graph["output"]] += 1
    var = {"input": "x"}
    in_x = "input"
    live_names = {"x"}
    lines: list[str] = []
    block = None
    for name in execution_order(g):
        rec = record(g, name)
        if rec.op == "input":
            continue
        if rec.block != block and rec.block is not None:
            lines.append(f"        # {rec.block}" + (f": {rec.kind}" if rec.kind else ""))
        block = rec.block
        srcs = inputs(g, name)
        args = [var[u] for u in srcs]
        lowering = OPS[rec.op].torch(rec.attrs, input_shapes(g, name), rec.shape)
        if isinstance(lowering, TorchExpr):
            expr = lowering.template.format(*args)
        else:
            extra = [f"{key}={_attr(path)}" for key, path, _ in
                     OPS[rec.op].companions(rec.attrs, input_shapes(g, name))]
            expr = f"{_attr(name)}({', '.join(args + extra)})"
        for u in srcs:
            uses[u] -= 1
        if uses[in_x] > 0:  # keep the value in x alive under its own name
            keep = _fresh(in_x.rsplit(".", 1)[-1] if in_x != "input" else "inp", live_names)
            lines.append(f"        {keep} = x")
            live_names.add(keep)
            var[in_x] = keep  # x still holds it for this line
        elif (isinstance(lowering, TorchExpr) and OPS[rec.op].inplace and len(srcs) == 2
              and in_x in srcs and _fresh_value(g, in_x)):
            other = args[1 - srcs.index(in_x)]  # x dies here: write into it, as timm adds
            expr = str(OPS[rec.op].inplace).format("x", other)
        dead = [var[u] for u in dict.fromkeys(srcs) if uses[u] == 0 and var[u] != "x"]
        free = f"; del {', '.join(dead)}" if dead else ""  # as torch.fx does: free it now
        lines.append(f"        x = {expr}{free}  # {'x'.join(map(str, rec.shape))}")
        var[name] = "x"
        in_x = name
        live_names -= set(dead)
    lines.append(f"        return {var[g.graph['output']]}")
    return lines


def _fresh(base: str, taken: set[str]) -> str:
    if not base.isidentifier():
        base = f"t{base}"  # an index-like layer name: `0` -> `t0`
    name, k = base, 2
    while name in taken or name in ("x", "self", "torch", "nn"):
        name, k = f"{base}_{k}", k + 1
    return name
