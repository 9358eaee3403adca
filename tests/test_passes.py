"""SE insertion and fusion, checked against SE blocks written by hand from the paper's equations
(and, for rounding, against timm)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import networkx as nx
import pytest
import torch
from torch import nn

import sedsl
from sedsl.compile import passes
from sedsl.ir.node import Node, record, records
from sedsl.ir.ops import TRANSFORMS
from sedsl.ir.se import VARIANTS, SeSettings
from sedsl.record import replace
from tests.conftest import SPECS, compiled

TINY = """
block basic(c_out, stride = 1) {
  residual {
    conv(c_out, 3, stride = stride) bn relu
    conv(c_out, 3) bn
  } shortcut {
    if stride != 1 or c_in != c_out { conv(c_out, 1, stride = stride) bn }
  }
  relu
}

network tiny {
  input 8x12x12
  b = basic(16, stride = 2)
}

se {
  ratio = 4
  RULE
}
"""


class PaperSE(nn.Module):
    """Eq. 2-4: z = mean_hw(u); s = sigmoid(W2 relu(W1 z)); x~ = s * u (1x1 convs hold W1, W2)."""

    def __init__(self, c: int, rd: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, rd, 1), nn.Conv2d(rd, c, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        z = u.mean((2, 3), keepdim=True)
        return u * torch.sigmoid(self.fc2(torch.relu(self.fc1(z))))


class Basic(nn.Module):
    """A basic residual unit with one SE block at `where`, written out by hand."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.conv1, self.bn1 = nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        self.shortcut = nn.Sequential()
        self.shortcut.conv1 = nn.Conv2d(8, 16, 1, 2, bias=False)
        self.shortcut.bn1 = nn.BatchNorm2d(16)
        c = 8 if where in ("pre", "block.start") else 16
        self.se = PaperSE(c, c // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, se = self.where, self.se
        x = se(x) if w == "block.start" else x
        r = se(x) if w == "pre" else x
        r = torch.relu(self.bn1(self.conv1(r)))
        r = se(r) if w == "after relu1" else r
        r = self.bn2(self.conv2(r))
        r = se(r) if w == "standard" else r
        s = self.shortcut.bn1(self.shortcut.conv1(x))
        s = se(s) if w == "identity" else s
        out = torch.relu(r + s)
        return se(out) if w == "post" else out


RULES = {
    "standard": "at residual.end",
    "pre": "at residual.start",
    "post": "at block.end",
    "identity": "at shortcut.end",
    "block.start": "at block.start",
    "after relu1": "after relu1",
}


@pytest.mark.parametrize("where", sorted(RULES))
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
def test_se_positions_match_hand_written_blocks(where: str, fused: bool) -> None:
    net = sedsl.loads(TINY.replace("RULE", RULES[where]))
    ours = net.to_torch(fused=fused).eval()
    theirs = Basic(where).eval()
    for m in theirs.modules():  # non-trivial batch-norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    theirs.load_state_dict({k.removeprefix("b."): v for k, v in ours.state_dict().items()},
                           strict=False)
    ours.load_state_dict({f"b.{k}": v for k, v in theirs.state_dict().items()})
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_aliases_name_the_same_points() -> None:
    for alias, point in (("standard", "residual.end"), ("pre", "residual.start"),
                         ("post", "block.end"), ("identity", "shortcut.end")):
        a = sedsl.loads(TINY.replace("RULE", f"at {alias}")).graph
        b = sedsl.loads(TINY.replace("RULE", f"at {point}")).graph
        assert structure(a) == structure(b)


def structure(g: nx.DiGraph) -> tuple[list[tuple[str, str, tuple[int, ...]]], list[tuple]]:
    return ([(n, r.op, r.shape) for n, r in records(g)], sorted(g.edges(data="port")))


def se_widths(net: sedsl.Network) -> dict[str, int]:
    return {n.rsplit(".", 2)[0]: r.shape[0] for n, r in records(net.graph) if n.endswith("fc1")}


