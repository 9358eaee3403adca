"""A model's own attention modules become SE blocks (issue 22 item 1, issue 19 item 4), every
residual unit is a unit (issue 22 item 2): checked against the models themselves.

Each attention class sedsl reads (sedsl/pytorch/attention.py) sits after bn3 of every
bottleneck of a small timm ResNet (timm's own `attn_layer` argument) or in the zoo model that
ships it; the import must have the model's parameters and outputs (every parameter and BN
randomised first, the imported weights), name the variant, and write a spec whose base network
is the model without the modules and whose se section puts them back: the reloaded spec has the
model's parameters and, after `sedsl.transfer_weights`, its outputs."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import fx, nn
from typer.testing import CliRunner

import sedsl
from sedsl.cli import app
from sedsl.ir.node import records
from sedsl.targets.spec import write_spec
from tests.references import assert_same_outputs, fvcore_count, n_params, randomise

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")
resnet = pytest.importorskip("timm.models.resnet")
layers = pytest.importorskip("timm.layers")
cbam = pytest.importorskip("timm.layers.cbam")
coord_attn = pytest.importorskip("timm.layers.coord_attn")

SIZE = 64


def small_resnet(attn: Any) -> nn.Module:
    """timm's ResNet with four one- or two-unit stages of widths 24..48 and `attn` after bn3."""
    model: nn.Module = resnet.ResNet(resnet.Bottleneck, (2, 1, 1, 1), num_classes=10,
                                     channels=(6, 10, 12, 8), block_args={"attn_layer": attn})
    return randomise(model)


def attention_modules(model: nn.Module, cls: type) -> int:
    return sum(1 for m in model.modules() if type(m) is cls)


def round_trip(model: nn.Module, net: sedsl.Network) -> str:
    """Write `net` back; the spec's base network is the model without its attention modules
    and its se section puts them back (parameters; outputs after transfer_weights)."""
    text = write_spec(net.base_ir, se_graph=net.ir).text
    back = sedsl.loads(text)
    assert back.cost().se.params == n_params(model)
    own = sum(n_params(m) for m in model.modules() if type(m).__name__ in ATTENTION)
    assert back.cost().base.params == n_params(model) - own
    assert_same_outputs(sedsl.transfer_weights(model, back.to_torch(fused=False)), model,
                        (3, SIZE, SIZE))
    return text


ATTENTION = {"SqueezeExcitation", "SEModule", "SqueezeExcite", "EffectiveSEModule", "EcaModule",
             "CecaModule", "GlobalContext", "CbamModule", "LightCbamModule", "CoordAttn"}

# (attn_layer for timm's ResNet, the module class, the variant it is)
TIMM_CASES = {
    "se": ("se", layers.SEModule, "se"),
    "se_bn": (functools.partial(layers.SEModule, norm_layer=nn.BatchNorm2d), layers.SEModule,
              "se_bn"),
    "se_maxpool": (functools.partial(layers.SEModule, add_maxpool=True), layers.SEModule, "se"),
    "ese": ("ese", layers.EffectiveSEModule, "ese"),
    "eca": ("eca", layers.EcaModule, "eca"),
    "ecam": ("ecam", layers.EcaModule, "ecam"),
    "ceca": ("ceca", layers.CecaModule, "ceca"),
    "gc": ("gc", layers.GlobalContext, "gc"),
    "gca": ("gca", layers.GlobalContext, "gca"),
    "cbam": ("cbam", cbam.CbamModule, "cbam"),
    "lcbam": ("lcbam", cbam.LightCbamModule, "lcbam"),
    "coord": ("coord", coord_attn.CoordAttn, "coord"),
}


@pytest.mark.parametrize("case", sorted(TIMM_CASES))
def test_timm_attention_modules_import_as_their_variant(case: str) -> None:
    attn, cls, variant = TIMM_CASES[case]
    model = small_resnet(attn)
    net = sedsl.from_torch(model, input=SIZE, name=f"resnet_{case}")
    cost = net.cost()
    assert cost.variants == {variant: attention_modules(model, cls)} == {variant: 5}
    assert cost.se.params == n_params(model)
    assert cost.base.params == n_params(model) - sum(
        n_params(m) for m in model.modules() if type(m) is cls)
    assert_same_outputs(net.to_torch(fused=False), model, (3, SIZE, SIZE))
    text = round_trip(model, net)
    assert (f"variant = {variant}" in text) == (variant != "se")


