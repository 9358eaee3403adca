"""Specs written back from imported models (sedsl.targets.spec): exact or refused. Every torchvision
classification model that imports is written to a spec that reloads to its parameters and FLOPs,
or refused with an error naming the layer; those without SE blocks of their own all round-trip.
Each op of the op table prints a call that elaborates to the same attributes, or has no printed
form."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import sedsl
from sedsl.cli import app
from sedsl.ir.node import records
from sedsl.ir.ops import OPS, Op
from sedsl.language.printer import unparse_expr
from sedsl.targets.spec import NoSpecForm, op_call, write_spec

torchvision = pytest.importorskip("torchvision")


@contextmanager
def empty_weights() -> Iterator[None]:
    """Models built with their parameters and buffers on the meta device: no memory, no
    initialisation (RegNetY-128GF has 645M parameters); import needs only their shapes."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(self: nn.Module, name: str, p: nn.Parameter | None) -> None:
        register_parameter(self, name, p)
        if p is not None:
            self._parameters[name] = nn.Parameter(p.to("meta"), p.requires_grad)

    def buffer(self: nn.Module, name: str, b: torch.Tensor | None, persistent: bool = True
               ) -> None:
        register_buffer(self, name, None if b is None else b.to("meta"), persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer  # type: ignore
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]


ZOO = [n for n in torchvision.models.list_models(module=torchvision.models)
       if not n.startswith(("vit_", "swin_", "maxvit_"))]


def imported(name: str) -> sedsl.Network | None:
    with empty_weights():
        model = torchvision.models.get_model(name, weights=None)
    try:
        return sedsl.from_torch(model, input=75 if name == "inception_v3" else 64, name=name)
    except sedsl.SpecError:
        return None  # not importable (yet): tests/test_fromtorch.py names why


@pytest.mark.parametrize("name", ZOO)
def test_every_torchvision_model_round_trips(name: str) -> None:
    """The written spec builds the imported network: the base network (`--no-se`) and, with
    its se section, the model's own attention blocks."""
    net = imported(name)
    if net is None:
        pytest.skip(f"{name} does not import")
    written = write_spec(net.base_ir, se_graph=net.ir)
    back = sedsl.loads(written.text, path=f"{name}.se").cost()
    theirs = net.cost()
    assert (back.base.params, back.base.flops) == (theirs.base.params, theirs.base.flops)
    assert (back.se.params, back.se.flops) == (theirs.se.params, theirs.se.flops)


class DepthwiseAndStride(nn.Module):
    """The issue's repro: a depthwise conv was written as `conv(16, 36)`, `stride = 12` as a
    12x12 kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, groups=16)
        self.pw = nn.Conv2d(16, 36, 1)
        self.far = nn.Conv2d(36, 8, 3, stride=12, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.far(self.pw(self.dw(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def test_depthwise_and_stride_round_trip() -> None:
    model = DepthwiseAndStride()
    net = sedsl.from_torch(model, input=64)
    text = write_spec(net.base_ir).text
    assert "dw = conv(16, 3, padding = 0, groups = 16, bias = true)" in text
    assert "far = conv(8, 3, stride = 12, padding = 0)" in text
    back = sedsl.loads(text).cost().base
    assert back.params == sum(p.numel() for p in model.parameters())
    assert (back.params, back.flops) == (net.cost().base.params, net.cost().base.flops)


class Bridge(nn.Module):
    """(a + b) + h(a): `a` feeds two merges, which no sequence, residual or parallel states;
    a body of `from` statements does."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.h = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        return (a + self.b(x)) + self.h(a)


def test_paths_that_meet_are_written_with_from() -> None:
    model = Bridge().eval()
    text = write_spec(sedsl.from_torch(model, input=8).base_ir).text
    assert "= from input " in text and " add" in text
    back = sedsl.loads(text).to_torch()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(sedsl.transfer_weights(model, back).eval()(x), model(x), atol=1e-5)


def test_names_are_unique_and_legal(tmp_path: Path) -> None:
    """Module names that are keywords, Python keywords or module attributes are renamed."""
    model = nn.Sequential()
    for name in ("input", "shortcut", "block", "se", "conv1"):
        model.add_module(name, nn.Conv2d(3, 3, 1))
    net = sedsl.from_torch(model, input=8)
    text = write_spec(net.base_ir).text
    back = sedsl.loads(text)
    assert back.cost().base.params == net.cost().base.params
    for name in ("input_1", "shortcut_", "block_", "se_", "conv1"):
        assert f"  {name} = conv(3, 1, bias = true)\n" in text