def test_per_stage_overrides_and_switching_off() -> None:
    text = (SPECS / "se_resnet50.se").read_text().replace(
        "at residual.end in conv2..conv5",
        "at residual.end in conv2..conv5\n  at residual.end in conv5 { ratio = 8 }\n"
        "  at standard in conv2.block1..block2 { enabled = false }")
    net = sedsl.loads(text, path=str(SPECS / "variant.se"))
    widths = se_widths(net)
    assert "conv2.block1" not in widths and "conv2.block2" not in widths
    assert widths["conv2.block3"] == 256 // 16
    assert widths["conv4.block6"] == 1024 // 16
    assert widths["conv5.block1"] == 2048 // 8
    assert len(widths) == 14


def test_se_off_gives_the_base_graph() -> None:
    net = compiled("se_resnet50.se", enabled=False)
    assert structure(net.graph) == structure(compiled("se_resnet50.se").base)


def test_ratio_override_reaches_every_block() -> None:
    widths = se_widths(compiled("se_resnet50.se", ratio=4))
    assert widths["conv2.block1"] == 64 and widths["conv5.block3"] == 512


@pytest.mark.parametrize("channels", [16, 24, 40, 72, 96, 120, 184, 200, 480, 672, 1152])
@pytest.mark.parametrize("ratio", [4, 16, 24])
def test_divisor_rounding_matches_timm(channels: int, ratio: int) -> None:
    make_divisible = pytest.importorskip("timm.layers").make_divisible
    expected = make_divisible(channels / ratio, 8, round_limit=0.0)  # timm's SEModule
    assert SeSettings(ratio=ratio, round=8).reduced(channels) == expected


def test_floor_rounding_matches_caffe_release() -> None:
    """The authors' SE-BN-Inception: floor(C / 16), e.g. 576 -> 36, 1056 -> 66, 320 -> 20."""
    for c in (256, 320, 576, 608, 1056, 1024):
        assert SeSettings().reduced(c) == c // 16


def test_block_input_base() -> None:
    spec = TINY.replace("RULE", "at residual.end { base = block_in }")
    assert se_widths(sedsl.loads(spec))["b"] == 8 // 4


def test_squeeze_excite_gate_choices_lower_to_the_right_modules() -> None:
    spec = TINY.replace("RULE", "at residual.end { squeeze = max, excite = silu, "
                                "gate = hardsigmoid, bias = false }")
    net = sedsl.loads(spec)
    model = net.to_torch(fused=False)
    assert "x.amax((2, 3), keepdim=True)" in net.source()
    assert isinstance(model.b.se.act, nn.SiLU) and isinstance(model.b.se.gate, nn.Hardsigmoid)
    assert model.b.se.fc1.bias is None


def test_fusion_folds_se_add_and_activation() -> None:
    net = compiled("se_resnet50.se")
    fused = passes.fuse_se(net.graph)
    se_nodes = [n for n, r in records(fused) if r.op == "se"]
    assert len(se_nodes) == 16
    rec = record(fused, "conv2.block1.se")
    assert rec.attrs["act"] == "relu" and fused.in_degree("conv2.block1.se") == 2
    assert "conv2.block1.add1" not in fused and "conv2.block1.relu3" not in fused
    # bn3 is folded in: the op reads conv3, the BN module stays at its path
    assert rec.attrs["bn"] == "conv2.block1.bn3" and "conv2.block1.bn3" not in fused
    assert "conv2.block1.conv3" in fused.predecessors("conv2.block1.se")
    assert fused.number_of_nodes() == net.graph.number_of_nodes() - 16 * 8
    passes.verify(fused)


def test_fused_and_plain_agree_with_gradients() -> None:
    net = compiled("se_resnet50.se", classes=10, input="3x64x64")
    plain, fused = net.to_torch(fused=False).eval(), net.to_torch(fused=True).eval()
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    out_p, out_f = plain(x), fused(x)
    torch.testing.assert_close(out_f, out_p)
    out_p.square().sum().backward()
    out_f.square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_passes_do_not_mutate_their_input() -> None:
    net = compiled("se_resnet50.se")
    base = net.base
    before = (list(base.nodes), list(base.edges(data=True)), dict(base.graph))
    passes.apply_se(base, net.se)
    passes.fuse_se(passes.apply_se(base, net.se))
    assert (list(base.nodes), list(base.edges(data=True)), dict(base.graph)) == before