@pytest.mark.parametrize("case", ["se_bn", "ese", "ecam"])
def test_timm_modules_of_the_generic_transform_run_fused(case: str) -> None:
    """The imported ese, se_bn and ecam blocks lower fused to sedsl's ChannelAttention (the
    plain steps' modules between the statistic and apply ops), with the plain lowering's
    state-dict keys, and the fused model gives timm's outputs."""
    from sedsl.pytorch.kernels import ChannelAttention

    model = small_resnet(TIMM_CASES[case][0])
    net = sedsl.from_torch(model, input=SIZE, name=f"resnet_{case}")
    fused, plain = net.to_torch(), sedsl.transfer_weights(model, net.to_torch(fused=False))
    assert sum(isinstance(m, ChannelAttention) for m in fused.modules()) == 5
    assert list(fused.state_dict()) == list(plain.state_dict())
    fused.load_state_dict(plain.state_dict())
    assert_same_outputs(fused, model, (3, SIZE, SIZE))


def test_an_attention_module_no_variant_has_is_refused_by_name() -> None:
    both = functools.partial(layers.GlobalContext, fuse_add=True, fuse_scale=True)
    with pytest.raises(sedsl.SpecError, match=r"`layer1.0.se` \(GlobalContext\): is an attention "
                       "module sedsl reads as an SE variant, but it fuses by scale and by add"):
        sedsl.from_torch(small_resnet(both), input=SIZE)
    skip = functools.partial(coord_attn.CoordAttn, has_skip=True)
    with pytest.raises(sedsl.SpecError, match=r"it adds its input back \(has_skip=True\)"):
        sedsl.from_torch(small_resnet(skip), input=SIZE)


@pytest.mark.parametrize(("zoo", "name", "variant", "count"), [
    ("torchvision", "mobilenet_v3_small", "se", 9),  # torchvision's SqueezeExcitation
    ("timm", "tinynet_e", "se", 10),  # timm's EfficientNet-family SqueezeExcite
    ("timm", "legacy_seresnet18", "se", 8),  # the legacy SENet's SEModule
])
def test_zoo_attention_modules_import_and_round_trip(zoo: str, name: str, variant: str,
                                                     count: int) -> None:
    model = randomise(torchvision.models.get_model(name) if zoo == "torchvision" else
                      timm.create_model(name))
    net = sedsl.from_torch(model, input=SIZE, name=name)
    assert net.cost().variants == {variant: count}
    assert net.cost().se.params == n_params(model)
    assert_same_outputs(net.to_torch(fused=False), model, (3, SIZE, SIZE))
    round_trip(model, net)


def without_se(model: nn.Module, cls: type) -> nn.Module:
    """The model with each attention module of class `cls` replaced by the identity."""
    for name, m in list(model.named_modules()):
        if type(m) is cls:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, nn.Identity())
    return model


def test_import_writes_efficientnet_b0_with_its_se_blocks_as_rules(tmp_path: Path) -> None:
    """The issue's test: `sedsl import torchvision:efficientnet_b0` writes a spec whose
    `--no-se` network is EfficientNet-B0 without its SqueezeExcitation modules and whose se
    section puts torchvision's blocks back exactly: parameters, fvcore's FLOPs, outputs."""
    out = tmp_path / "efficientnet_b0.se"
    result = CliRunner().invoke(app, ["import", "torchvision:efficientnet_b0", "-o", str(out),
                                      "--input", str(SIZE)])
    assert result.exit_code == 0, result.output
    assert "16 se attention blocks" in result.output
    text = out.read_text()
    assert text.endswith("se {\n  ratio = 4\n  base = block_in\n  squeeze = avgpool\n"
                         "  excite = silu\n  after silu1 of MBConv\n"
                         "  after silu2 of MBConv2, MBConv3\n}\n")
    spec = sedsl.load(out)
    model = randomise(torchvision.models.efficientnet_b0())
    base = without_se(randomise(torchvision.models.efficientnet_b0()),
                      torchvision.ops.SqueezeExcitation)
    shape = (3, SIZE, SIZE)
    cost = spec.cost()
    assert (cost.se.params, cost.se.flops) == (n_params(model), fvcore_count(model, shape))
    assert (cost.base.params, cost.base.flops) == (n_params(base), fvcore_count(base, shape))
    assert_same_outputs(sedsl.transfer_weights(model, spec.to_torch(fused=False)), model, shape)
    assert_same_outputs(sedsl.transfer_weights(base, spec.to_torch(se=False)), base, shape)