def test_cli_imports_timm_resnet50d(tmp_path: Path) -> None:
    """It ended in an internal error (StopIteration in the old printer)."""
    timm = pytest.importorskip("timm")
    out = tmp_path / "resnet50d.se"
    result = CliRunner().invoke(app, ["import", "timm:resnet50d", "-o", str(out), "--input",
                                      "64"])
    assert result.exit_code == 0, result.output
    model = timm.create_model("resnet50d")
    assert sedsl.load(out).cost().base.params == sum(p.numel() for p in model.parameters())


def test_the_written_spec_keeps_the_weights_order() -> None:
    """transfer_weights pairs tensors in order: the written spec gives resnet18's outputs."""
    model = torchvision.models.resnet18().eval()
    back = sedsl.loads(write_spec(sedsl.from_torch(model, input=32).base_ir).text).to_torch()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(sedsl.transfer_weights(model, back).eval()(x), model(x), atol=1e-5)


# --- op calls from the op table ------------------------------------------------------------------

SAMPLES: dict[str, Any] = {"count": 16, "index": 1, "int": -1, "pair": 3, "pair0": 1,
                           "float": 0.25, "positive": 0.25, "prob": 0.25, "bool": True}
OTHER: dict[str, Any] = {"count": 2, "index": 0, "int": 2, "pair": "1x3", "pair0": "0x1",
                         "float": 1e-3, "positive": 1e-3, "prob": 0.5, "bool": False}


def calls(op: Op) -> Iterator[str]:
    """Calls of `op`: its required arguments, then each argument set to two other values."""
    required = [a.name for a in op.args if a.default is None and not a.derived]

    def text(value: Any) -> str:
        return str(value).lower()

    def call(values: dict[str, str]) -> str:
        args = [values[n] for n in required] + \
            [f"{n} = {v}" for n, v in values.items() if n not in required]
        return f"{op.name}({', '.join(args)})" if args else op.name

    base = {a.name: text(SAMPLES[a.kind]) for a in op.args if a.name in required}
    yield call(base)
    for a in op.args:
        for values in (SAMPLES, OTHER):
            yield call({**base, a.name: text(values[a.kind])})


def node_attrs(call: str, flat: bool) -> dict[str, Any] | None:
    before = "global_avgpool flatten" if flat else ""
    spec = f"network n {{ input 8x16x16\n {before}\n x = {call} }}"
    try:
        g = sedsl.loads(spec).base_ir
    except sedsl.SpecError:
        return None  # not a valid call here (groups that do not divide, ...)
    rec = next(r for name, r in records(g) if name.startswith("x"))
    return dict(rec.attrs)


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_prints_as_its_attributes_or_has_no_printed_form(name: str) -> None:
    op = OPS[name]
    if not op.user:
        with pytest.raises(NoSpecForm, match="no printed form"):
            op_call(op, {})
        return
    checked = 0
    for call in calls(op):
        for flat in (False, True):
            attrs = node_attrs(call, flat)
            if attrs is None:
                continue
            printed = unparse_expr(op_call(op, attrs))
            assert node_attrs(printed, flat) == attrs, (call, printed)
            checked += 1
    assert checked


def test_an_se_section_is_written_with_the_network() -> None:
    """`write_spec(g, se_text)`: the rules select the written blocks as they did the model's."""
    net = sedsl.from_torch(torchvision.models.resnet50(), input=64,
                           se="ratio = 16; at residual.end of Bottleneck")
    text = write_spec(net.base_ir, "ratio = 16; at residual.end of Bottleneck").text
    assert text.endswith("se {\n  ratio = 16\n  at residual.end of Bottleneck\n}\n")
    assert sedsl.loads(text).cost().se.params == net.cost().se.params == 28_088_024


class ProjectionFirst(nn.Module):
    """DLA's pattern: the projection runs before the residual branch, and both start with a 1x1
    conv of the same shape on the same input; which is which shows only at the bn after one."""

    def __init__(self) -> None:
        super().__init__()
        self.project = nn.Conv2d(3, 8, 1, bias=False)
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.project(x)
        return self.conv2(torch.relu(self.bn1(self.conv1(x)))) + shortcut


def test_weights_pair_where_two_layers_look_alike() -> None:
    """transfer_weights tries the other candidate when the first leads nowhere."""
    model = ProjectionFirst().eval()
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-1, 1)
        model.bn1.running_var.uniform_(0.5, 2)
    back = sedsl.loads(write_spec(sedsl.from_torch(model, input=8).base_ir).text).to_torch()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(sedsl.transfer_weights(model, back).eval()(x), model(x), atol=1e-5)