def test_verify_catches_broken_graphs() -> None:
    g = compiled("se_resnet50.se").graph.copy()
    rec = record(g, "conv2.block1.conv1")
    g.nodes["conv2.block1.conv1"]["record"] = Node(**{**rec.__dict__, "shape": (65, 56, 56)})
    with pytest.raises(sedsl.CompilerError, match="recorded shape"):
        passes.verify(g)
    g = compiled("se_resnet50.se").graph.copy()
    g.add_edge("head.fc", "stem.conv1", port=1)
    with pytest.raises(sedsl.CompilerError, match="cycle"):
        passes.verify(g)
    g = compiled("se_resnet50.se").graph.copy()
    g.remove_edge("conv2.block1.add1", "conv2.block1.relu3")
    with pytest.raises(sedsl.CompilerError, match="takes 1 inputs, it has 0"):
        passes.verify(g)


TWO = """
block unit(c) {
  residual { conv(c, 3) bn relu conv(c, 3) bn }
  relu
}

network two {
  input 8x6x6
  b1 = unit(8)
  b2 = unit(8)
}

se {
  ratio = 4
  RULES
}
"""


def _se(m: nn.Module, u: torch.Tensor) -> torch.Tensor:
    return u * m.gate(m.fc2(m.act(m.fc1(u.mean((2, 3), keepdim=True)))))


def _two_by_hand(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """b1 with SE at block.end; b2 with SE at residual.start, reading b1's SE output."""
    b1, b2 = m.b1, m.b2
    y = torch.relu(b1.bn2(b1.conv2(torch.relu(b1.bn1(b1.conv1(x))))) + x)
    y = _se(b1.se, y)
    r = b2.bn2(b2.conv2(torch.relu(b2.bn1(b2.conv1(_se(b2.se, y))))))
    return torch.relu(r + y)


@pytest.mark.parametrize("base", ["channels", "block_in"])
@pytest.mark.parametrize("post_first", [True, False], ids=["post-first", "pre-first"])
def test_overlapping_points_chain(base: str, post_first: bool) -> None:
    """b1's block.end is every consumer of b1's output, b2's residual.start some of them: the
    wider point's SE block comes first, in either rule order (this was a KeyError)."""
    rules = [f"at block.end in b1 {{ base = {base} }}", "at residual.start in b2"]
    net = sedsl.loads(TWO.replace("RULES", "\n  ".join(rules if post_first else rules[::-1])))
    assert passes.inputs(net.ir, "b2.se.squeeze") == ["b1.se.scale"]
    assert sorted(net.ir.predecessors("b2.add1")) == ["b1.se.scale", "b2.bn2"]
    assert structure(passes.apply_se(net.ir, net.se)) == structure(net.ir)  # still idempotent
    x = torch.randn(2, 8, 6, 6)
    plain, fused = net.to_torch(fused=False).eval(), net.to_torch().eval()
    fused.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain(x), _two_by_hand(plain, x))
        torch.testing.assert_close(fused(x), plain(x))


def test_points_that_partly_overlap_are_refused() -> None:
    """Points come from nested scopes, so two on one tensor are nested or apart; insertions
    made in Python that share some consumers, but not all, are an error."""
    net = sedsl.loads("network t {\n  input 8x6x6\n  s = { conv(8, 3) }\n"
                      "  p = parallel add { a = relu; b = relu; c = relu }\n}\n"
                      "se {\n  ratio = 4\n  at block.end in s\n}\n")
    (post,) = passes.plan_se(net.base_ir, net.se)
    consumers = post.point.consumers  # the three branches

    def on(*ports: tuple[str, int]) -> passes.Insertion:
        return replace(post, point=replace(post.point, consumers=ports))

    apart = passes.insert_se(net.base_ir, [on(*consumers[:2]), on(consumers[2])])
    assert apart.number_of_nodes() == net.base_ir.number_of_nodes() + 12
    with pytest.raises(sedsl.SpecError, match="overlaps another one"):
        passes.insert_se(net.base_ir, [on(*consumers[:2]), on(*consumers[1:])])


