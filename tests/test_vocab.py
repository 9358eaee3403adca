"""The vocabulary (sedsl.ir.vocab): every entry, end to end. A new activation is one entry there;
this
walks them all: spec -> check -> build -> model.py -> to_torch() fused and plain -> same outputs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import sedsl
from sedsl.cli import app
from sedsl.ir import vocab
from sedsl.pytorch.kernels import reference

SPEC = """
block unit(c_out) {
  residual {
    conv(c_out, 3) bn ACT
    conv(c_out, 3) bn
  } shortcut {
    conv(c_out, 1) bn
  }
  ACT
}

network t_ACT(classes = 5) {
  input 4x8x8
  b = unit(8)
  head = { global_avgpool flatten linear(classes) }
}

se {
  ratio = 4
  excite = ACT
  gate = GATE
  at residual.end
}
"""


def spec_for(name: str) -> str:
    gate = name if vocab.ACTIVATIONS[name].gate else "sigmoid"
    return SPEC.replace("ACT", name).replace("GATE", gate)


def import_model(path: Path) -> nn.Module:
    spec = importlib.util.spec_from_file_location(f"model_{path.parent.name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model: nn.Module = module.Model()
    return model


def randomise_bn(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize("name", sorted(vocab.ACTIVATIONS))
def test_every_activation_end_to_end(name: str, tmp_path: Path) -> None:
    spec = tmp_path / f"{name}.se"
    spec.write_text(spec_for(name))
    runner = CliRunner()
    assert runner.invoke(app, ["check", str(spec)]).exit_code == 0
    out = tmp_path / name
    result = runner.invoke(app, ["build", str(spec), "-o", str(out)])
    assert result.exit_code == 0, result.output
    net = sedsl.load(spec)
    plain = randomise_bn(net.to_torch(fused=False))
    fused = net.to_torch(fused=True).eval()
    built = import_model(out / "model.py").eval()
    fused.load_state_dict(plain.state_dict())
    built.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        expected = plain(x)
        torch.testing.assert_close(fused(x), expected)
        torch.testing.assert_close(built(x), expected)
    # the fusion pass fuses exactly what the kernels implement; the rest stays plain ops
    fusable = name in vocab.KERNEL_ACTIVATIONS
    assert ("SqueezeExcite(" in (out / "model.py").read_text()) == fusable


def test_activation_ops_compute_the_vocabulary_functions() -> None:
    """The op each entry lowers to (an nn module) equals its functional form and in-place form."""
    x = torch.randn(64) * 4
    for name, act in vocab.ACTIVATIONS.items():
        module = getattr(nn, act.module)()
        expected = reference.ACTIVATIONS[name](x)
        torch.testing.assert_close(module(x), expected, msg=name)
        torch.testing.assert_close(reference.activate_(name, x.clone()), expected, msg=name)


def test_the_kernels_implement_what_the_vocabulary_says() -> None:
    triton_se = pytest.importorskip("sedsl.pytorch.kernels.triton_se")
    assert triton_se.KERNEL_ACTIVATIONS == vocab.KERNEL_ACTIVATIONS
    assert triton_se.KERNEL_SQUEEZES == vocab.KERNEL_SQUEEZES


def test_only_gates_gate(tmp_path: Path) -> None:
    spec = tmp_path / "bad.se"
    spec.write_text(SPEC.replace("ACT", "relu").replace("GATE", "gelu"))
    with pytest.raises(sedsl.SpecError, match="`gate` cannot be `gelu`"):
        sedsl.load(spec)


def test_fused_model_py_stands_alone_for_every_entry(tmp_path: Path) -> None:
    """Where sedsl is not installed, model.py's fallback SE block covers the whole vocabulary."""
    script = ["import sys; sys.modules['sedsl'] = None", "import importlib.util, torch"]
    for name in vocab.ACTIVATIONS:
        spec = tmp_path / f"{name}.se"
        spec.write_text(spec_for(name))
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.py").write_text(sedsl.load(spec).source(fused=True))
        path = str(folder / "model.py")
        script.append(
            f"s = importlib.util.spec_from_file_location('m_{name}', {path!r})\n"
            f"m = importlib.util.module_from_spec(s); s.loader.exec_module(m)\n"
            f"assert m.Model().eval()(torch.randn(2, 4, 8, 8)).shape == (2, 5)")
    done = subprocess.run([sys.executable, "-c", "\n".join(script)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", sorted(vocab.ACTIVATIONS))
def test_every_activation_matches_timms_se_module(name: str, tmp_path: Path) -> None:
    """The judge is timm: the same unit with timm's SEModule (act_layer / gate_layer set to the
    entry's nn module) at the end of the residual branch gives the same outputs."""
    layers = pytest.importorskip("timm.layers.squeeze_excite")
    spec = tmp_path / f"{name}.se"
    spec.write_text(spec_for(name))
    ours = randomise_bn(sedsl.load(spec).to_torch(fused=False))
    act = getattr(nn, vocab.ACTIVATIONS[name].module)
    gate = act if vocab.ACTIVATIONS[name].gate else nn.Sigmoid
    se = layers.SEModule(8, rd_channels=2, act_layer=act, gate_layer=gate).eval()
    se.load_state_dict({k: v for k, v in ours.b.se.state_dict().items()})
    b = ours.b
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        branch = b.bn2(b.conv2(getattr(b, f"{name}1")(b.bn1(b.conv1(x)))))
        unit = getattr(b, f"{name}2")(se(branch) + b.shortcut.bn1(b.shortcut.conv1(x)))
        head = ours.head.linear1(torch.flatten(ours.head.global_avgpool1(unit), 1))
        torch.testing.assert_close(ours(x), head)
