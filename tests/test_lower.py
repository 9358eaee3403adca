"""Lowering against timm: parameter counts to the unit, identical outputs after a weight transfer,
and the generated model.py against net.to_torch()."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")

import sedsl  # noqa: E402
from tests.conftest import compiled  # noqa: E402


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("spec", "overrides", "timm_name"), [
    ("se_resnet50.se", {}, "legacy_seresnet50"),
    ("se_resnet50.se", {"layout": "timm"}, "seresnet50"),
    ("se_resnet101.se", {}, "legacy_seresnet101"),
    ("se_resnet152.se", {}, "legacy_seresnet152"),
    ("se_resnext50.se", {}, "seresnext50_32x4d"),
    ("se_resnext101.se", {}, "seresnext101_32x4d"),
    ("senet154.se", {}, "legacy_senet154"),
])
def test_params_equal_timm(spec: str, overrides: dict[str, str], timm_name: str) -> None:
    net = compiled(spec, **overrides)
    expected = n_params(timm.create_model(timm_name))
    assert net.cost().se.params == expected  # analytic, no torch
    assert n_params(net.to_torch(fused=False)) == expected


@pytest.mark.parametrize(("spec", "timm_name"), [
    ("se_resnet50.se", "resnet50"),
    ("se_resnet101.se", "resnet101"),
    ("se_resnext50.se", "resnext50_32x4d"),
    ("se_resnext101.se", "resnext101_32x4d"),
])
def test_se_off_is_the_base_network(spec: str, timm_name: str) -> None:
    expected = n_params(timm.create_model(timm_name))
    assert compiled(spec).cost().base.params == expected
    assert n_params(compiled(spec).to_torch(se=False)) == expected


def assert_same_outputs(ours: torch.nn.Module, theirs: torch.nn.Module, size: int = 160) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, got = theirs.eval()(x), ours.eval()(x)
    scale = expected.abs().max().item()
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4 * scale


@pytest.mark.parametrize(("spec", "overrides", "timm_name"), [
    ("se_resnet50.se", {}, "legacy_seresnet50"),
    ("se_resnet50.se", {"layout": "timm"}, "seresnet50"),
    ("se_resnext101.se", {"layout": "timm"}, "seresnext101_32x4d"),
    ("se_resnext101.se", {}, "legacy_seresnext101_32x4d"),
    ("senet154.se", {}, "legacy_senet154"),
])
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
def test_outputs_equal_timm(spec: str, overrides: dict[str, str], timm_name: str,
                            fused: bool) -> None:
    theirs = timm.create_model(timm_name)
    ours = sedsl.transfer_weights(theirs, compiled(spec, **overrides).to_torch(fused=fused))
    assert_same_outputs(ours, theirs)


def test_generated_source_equals_to_torch(tmp_path: Path) -> None:
    net = compiled("se_resnext50.se")
    for fused in (False, True):
        path = tmp_path / f"model_{fused}.py"
        path.write_text(net.source(fused=fused))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        standalone = module.Model()
        reference = net.to_torch(fused=False)
        standalone.load_state_dict(reference.state_dict())
        assert list(standalone.state_dict()) == list(reference.state_dict())
        assert_same_outputs(standalone, reference, size=96)


def test_state_dict_keys_read_like_the_spec() -> None:
    keys = compiled("se_resnet50.se").to_torch().state_dict()
    assert "conv4.block3.conv2.weight" in keys
    assert "conv4.block3.se.fc1.weight" in keys
    assert "conv3.block1.shortcut.conv1.weight" in keys


def test_transfer_weights_names_the_first_mismatch() -> None:
    theirs = timm.create_model("legacy_seresnet50")
    ours = compiled("se_resnext50.se").to_torch()
    with pytest.raises(sedsl.ModelError, match=r"layer 2 of the source, layer1\.0\.conv1 "
                       r"\(weight 64x64x1x1\), fed by layer0\.bn1, fits no layer of the target; "
                       r"the target's next unmatched layer is conv2\.block1\.conv1 "
                       r"\(weight 128x64x1x1\)"):
        sedsl.transfer_weights(theirs, ours)


def test_transfer_weights_counts_tensors() -> None:
    ours = compiled("se_resnet50.se").to_torch()
    state = dict(list(ours.state_dict().items())[:-1])  # drop the classifier bias
    with pytest.raises(sedsl.ModelError, match=r"the first without a partner is head\.fc\.bias"):
        sedsl.transfer_weights(state, ours)


def test_training_step_runs() -> None:
    model = compiled("se_resnet50.se", classes=10, input="3x64x64").to_torch()
    out = model(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


TINY_SE_NET = """
use "lib/resnet.se"
network tiny(classes = 5) {
  input 3x32x32
  stem  = { conv(16, 3) bn relu }
  conv2 = bottleneck(8) * 2
  conv3 = bottleneck(16, stride = 2)
  head  = classifier(classes)
}
se {
  ratio = 4
  at residual.end
}
"""


def test_torch_compile_fullgraph_of_a_fused_network() -> None:
    """The whole lowered network, fused SE ops included, compiles as one graph (and trains)."""
    net = sedsl.loads(TINY_SE_NET, path=str(Path(__file__).parents[1] / "specs" / "tiny.se"))
    model = net.to_torch(fused=True)
    assert any(type(m).__name__ == "SqueezeExcite" for m in model.modules())
    compiled_model = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(compiled_model(x), model(x))
    compiled_model(x).sum().backward()
    assert model.conv2.block1.se.fc1.weight.grad is not None


def test_torch_export_of_a_fused_network() -> None:
    net = sedsl.loads(TINY_SE_NET, path=str(Path(__file__).parents[1] / "specs" / "tiny.se"))
    model = net.to_torch(fused=True).eval()
    x = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x))
