"""`sedsl export`: ONNX, TorchScript and torch.export files that run without sedsl and give the
outputs of the torch module they came from (onnxruntime for ONNX); the fused ops decompose into
ATen ops."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import sedsl
from sedsl.cli import app
from sedsl.pytorch.export import contains_sedsl_op, export, exported_program, trace_fused_op
from tests.small_spec import TINY, write_tiny

pytest.importorskip("onnxruntime")

# Runs in a fresh interpreter where `import sedsl` fails: each file must stand alone.
CHECK = """
import sys
sys.modules["sedsl"] = None
import numpy as np, torch
for path in sys.argv[1:]:
    x, expected = torch.load(path + ".io")
    if path.endswith(".onnx"):
        import onnxruntime as ort
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    elif path.endswith(".pt2"):
        got = torch.export.load(path).module()(x)
    else:
        got = torch.jit.load(path)(x)
    print(path, float((got - expected).abs().max()))
"""


def _model(fused: bool) -> tuple[sedsl.Network, torch.nn.Module]:
    torch.manual_seed(0)
    net = sedsl.loads(TINY)
    model = net.to_torch(fused=fused).eval()
    for m in model.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net, model


def test_decomposition_removes_the_fused_op() -> None:
    _, model = _model(fused=True)
    x = torch.randn(2, 3, 32, 32)
    with trace_fused_op():
        traced = torch.export.export(model, (x,))
        program = exported_program(model, x)
    assert contains_sedsl_op(traced)  # the op was traced...
    assert not contains_sedsl_op(program)  # ...and decomposed
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x))


@pytest.mark.parametrize(("variant", "op"), [("eca", "eca_block"), ("ge", "ge_block"),
                                             ("gct", "gct_block"), ("srm", "channel_stats"),
                                             ("se_bn", "channel_apply")])
def test_eca_ge_and_gct_ops_decompose(variant: str, op: str) -> None:
    """sedsl::eca_block (the fused eca and ceca blocks), sedsl::ge_block (Gather-Excite's
    parameter-free form), sedsl::gct_block and the generic transform's sedsl::channel_stats
    and sedsl::channel_apply decompose into ATen ops too."""
    other = "ceca" if variant == "eca" else variant
    net = sedsl.loads(TINY.replace("  ratio = 4\n", f"  variant = {variant}\n").replace(
        "in conv2..conv3", f"in conv2\n  at residual.end in conv3 {{ variant = {other} }}"))
    model = net.to_torch().eval()
    x = torch.randn(2, 3, 32, 32)
    with trace_fused_op():
        traced = torch.export.export(model, (x,))
        program = exported_program(model, x)
    targets = {str(n.target) for n in traced.graph.nodes if n.op == "call_function"}
    assert f"sedsl.{op}.default" in targets
    assert not contains_sedsl_op(program)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x))


def test_fused_op_to_onnx_equals_torch(tmp_path: Path) -> None:
    import onnxruntime as ort

    _, model = _model(fused=True)
    x = torch.randn(2, 3, 32, 32)
    with trace_fused_op():
        export(model, x, "onnx", tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-4, atol=1e-5)


def test_cli_exports_run_without_sedsl(tmp_path: Path) -> None:
    spec = write_tiny(tmp_path)
    x = torch.randn(1, 3, 32, 32)
    files = []
    for fmt, fused, suffix in (("onnx", True, "onnx"), ("torchscript", False, "pt"),
                               ("exported-program", True, "pt2")):
        _, model = _model(fused)
        weights = tmp_path / f"{fused}.pth"
        torch.save(model.state_dict(), weights)
        target = tmp_path / f"{fmt}-{'fused' if fused else 'plain'}.{suffix}"
        done = CliRunner().invoke(app, ["export", str(spec), "--format", fmt, "-o", str(target),
                                        "--fused" if fused else "--plain",
                                        "--weights", str(weights)])
        assert done.exit_code == 0, done.output
        with torch.no_grad():
            torch.save((x, model(x)), f"{target}.io")
        files.append(str(target))
    run = subprocess.run([sys.executable, "-c", CHECK, *files],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    diffs = dict(line.rsplit(" ", 1) for line in run.stdout.strip().splitlines())
    assert len(diffs) == 3 and all(float(d) < 1e-4 for d in diffs.values()), diffs


def test_unknown_format(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["export", str(write_tiny(tmp_path)), "--format", "tflite"])
    assert done.exit_code == 2  # a usage error, as graph's --format
