"""`sedsl fmt`: prints, --write rewrites in place, --check lists what would change; the shipped
specs are formatted (CI runs `sedsl fmt --check specs/`)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from sedsl.cli import app
from tests.conftest import SPECS


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["fmt", *args])
    return result.exit_code, result.stdout, result.stderr


def test_fmt_check_passes_on_the_shipped_specs() -> None:
    code, stdout, stderr = run("--check", str(SPECS))
    assert (code, stdout, stderr) == (0, "", "")


def test_fmt_prints_checks_and_writes(tmp_path: Path) -> None:
    messy = "network n{input 3x8x8;conv(8,3) bn}  # note\n"
    tidy = "network n { input 3x8x8; conv(8, 3) bn }  # note\n"
    spec = tmp_path / "sub" / "a.se"
    spec.parent.mkdir()
    spec.write_text(messy)
    (tmp_path / "b.se").write_text(tidy)
    spec.chmod(0o640)
    assert run(str(spec)) == (0, tidy, "")
    code, stdout, _ = run("--check", str(tmp_path))
    assert code == 1 and stdout.split() == [str(spec)]
    assert spec.read_text() == messy
    assert run("--write", str(tmp_path)) == (0, f"{spec}\n", "")
    assert spec.read_text() == tidy and spec.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in spec.parent.iterdir()] == ["a.se"]  # no temporary file left
    assert run("--check", str(tmp_path)) == (0, "", "")
    assert run("--check", "--write", str(spec))[0] == 2


def test_fmt_reports_spec_errors_as_the_other_commands_do(tmp_path: Path) -> None:
    bad = tmp_path / "bad.se"
    bad.write_text("network n {\n  conv(8,\n}\n")
    code, stdout, stderr = run("--write", str(bad))
    assert code == 1 and stdout == ""
    assert stderr.splitlines()[:3] == [
        f"{bad}:3:1: error: unexpected `}}`; expected an expression or `)`", "3 | }", "  | ^"]
    assert bad.read_text() == "network n {\n  conv(8,\n}\n"