def test_se_on_both_inputs_of_an_add_fuses_one() -> None:
    """SE blocks on the residual branch and on the identity shortcut both end in the add: only
    one fused block may take it in (both did: a cycle, reported as a bug in fuse_se)."""
    net = sedsl.loads(TWO.replace("RULES", "at residual.end in b2\n  at shortcut.end in b2"))
    fused = passes.run(net.ir, passes.LOWERING)
    assert [r.op for _, r in records(fused)].count("se") == 2
    assert sum(1 for n, r in records(fused) if r.op == "se"
               and len(passes.inputs(fused, n)) == 2) == 1  # the one that took in the add
    x = torch.randn(2, 8, 6, 6)
    plain, fast = net.to_torch(fused=False).eval(), net.to_torch().eval()
    fast.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x))


@pytest.mark.parametrize("spec", ["se_resnet50.se", "se_resnext50.se", "mobilenet_v3_small.se",
                                  "ecaresnet50d.se", "tiny:ge", "tiny:gct", "tiny:ese",
                                  "tiny:se_bn", "tiny:srm", "tiny:ecam"])
def test_fused_graph_costs_what_the_plain_one_does(spec: str) -> None:
    """The `se` op's rules count what the nodes it replaces count, a folded BN included:
    parameters, state (BN buffers) and FLOPs in every convention, for the MLP (SE), the
    channel conv (ECA), the identity (Gather-Excite's mean), GCT's normalisation and the
    generic transforms (the plain nodes' own counts: ese, se_bn with its BN's buffers, srm,
    ecam).
    `tiny:V`: the two-bottleneck ResNet with variant V (`tiny`)."""
    from sedsl.targets.cost import CONVENTIONS, node_costs, state_elements
    from sedsl.targets.report import activations

    g = tiny(spec[5:]).graph if spec.startswith("tiny:") else compiled(spec).graph
    fused = passes.fuse_se(g)
    assert any(r.op == "se" for _, r in records(fused))
    for convention in CONVENTIONS:
        plain_nodes, fused_nodes = node_costs(g, convention), node_costs(fused, convention)
        assert sum(n.params for n in fused_nodes) == sum(n.params for n in plain_nodes)
        assert sum(n.flops for n in fused_nodes) == sum(n.flops for n in plain_nodes), convention
    assert state_elements(fused) == state_elements(g)
    assert (sum(activations(fused, n, r) for n, r in records(fused))  # fvcore's activations
            == sum(activations(g, n, r) for n, r in records(g)))


TINY_RESNET = """use "lib/resnet.se"
network tiny {
  input 3x12x12
  stem = { conv(8, 3) bn relu }
  conv2 = bottleneck(4) * 2
  head = classifier(3)
}
se {
  variant = VARIANT
  SETTINGS
  at residual.end
}
"""


def tiny(variant: str, settings: str = "") -> sedsl.Network:
    """A two-bottleneck ResNet with one attention block per block, before the residual add."""
    text = TINY_RESNET.replace("VARIANT", variant).replace("SETTINGS", settings)
    return sedsl.loads(text, path=str(SPECS / "tiny.se"))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fusion_decides_from_the_variant_table(variant: str) -> None:
    """A block becomes one `se` node exactly when its variant names a dedicated op's transform
    (Variant.fused) or its step kinds have the generic transform's shape, and the node carries
    that transform; the BN before it is folded in only where the transform takes one (ECA's
    op has no BN fold: bn3 stays a node of its own)."""
    g = tiny(variant).graph
    fused = passes.fuse_se(g)
    nodes = [r for _, r in records(fused) if r.op == "se"]
    want = {"se": "mlp", "eca": "channel_conv", "ceca": "channel_conv", "ge": "identity",
            "gct": "gct_norm", "ese": "steps", "se_bn": "steps", "srm": "steps",
            "ecam": "steps"}.get(variant)  # and only these
    assert [r.attrs["transform"] for r in nodes] == [want] * (2 if want else 0)
    assert VARIANTS[variant].fused == (want if want != "steps" else None)
    for r in nodes:
        assert r.attrs["act"] == "relu"  # the residual add and its relu joined the op
        assert ("bn" in r.attrs) == (want == "mlp")  # sedsl::se_bn_block; ECA has no BN fold
        assert ("conv2.block1.bn3" in fused) == (want != "mlp")
    passes.verify(fused)