def test_ecaresnet50d_imports_as_eca_and_its_rules_can_change(tmp_path: Path) -> None:
    """`from_torch(timm ecaresnet50d)` names the variant; `sedsl import` writes `variant =
    eca` and the spec reloads to the model; `se=` replaces the model's blocks (CBAM here: timm's
    resnet50d with attn_layer='cbam', its parameters and outputs)."""
    model = randomise(timm.create_model("ecaresnet50d"))
    net = sedsl.from_torch(model, input=SIZE, name="ecaresnet50d")
    assert net.cost().variants == {"eca": 16}
    assert net.cost().se.params == n_params(model)
    out = tmp_path / "ecaresnet50d.se"
    result = CliRunner().invoke(app, ["import", "timm:ecaresnet50d", "-o", str(out),
                                      "--input", str(SIZE)])
    assert result.exit_code == 0, result.output
    assert "variant = eca" in out.read_text()
    back = sedsl.load(out)
    assert back.cost().se.params == n_params(model)
    assert back.cost().base.params == n_params(timm.create_model("resnet50d"))
    assert_same_outputs(sedsl.transfer_weights(model, back.to_torch(fused=False)), model,
                        (3, SIZE, SIZE))

    other = sedsl.from_torch(model, input=SIZE, se="variant = cbam; at residual.end")
    theirs = randomise(timm.create_model("resnet50d", block_args={"attn_layer": "cbam"}))
    assert other.cost().variants == {"cbam": 16}
    assert other.cost().se.params == n_params(theirs)
    assert_same_outputs(sedsl.transfer_weights(theirs, other.to_torch(fused=False)), theirs,
                        (3, SIZE, SIZE))


# --- every residual unit is a unit ---------------------------------------------------------------


def residual_adds(model: nn.Module) -> int:
    """The adds of two tensors in the model's own torch.fx graph."""
    graph = fx.symbolic_trace(model.eval()).graph
    adds = 0
    for node in graph.nodes:
        add = node.target in ("add", "add_") if node.op == "call_method" else \
            node.target in (torch.add, __import__("operator").add, __import__("operator").iadd)
        if add and sum(isinstance(a, fx.Node) for a in node.args[:2]) == 2:
            adds += 1
    return adds


@pytest.mark.parametrize("name", ["dla34", "regnetx_002", "regnety_008"])
def test_residual_end_reaches_every_residual_add(name: str) -> None:
    """timm's stage modules (DlaTree, RegStage) hold several units: each is a block instance,
    so `at residual.end` reaches every add of the model."""
    model = timm.create_model(name)
    net = sedsl.from_torch(model, input=SIZE, se="at residual.end")
    blocks = {r.se.unit for _, r in records(net.ir) if r.se is not None}
    assert len(blocks) == residual_adds(model)
    assert not net.notes


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class TwoPaths(nn.Module):
    """a(x) + b(x): an add, but no residual unit (neither path is the shortcut)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(x)


def test_a_rule_that_reaches_some_adds_says_so() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), Residual(), TwoPaths(), Residual())
    net = sedsl.from_torch(model, input=16, se="ratio = 4; at residual.end")
    assert net.cost().variants == {"se": 2}
    assert net.notes == ("`at residual.end` reaches 2 of the 3 adds in the blocks it selects; "
                         "not reached: `m2.add`",)


def test_block_end_does_not_land_on_the_classifier_head() -> None:
    """timm's ResNet pools and flattens in `global_pool` (a block): its block.end is flat."""
    net = sedsl.from_torch(timm.create_model("resnet18"), input=SIZE, se="at block.end")
    assert net.cost().variants == {"se": 8}


def test_write_back_states_any_se_graph_as_rules() -> None:
    """Rules with ranges, per-instance overrides and `after` points are written in the written
    spec's names and reload to the same SE network (here rules given to from_torch)."""
    with torch.device("meta"):
        model = torchvision.models.resnet50()
    rules = ("ratio = 8; at residual.end in layer2..layer3; at residual.end in layer3.1 "
             "{ ratio = 4 }; after relu_1 in layer4.2 { variant = eca }")
    net = sedsl.from_torch(model, input=SIZE, se=rules)
    assert net.cost().variants == {"se": 10, "eca": 1}
    text = write_spec(net.base_ir, se_graph=net.ir).text
    back = sedsl.loads(text).cost()
    assert (back.se.params, back.se.flops) == (net.cost().se.params, net.cost().se.flops)
    assert back.variants == {"se": 10, "eca": 1}
    assert "at residual.end in layer3.block2 of Bottleneck { ratio = 4 }" in text
