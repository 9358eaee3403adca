"""Importing PyTorch models (sedsl.from_torch) against the models themselves, timm and fvcore."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

from typer.testing import CliRunner  # noqa: E402

import sedsl  # noqa: E402
from sedsl.cli import app  # noqa: E402
from sedsl.ir.node import record, records  # noqa: E402
from sedsl.pytorch.flops import fvcore_flops  # noqa: E402
from sedsl.targets.spec import write_spec  # noqa: E402

SE_RESNET = "se { ratio = 16; at residual.end of Bottleneck }"


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def assert_same_outputs(ours: nn.Module, theirs: nn.Module, size: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected, got = theirs.eval()(x), ours.eval()(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()


def test_resnet50_with_se_is_timm_seresnet50() -> None:
    net = sedsl.from_torch(torchvision.models.resnet50(), input=64, se=SE_RESNET)
    theirs = timm.create_model("seresnet50")
    assert net.cost().se.params == n_params(theirs) == 28_088_024
    for fused in (False, True):
        ours = net.to_torch(fused=fused)
        assert n_params(ours) == n_params(theirs)
        assert_same_outputs(sedsl.transfer_weights(theirs, ours), theirs, 64)


MODELS = [  # (zoo, name, input size): small inputs keep CI fast
    ("torchvision", "resnet50", 64),
    ("torchvision", "mobilenet_v2", 64),
    ("torchvision", "efficientnet_b0", 64),
    ("torchvision", "regnet_y_400mf", 64),
    ("torchvision", "vgg16_bn", 32),
    ("timm", "resnext50_32x4d", 64),
    ("timm", "inception_resnet_v2", 75),  # the smallest input its valid convolutions allow
]


def create(zoo: str, name: str) -> nn.Module:
    model = getattr(torchvision.models, name)() if zoo == "torchvision" else \
        timm.create_model(name)
    return model.eval()


@pytest.mark.parametrize(("zoo", "name", "size"), MODELS, ids=[m[1] for m in MODELS])
def test_imported_model_equals_the_original(zoo: str, name: str, size: int) -> None:
    """Parameters, outputs (plain and fused lowering, weights carried over) and fvcore's count."""
    theirs = create(zoo, name)
    net = sedsl.from_torch(theirs, input=size)
    cost = net.cost()
    assert cost.se.params == n_params(theirs)
    for fused in (False, True):
        assert_same_outputs(net.to_torch(fused=fused), theirs, size)
    assert cost.se.flops == fvcore_flops(theirs, (3, size, size))


def test_names_kinds_stages_and_residual_units() -> None:
    net = sedsl.from_torch(torchvision.models.resnet50(), input=64)
    g = net.base
    rec = record(g, "layer3.4.conv2")
    assert (rec.op, rec.stage, rec.block, rec.kind, rec.branch) == \
        ("conv", "layer3", "layer3.4", "Bottleneck", "residual")
    assert record(g, "layer1.0.downsample.0").branch == "shortcut"
    add = record(g, "layer1.0.add")
    assert add.attrs["branches"] == ("residual", "shortcut")
    assert list(dict.fromkeys(r.stage for _, r in records(g) if r.stage)) == [
        "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool",
        "flatten", "fc"]
    assert "layer3.4.conv2.weight" in net.to_torch().state_dict()


@pytest.mark.parametrize(("rule", "blocks"), [
    ("at pre in layer2", ["layer2.0", "layer2.1", "layer2.2", "layer2.3"]),
    ("at identity in layer4.1..layer4.2", ["layer4.1", "layer4.2"]),
    ("at post in layer1..layer2 of Bottleneck", [f"layer1.{i}" for i in range(3)]
     + [f"layer2.{i}" for i in range(4)]),
    ("after bn2 in layer4.2", ["layer4.2"]),
])
def test_se_rules_select_as_in_a_spec(rule: str, blocks: list[str]) -> None:
    net = sedsl.from_torch(torchvision.models.resnet50(), input=64, se=rule)
    found = sorted({r.block for _, r in records(net.graph) if r.role == "se"})
    assert found == blocks


def test_se_at_every_residual_of_mobilenet_v2() -> None:
    """Only the units torchvision gives a residual connection have a residual.end."""
    model = torchvision.models.mobilenet_v2()
    net = sedsl.from_torch(model, input=64, se="at residual.end of InvertedResidual")
    expected = {n for n, m in model.named_modules() if getattr(m, "use_res_connect", False)}
    assert {r.block for _, r in records(net.graph) if r.role == "se"} == expected


