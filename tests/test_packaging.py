"""A non-editable install carries the grammar and the block library inside the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    (built,) = out.glob("sedsl-*.whl")
    return built


def test_wheel_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "sedsl/grammars/sedsl.lark" in names
    assert "sedsl/specs/lib/resnet.se" in names
    assert not any(n.startswith(("tests/", "specs/")) for n in names)


def test_installed_package_compiles_a_spec_elsewhere(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    (tmp_path / "mine.se").write_text(
        'use "lib/resnet.se"\nnetwork mine {\n  input 3x64x64\n  s = stem7x7(16)\n'
        '  c = bottleneck(8) * 2\n}\nse {\n  at residual.end\n}\n')
    script = ("import sedsl; n = sedsl.load('mine.se'); "
              "assert sedsl.__file__.startswith(sys.argv[1]), sedsl.__file__; "
              "print(n.cost().se.params)")
    done = subprocess.run([sys.executable, "-c", f"import sys; {script}", str(target)],
                          cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": ""},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0