def test_what_the_eca_op_cannot_compute_stays_plain() -> None:
    """ECA's op takes a mean: a max squeeze stays plain ops (the generic transform's statistic
    is a mean too). Its steps apply no `excite`, so that setting does not keep it from the op;
    an activation the kernels lack moves a block to the generic transform, whose modules are
    torch's."""
    assert not any(r.op == "se" for _, r in records(passes.fuse_se(tiny("eca", "squeeze = max")
                                                                  .graph)))
    assert passes.fused_transform(SeSettings(variant="eca", excite="gelu").resolved()) \
        == "channel_conv"
    assert passes.fused_transform(SeSettings(variant="se", excite="gelu").resolved()) == "steps"
    assert passes.fused_transform(SeSettings(variant="eca", gate="gelu").resolved()) == "steps"
    assert passes.fused_transform(SeSettings(variant="se", squeeze="avgpool").resolved()) is None


def same_step(plain: torch.nn.Module, fused: torch.nn.Module, dx_exact: bool = True,
              params_exact: bool = True) -> None:
    """One forward and backward of the two lowerings on one 2x3x12x12 input: outputs bit for
    bit, the input's gradient and every parameter's bit for bit (or to assert_close's
    default tolerance where not `exact`)."""
    x = torch.randn(2, 3, 12, 12)
    xp, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_p, out_f = plain(xp), fused(xf)
    torch.testing.assert_close(out_f, out_p, rtol=0, atol=0)
    grad = torch.randn_like(out_p)
    out_p.backward(grad)
    out_f.backward(grad)
    exact = {"rtol": 0.0, "atol": 0.0}
    torch.testing.assert_close(xf.grad, xp.grad, **(exact if dx_exact else {}))
    for (name, p), q in zip(plain.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=name, **(exact if params_exact else {}))


@pytest.mark.parametrize(("variant", "kernel"), [("eca", 3), ("ceca", 5)])
def test_fused_eca_agrees_with_plain_and_timm(variant: str, kernel: int) -> None:
    """The fused ECA lowering (the module's plain path on the CPU) has the plain lowering's
    state-dict keys and gives its outputs and gradients, input and every parameter; its block
    is timm's EcaModule / CecaModule with the same weight, followed by the add and relu."""
    from timm.layers import CecaModule, EcaModule

    net = tiny(variant, f"kernel = {kernel}")
    plain, fused = net.to_torch(fused=False).eval(), net.to_torch().eval()
    assert list(fused.state_dict()) == list(plain.state_dict())
    fused.load_state_dict(plain.state_dict())
    plain.load_state_dict(fused.state_dict())
    block = fused.conv2.block1.se
    assert type(block).__name__ == "EfficientChannelAttention" and block.act == "relu"
    same_step(plain, fused, dx_exact=False, params_exact=False)
    timm_block = (EcaModule if variant == "eca" else CecaModule)(kernel_size=kernel)
    timm_block.conv.weight.data.copy_(block.conv.weight)
    u, identity = torch.randn(2, 16, 5, 5), torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(block(u, identity), torch.relu(timm_block(u) + identity))


@pytest.mark.parametrize("settings", ["gather = conv", "gather = conv\nmlp = true",
                                      "squeeze = max"])