class TanhGelu(nn.Module):
    """GELU's tanh approximation: not sedsl's `gelu` (the exact one)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.conv(x), approximate="tanh")


class Branchy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if bool(torch.relu(x)) else -x  # control flow on a value sedsl could map


class Summed(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.conv(x))


@pytest.mark.parametrize(("model", "message"), [
    (nn.Sequential(nn.Conv2d(3, 8, 3), nn.GELU(approximate="tanh")),
     "`1` (GELU): uses GELU with {'approximate': 'tanh'}; sedsl's `gelu` is GELU() with its "
     "defaults"),
    (nn.Sequential(TanhGelu()), "calls gelu with options {'approximate': 'tanh'}"),
    (nn.Sequential(nn.Conv2d(3, 3, 1), Branchy()), "cannot trace `1` (Branchy): TraceError"),
    (nn.Sequential(nn.Conv2d(3, 3, 1), Summed()),
     "`1` (Summed): calls the tensor method `.sum()`, which sedsl has no op for"),
    (Shared(), "`conv` (Conv2d) is called twice with the same weights"),
])
def test_unknown_constructs_are_named(model: nn.Module, message: str) -> None:
    with pytest.raises(sedsl.SpecError) as err:
        sedsl.from_torch(model, input=16)
    assert message in str(err.value)


# --- the spec written back -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2"])
def test_written_spec_builds_the_same_model(name: str) -> None:
    theirs = create("torchvision", name)
    written = write_spec(sedsl.from_torch(theirs, input=64, name=name).base)
    assert len(written.text.splitlines()) < 50
    back = sedsl.loads(written.text, path=f"{name}.se")
    assert back.cost().base.params == n_params(theirs)
    assert back.cost().base.flops == fvcore_flops(theirs, (3, 64, 64))
    assert_same_outputs(sedsl.transfer_weights(theirs, back.to_torch()), theirs, 64)


def test_the_documented_spec_is_what_import_writes() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "import.md").read_text()
    documented = re.findall(r"```se\n(.*?)```", doc, re.S)[0]
    net = sedsl.from_torch(create("torchvision", "resnet50"), input=64, name="resnet50")
    assert write_spec(net.base).text == documented


def test_what_has_no_spec_form_is_refused(tmp_path: Path) -> None:
    """Write-back is exact or refuses: a gate the model computes itself is refused by name
    (even in data flow that `from` states), and `sedsl import` writes no file."""
    with pytest.raises(sedsl.SpecError, match=r"cannot write GatedBridge as a spec: `mul` "):
        write_spec(sedsl.from_torch(GatedBridge(), input=8).base)
    out = tmp_path / "bridge.se"
    result = CliRunner().invoke(app, ["import", "tests.test_fromtorch:GatedBridge", "-o",
                                      str(out), "--input", "8"])
    assert result.exit_code == 1 and not out.exists()
    assert "cannot write GatedBridge as a spec" in result.stderr


class GatedBridge(nn.Module):
    """(a + b) * sigmoid(mean(h(a))): `a` feeds two merges (a `from` body states that), and the
    product by a gate of the model's own (no spec states that but as an `se` rule)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.h = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        return (a + self.b(x)) * torch.sigmoid(self.h(a).mean((2, 3), keepdim=True))


def test_cli_import_writes_a_spec(tmp_path: Path) -> None:
    out = tmp_path / "mobilenet_v2.se"
    result = CliRunner().invoke(app, ["import", "torchvision:mobilenet_v2", "-o", str(out),
                                      "--input", "64"])
    assert result.exit_code == 0, result.output
    assert sedsl.load(out).cost().base.params == n_params(create("torchvision", "mobilenet_v2"))
    bad = CliRunner().invoke(app, ["import", "torchvision:no_such_model"])
    assert bad.exit_code == 1 and "cannot create `torchvision:no_such_model`" in bad.stderr


def test_a_bad_se_rule_points_into_the_rule_text() -> None:
    with pytest.raises(sedsl.SpecError) as err:
        sedsl.from_torch(create("torchvision", "resnet18"), input=32,
                         se="ratio = 8; at residual.end of Bottleneck")
    lines = str(err.value).splitlines()
    assert lines[:2] == ["<se>:3:1: error: no block of kind `Bottleneck` in this network",
                         "3 | at residual.end of Bottleneck"]


# --- every activation of the vocabulary imports, in each form torch offers it -----------------


class Called(nn.Module):
    """conv, then an activation called as `fn(x)` (a function or a bound method's name)."""

    def __init__(self, fn: Any, method: str | None = None) -> None:
        super().__init__()
        self.conv, self.fn, self.method = nn.Conv2d(3, 8, 3), fn, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return getattr(y, self.method)() if self.method else self.fn(y)


def _forms(name: str) -> list[nn.Module]:
    """Every way torch spells the vocabulary's activation `name`: its module, its function in
    torch.nn.functional and torch, its in-place function, its Tensor methods."""
    from sedsl.ir.vocab import ACTIVATIONS

    a = ACTIVATIONS[name]
    forms: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, 8, 3), getattr(nn, a.module)())]
    for fn in (getattr(nn.functional, name, None), getattr(torch, name, None),
               getattr(torch, name + "_", None)):
        if fn is not None:
            forms.append(Called(fn))
    forms += [Called(None, m) for m in (name, name + "_") if hasattr(torch.Tensor, m)]
    return forms


@pytest.mark.parametrize("name", sorted(__import__("sedsl.ir.vocab", fromlist=["x"]).ACTIVATIONS))
def test_every_vocabulary_activation_imports(name: str) -> None:
    for model in _forms(name):
        net = sedsl.from_torch(model.eval(), input=(3, 9, 9))
        assert [r.op for _, r in records(net.graph)][-1] == name
        assert_same_outputs(net.to_torch(fused=False), model, 9)
