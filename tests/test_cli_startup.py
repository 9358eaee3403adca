"""The CLI starts light (no parser or rich for what does not need them, networkx and lark's
grammar compiler never on the compile path), shows progress
only on a terminal, honours NO_COLOR, prints clean metavars and completes in the shell."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from sedsl.cli import app
from tests.conftest import SPECS

R50 = str(SPECS / "se_resnet50.se")
R101 = str(SPECS / "se_resnet101.se")
COLOUR = re.compile(r"\x1b\[(3[0-7]|9[0-7]|38;)")  # a foreground colour escape


def _modules_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint(' '.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_help_imports_no_compiler() -> None:
    loaded = _modules_after("import sedsl.cli")
    assert not {"networkx", "lark", "sedsl.language._lalr", "rich", "torch", "fvcore"} & loaded


def test_cost_json_imports_no_rich() -> None:
    code = ("import sedsl.cli\n"
            f"sys.argv = ['sedsl', 'cost', {R50!r}, '--json']\n"
            "try:\n    sedsl.cli.app()\nexcept SystemExit as e:\n    assert not e.code\n")
    loaded = _modules_after(code)
    assert "sedsl.language._lalr" in loaded  # it did compile, with the generated parser
    assert not {"networkx", "lark", "rich", "torch", "fvcore"} & loaded


def _on_terminal(*args: str, env: dict[str, str], status: int = 0) -> tuple[str, str]:
    """Run the CLI with stderr on a pseudo-terminal; (stdout, what the terminal showed)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "sedsl.cli", *args], stdout=subprocess.PIPE,
                            stderr=follower, text=True, env={**os.environ, **env})
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the follower side closed
            break
        if not chunk:
            break
        shown += chunk
    stdout = proc.communicate()[0]
    os.close(leader)
    assert proc.returncode == status
    return stdout, shown.decode(errors="replace")


def test_progress_on_terminal_only_and_no_color() -> None:
    args = ("cost", R50, R101, "--json")
    stdout, shown = _on_terminal(*args, env={"NO_COLOR": "", "TERM": "xterm-256color"})
    assert "compiling" in shown and COLOUR.search(shown)
    assert '"spec"' in stdout and "compiling" not in stdout
    _, shown = _on_terminal(*args, env={"NO_COLOR": "1", "TERM": "xterm-256color"})
    assert "compiling" in shown and not COLOUR.search(shown)
    piped = subprocess.run([sys.executable, "-m", "sedsl.cli", *args], capture_output=True,
                           text=True)
    assert piped.returncode == 0 and piped.stderr == ""


def test_errors_on_a_terminal_are_highlighted(tmp_path: Path) -> None:
    spec = tmp_path / "bad.se"
    spec.write_text("network n {\n  input 3x8x8\n  conv(8, 3) bogus\n}\n")
    for no_color in ("", "1"):
        _, shown = _on_terminal("check", str(spec), status=1,
                                env={"NO_COLOR": no_color, "TERM": "xterm-256color"})
        assert "unknown name `bogus`" in shown and "^^^^^" in shown
        assert bool(COLOUR.search(shown)) == (not no_color)
    piped = subprocess.run([sys.executable, "-m", "sedsl.cli", "check", str(spec)],
                           capture_output=True, text=True)
    assert piped.returncode == 1 and "\x1b[" not in piped.stderr


def test_clean_metavars() -> None:
    for command in ("build", "cost", "graph"):
        text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "120"}).output
        assert "SPEC" in text and "{spec" not in text
        options = [line for line in text.splitlines() if "--" in line and "--help" not in line]
        assert options and not any("<bool>" in line or "<str>" in line for line in options)


def test_shell_completion() -> None:
    env = {**os.environ, "_SEDSL_COMPLETE": "complete_bash", "COMP_WORDS": "sedsl cost --con",
           "COMP_CWORD": "2"}
    code = "import sys; sys.argv[0] = 'sedsl'; from sedsl.cli import app; app(prog_name='sedsl')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "--convention" in done.stdout.split()


def test_the_console_script_builds_only_the_command_it_runs() -> None:
    """`sedsl NAME ...` (cli.main) gives what the full app gives, for a command, its help and
    its errors; other argv (no command, --help, a typo) go to the full app."""
    def main(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sedsl.cli", *args], capture_output=True,
                              text=True, env={**os.environ, "COLUMNS": "100", "NO_COLOR": "1"})

    runner = CliRunner()
    for args in (["cost", R50, "--json"], ["check", R50], ["cost", "--help"],
                 ["cost", "no-such.se"], ["cost", R50, "--by", "nothing"]):
        done, full = main(*args), runner.invoke(app, args, env={"COLUMNS": "100",
                                                                "NO_COLOR": "1"})
        assert done.returncode == full.exit_code, args
        if args[-1] == "--help":
            words = done.stdout.replace("python -m sedsl.cli", "root").split()
            assert words == full.output.split()
        elif done.returncode == 0:
            assert done.stdout == full.output
    assert "No such command" in main("nosuch").stderr
    assert "Commands" in main("--help").stdout