def test_gather_excite_with_parameters_stays_plain(settings: str) -> None:
    """Only Gather-Excite's parameter-free form (the mean, no MLP) is the fused op's identity
    transform, and its mean with an MLP the generic transform's (mean, fc, excite, fc, gate,
    scale): the conv gather (theta, theta-plus: a conv over the whole map) and a max stay plain
    ops."""
    g = tiny("ge", settings).graph
    assert not any(r.op == "se" for _, r in records(passes.fuse_se(g)))
    assert passes.fused_transform(SeSettings(variant="ge").resolved()) == "identity"
    assert passes.fused_transform(SeSettings(variant="ge", mlp=True).resolved()) == "steps"
    nodes = [r for _, r in records(passes.fuse_se(tiny("ge", "mlp = true").graph))
             if r.op == "se"]
    assert [r.attrs["transform"] for r in nodes] == ["steps", "steps"]


def test_fused_ge_agrees_with_plain_and_timm() -> None:
    """The fused Gather-Excite lowering (the module's plain path on the CPU) has no parameters,
    the plain lowering's state-dict keys, and gives its outputs and gradients, input and every
    parameter, bit for bit; its block is timm's GatherExcite (extent 0, no MLP) and the
    reference's theta-minus, followed by the add and relu."""
    from timm.layers import GatherExcite as TimmGatherExcite

    from tests.attention_references import GatherExcite

    net = tiny("ge")
    plain, fused = net.to_torch(fused=False).eval(), net.to_torch().eval()
    assert list(fused.state_dict()) == list(plain.state_dict())
    block = fused.conv2.block1.se
    assert type(block).__name__ == "GatherExcite" and block.act == "relu"
    assert not list(block.state_dict()) and not list(plain.conv2.block1.se.state_dict())
    fused.load_state_dict(plain.state_dict())
    same_step(plain, fused, params_exact=False)
    u, identity = torch.randn(2, 16, 5, 5), torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        want = torch.relu(GatherExcite(16)(u) + identity)
        torch.testing.assert_close(block(u, identity), want)
        torch.testing.assert_close(torch.relu(TimmGatherExcite(16, use_mlp=False)(u) + identity),
                                   want)


