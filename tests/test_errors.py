"""The corpus of bad specs in tests/errors/: each gives exactly the message in its .err file,
through the API and through the CLI (status 1, no traceback).

Regenerate after a deliberate wording change with SEDSL_UPDATE_GOLDEN=1, then read every diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sedsl
from sedsl.cli import app

CORPUS = Path(__file__).parent / "errors"
CASES = sorted(p.stem for p in CORPUS.glob("*.se"))


@pytest.fixture(autouse=True)
def _in_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)  # messages name files relative to the working directory


@pytest.mark.parametrize("case", CASES)
def test_message(case: str) -> None:
    with pytest.raises(sedsl.SpecError) as caught:
        sedsl.load(f"{case}.se")
    golden = CORPUS / f"{case}.err"
    message = str(caught.value) + "\n"
    if os.environ.get("SEDSL_UPDATE_GOLDEN"):
        golden.write_text(message)
    assert message == golden.read_text()


@pytest.mark.parametrize("case", CASES[:6])
def test_cli_prints_without_traceback(case: str) -> None:
    result = CliRunner().invoke(app, ["check", f"{case}.se"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr == (CORPUS / f"{case}.err").read_text()


def test_every_message_has_a_location_and_a_caret() -> None:
    for case in CASES:
        lines = (CORPUS / f"{case}.err").read_text().splitlines()
        assert lines[0].split(":")[1].isdigit() and ": error: " in lines[0], case
        assert "^" in lines[2], case


@pytest.mark.parametrize(("sets", "message"), [
    (["--set", "ratoi=8"], "unknown parameter `ratoi`"),
    (["--set", "classes=ten"], "`classes` takes a number (default 1000), not the string \"ten\""),
    (["--set", "classes=true"], "`classes` takes a number (default 1000), not the bool true"),
    (["--input", "4"], "a 3-wide window does not fit in 2"),
    (["--input", "1x2x3x4"], "input takes 224, 320x240 or 3x320x240, not 1x2x3x4"),
    (["--input", "abc"], "input takes 224, 320x240 or 3x320x240"),
    (["--set", "squeeze=median"], "`squeeze` cannot be `median`"),
])
def test_bad_command_line_values(sets: list[str], message: str) -> None:
    spec = str(CORPUS.parent.parent / "specs" / "se_resnet50.se")
    result = CliRunner().invoke(app, ["check", spec, *sets])
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_missing_file() -> None:
    result = CliRunner().invoke(app, ["check", "no_such.se"])
    assert result.exit_code == 1
    assert result.stderr.startswith("<sedsl>: error: cannot read no_such.se")
