"""The `sedsl` command, through typer's CliRunner."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sedsl.cli import app
from tests.conftest import SPECS

R50 = str(SPECS / "se_resnet50.se")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_build_writes_three_files(tmp_path: Path) -> None:
    code, out, _ = run("build", R50, "-o", str(tmp_path / "out"))
    assert code == 0, out
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["graph.json", "model.py", "summary.json"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["se"]["params"] == 28088024 and summary["base"]["params"] == 25557032
    assert [r["key"] for r in summary["rows"]] == ["stem", "conv2", "conv3", "conv4", "conv5",
                                                   "head"]
    assert "28,088,024" in out and "conv5" in out


def test_built_model_py_runs_standalone(tmp_path: Path) -> None:
    """model.py needs only torch: run it in a fresh interpreter where sedsl cannot be imported."""
    assert run("build", R50, "-o", str(tmp_path), "--set", "classes=7", "--input", "64")[0] == 0
    script = (
        "import sys; sys.modules['sedsl'] = None\n"  # make `import sedsl` fail
        "import torch, model\n"
        "m = model.Model().eval()\n"
        "print(tuple(m(torch.zeros(1, 3, 64, 64)).shape), sum(p.numel() for p in m.parameters()))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, check=True)
    shape, params = done.stdout.split(")")
    assert shape == "(1, 7" and int(params) == 28088024 - 2049000 + 2048 * 7 + 7


def test_build_no_se_and_no_fuse(tmp_path: Path) -> None:
    assert run("build", R50, "-o", str(tmp_path), "--no-se")[0] == 0
    assert "SqueezeExcite" not in (tmp_path / "model.py").read_text()
    assert run("build", R50, "-o", str(tmp_path), "--no-fuse")[0] == 0
    text = (tmp_path / "model.py").read_text()
    assert "SqueezeExcite" not in text and "se.fc1 = nn.Conv2d" in text
    assert run("build", R50, "-o", str(tmp_path))[0] == 0
    assert "from sedsl.pytorch.kernels import SqueezeExcite" in (tmp_path / "model.py").read_text()


def test_failed_build_writes_nothing(tmp_path: Path) -> None:
    code, _, err = run("build", R50, "-o", str(tmp_path / "out"), "--set", "ratio=1000")
    assert code == 1 and "leaves no channels" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_check() -> None:
    code, out, _ = run("check", R50)
    assert code == 0 and out.startswith("ok: se_resnet50, 272 nodes, 16 SE blocks")


def test_cost_json_schema() -> None:
    code, out, _ = run("cost", R50, "--json")
    assert code == 0
    doc = json.loads(out)
    for side in ("base", "se"):
        assert isinstance(doc[side]["params"], int) and isinstance(doc[side]["flops"], int)
    assert doc["overhead"]["params"] == doc["se"]["params"] - doc["base"]["params"]
    assert doc["convention"] == "fvcore" and doc["by"] == "stage"
    assert {"key", "base_params", "se_params", "base_flops", "se_flops", "se_blocks"} <= set(
        doc["rows"][0])
    assert doc["estimate"]["params"] == 2514944


def test_cost_sweep_and_several_specs() -> None:
    code, out, _ = run("cost", R50, "--ratio", "2,4,8,16,32", "--json")
    docs = json.loads(out)
    assert [d["ratio"] for d in docs] == ["2", "4", "8", "16", "32"]
    params = [d["se"]["params"] for d in docs]
    assert params == sorted(params, reverse=True) and params[3] == 28088024
    code, out, _ = run("cost", R50, str(SPECS / "se_resnext50.se"), "--json")
    assert [d["network"] for d in json.loads(out)] == ["se_resnet50", "se_resnext50_32x4d"]
    code, out, _ = run("cost", R50, "--ratio", "8,16")
    assert code == 0 and "30,603,912" in out


@pytest.mark.parametrize(("option", "value"), [("--convention", "paper"), ("--by", "op"),
                                               ("--input", "320"), ("--set", "classes=10")])
def test_cost_options(option: str, value: str) -> None:
    code, out, _ = run("cost", R50, option, value, "--json")
    doc = json.loads(out)
    assert code == 0
    if value == "paper":
        assert round(doc["base"]["flops"] / 1e9, 2) == 3.86
    if value == "op":
        assert "conv" in [r["key"] for r in doc["rows"]]
    if value == "320":
        assert doc["input"] == [3, 320, 320]


def test_cost_csv_and_markdown() -> None:
    code, out, _ = run("cost", R50, "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and rows[-1]["key"] == "total" and rows[-1]["se_params"] == "2530992"
    code, out, _ = run("cost", R50, "--markdown")
    assert code == 0 and out.startswith("| spec |") and "25,557,032" in out


def test_cost_verify_agrees_with_fvcore() -> None:
    code, out, _ = run("cost", R50, "--verify", "--input", "96")
    assert code == 0
    assert out.count("equal") == 3 and "DIFFERENT" not in out  # base, se, se fused


def test_bad_options_are_usage_errors() -> None:
    """A bad option value that is not part of a spec is a usage error: status 2, no traceback."""
    for args in (("cost", R50, "--convention", "macs"), ("cost", R50, "--by", "module"),
                 ("graph", R50, "--format", "gif")):
        code, out, errors = run(*args)
        assert code == 2, args
        assert "Traceback" not in out + errors and errors.endswith("\n")
        assert args[-1] in errors


def test_graph_export(tmp_path: Path) -> None:
    for fmt in ("json", "graphml", "dot"):
        target = tmp_path / f"g.{fmt}"
        assert run("graph", R50, "--format", fmt, "-o", str(target))[0] == 0
        assert target.stat().st_size > 10000


def test_cost_does_not_import_torch() -> None:
    script = ("import sys, sedsl.cli\n"
              f"sys.argv = ['sedsl', 'cost', {R50!r}, '--json']\n"
              "try:\n    sedsl.cli.app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
              "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