@pytest.mark.parametrize("variant", ["eca", "ge", "gct", "se_bn", "srm", "ecam"])
def test_fused_source_stands_alone(variant: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The generated fused model.py defines the fused module in plain PyTorch where sedsl
    cannot be imported: the plain lowering's state-dict keys and outputs."""
    net = tiny(variant)
    path = tmp_path / f"fused_{variant}.py"
    path.write_text(net.source(fused=True))
    monkeypatch.setitem(sys.modules, "sedsl.pytorch.kernels", None)  # the import fails
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    standalone, plain = module.Model().eval(), net.to_torch(fused=False).eval()
    assert type(standalone.conv2.block1.se).__module__ == path.stem  # the fallback class
    assert list(standalone.state_dict()) == list(plain.state_dict())
    with torch.no_grad():  # GCT's gamma and beta start at 0: the gate would be 1
        for p in plain.parameters():
            p.add_(0.3 * torch.randn_like(p))
    standalone.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(standalone(x), plain(x))


def test_fused_gct_agrees_with_plain_and_the_release() -> None:
    """The fused GCT lowering (the module's plain path on the CPU) has the plain lowering's
    state-dict keys (`<block>.se.norm.alpha`, ...) and gives its outputs and gradients, input
    and every parameter (alpha, gamma, beta randomised), bit for bit; its block is the official
    GCT module (tests/attention_references.py) followed by the add and relu."""
    from tests.attention_references import GCT

    net = tiny("gct")
    plain, fused = net.to_torch(fused=False).eval(), net.to_torch().eval()
    assert list(fused.state_dict()) == list(plain.state_dict())
    assert "conv2.block1.se.norm.gamma" in fused.state_dict()
    block = fused.conv2.block1.se
    assert type(block).__name__ == "GatedChannelTransformation" and block.act == "relu"
    with torch.no_grad():
        for name, p in plain.named_parameters():
            if ".se.norm." in name:
                p.copy_(torch.randn_like(p))
    fused.load_state_dict(plain.state_dict())
    same_step(plain, fused)
    release = GCT(16)
    release.load_state_dict(block.norm.state_dict())
    u, identity = torch.randn(2, 16, 5, 5), torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(block(u, identity), torch.relu(release(u) + identity))


def test_gct_fusion_follows_its_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """GCT fuses with any kernel gate (the op computes 1 + gate), starts as the identity under
    `init = identity` in either lowering, and stays plain when its steps are not the op's (a
    scale without the offset 1)."""
    assert passes.kernel_supports(SeSettings(variant="gct", gate="sigmoid").resolved())
    assert passes.kernel_supports(SeSettings(variant="gct", squeeze="max").resolved())  # l2
    net = tiny("gct", "init = identity")
    source = net.source(fused=True)  # gamma and beta set after construction, as the plain one
    assert "GatedChannelTransformation(" in source
    assert sum("nn.init.zeros_(" in line and line.rstrip().endswith(("norm.gamma)", "norm.beta)"))
               for line in source.splitlines()) == 4
    blocks = [m for m in net.to_torch().modules()
              if type(m).__name__ == "GatedChannelTransformation"]
    assert len(blocks) == 2
    assert not any(m.norm.gamma.detach().any() or m.norm.beta.detach().any() for m in blocks)
    variant = VARIANTS["gct"]
    steps = tuple(replace(s, args=()) if s.kind == "scale" else s for s in variant.steps)
    monkeypatch.setitem(VARIANTS, "gct", replace(variant, steps=steps))
    assert not passes.kernel_supports(SeSettings(variant="gct").resolved())


GENERIC = ["ese", "se_bn", "srm", "ecam"]


@pytest.mark.parametrize("variant", GENERIC)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_fused_generic_agrees_with_plain(variant: str, training: bool) -> None:
    """The generic transform's lowering (ChannelAttention: the plain steps' modules under their
    names; its plain path on the CPU) has the plain lowering's state-dict keys both ways and
    gives its outputs, the gradients of the input and every parameter, and in training the BN
    running statistics, bit for bit."""
    from sedsl.pytorch.kernels import ChannelAttention

    net = tiny(variant)
    plain, fused = net.to_torch(fused=False).train(training), net.to_torch().train(training)
    assert list(fused.state_dict()) == list(plain.state_dict())
    assert isinstance(fused.conv2.block1.se, ChannelAttention)
    with torch.no_grad():  # SRM's cfc starts at 0
        for p in plain.parameters():
            p.add_(0.3 * torch.randn_like(p))
    fused.load_state_dict(plain.state_dict())
    plain.load_state_dict(fused.state_dict())
    same_step(plain, fused)
    for (name, b), c in zip(plain.state_dict().items(), fused.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(c, b, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize(("variant", "settings"), [
    ("se_bn", "excite = gelu"),  # any activation: torch runs the transform
    ("ese", "gate = tanh")])
def test_generic_transform_takes_any_activation(variant: str, settings: str) -> None:
    g = passes.fuse_se(tiny(variant, settings).graph)
    assert [r.attrs["transform"] for _, r in records(g) if r.op == "se"] == ["steps"] * 2


@pytest.mark.parametrize(("variant", "settings"), [("ese", "squeeze = max"),
                                                   ("se_bn", "squeeze = avgpool")])
def test_generic_transform_needs_a_statistic_the_kernel_computes(variant: str,
                                                                 settings: str) -> None:
    assert not any(r.op == "se" for _, r in records(passes.fuse_se(tiny(variant, settings)
                                                                    .graph)))


@pytest.mark.parametrize("variant", ["gc", "gca", "cbam", "lcbam", "scse", "coord", "simam"])
def test_blocks_without_the_shape_stay_plain(variant: str) -> None:
    """Attention pooling (gc, gca), spatial gates (cbam, lcbam, scse), directional pools
    (coord) and SimAM's per-element gate are not statistic -> per-channel steps -> gate ->
    scale: no dedicated op, and the step-kind rule refuses them."""
    assert VARIANTS[variant].fused is None
    s = SeSettings(variant=variant).resolved()
    assert not passes.kernel_supports(s)
    steps = VARIANTS[variant].steps_for(s)
    assert not passes._generic_supports(steps, s, TRANSFORMS["steps"])
