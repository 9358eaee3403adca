"""Bad input of every kind ends in a SpecError (or a clean CLI status), never a hang, a traceback,
runaway memory or a half-written build. Each case that once crashed or hung is here or in
tests/errors/."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import sedsl
from bench.fuzz import time_budget
from sedsl import limits
from sedsl.cli import app
from sedsl.cli import build as cli_build
from sedsl.pytorch import memory
from tests.conftest import SPECS

R50 = str(SPECS / "se_resnet50.se")
TINY = "network tiny(classes = 10) {\n  input 3x16x16\n  conv(8, 3) bn relu\n  " \
       "global_avgpool flatten linear(classes)\n}\n"


def run(*args: str) -> tuple[int, str]:
    """Status and output, with the box typer draws around usage errors taken apart."""
    result = CliRunner().invoke(app, list(args))
    text = result.stdout + result.stderr
    return result.exit_code, " ".join(text.replace("│", " ").split(" ")) if "╭" in text else text


def spec_error(text: str, **kw: object) -> sedsl.SpecError:
    """The SpecError `text` raises, within two seconds (the old hangs ran for minutes)."""
    with time_budget(2.0), pytest.raises(sedsl.SpecError) as caught:
        sedsl.loads(text, **kw)  # type: ignore[arg-type]
    return caught.value


# --- the cases of issue 11 ------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["bn * 1e308", "bn * 99999999999999999999999",
                                   "conv(1e99999999999999999999999, 3)", "conv(1e-99999999, 3)",
                                   "conv(" + "9" * 5000 + ", 3)", "conv(0." + "0" * 5000 + "1, 3)"])
def test_huge_numbers_are_refused_at_the_token(layer: str) -> None:
    e = spec_error(f"network n {{\n  input 3x8x8\n  {layer}\n}}\n")
    assert e.span is not None and (e.span.line, e.span.col) in ((3, 8), (3, 3))
    assert "too large" in e.message or "too precise" in e.message


def test_nul_byte_in_a_use_path() -> None:
    e = spec_error('use "lib/a\0b.se"\nnetwork n {\n  input 3x8x8\n  bn\n}\n')
    assert "U+0000" in e.message and e.span is not None and e.span.line == 1


def test_an_overlong_use_path() -> None:
    e = spec_error(f'use "{"a" * 300}.se"\nnetwork n {{\n  input 3x8x8\n  bn\n}}\n')
    assert "too long" in e.message


def test_a_huge_exponent_is_not_a_lark_visit_error() -> None:
    e = spec_error("network n {\n  input 3x8x8\n  x = 1e999999\n  bn\n}\n")
    assert type(e) is sedsl.SpecError


# --- the cases of issue 21 ------------------------------------------------------------------


@pytest.mark.parametrize(("call", "part"), [
    ("conv(8, 3, stride = 3x0)", "`stride` must be whole numbers >= 1, got 3x0"),
    ("conv(8, 0x3)", "`kernel` must be whole numbers >= 1, got 0x3"),
    ("conv(8, 3, dilation = 0x1)", "`dilation` must be whole numbers >= 1"),
    ("maxpool(3x0)", "`kernel` must be whole numbers >= 1"),
    ("avgpool(3, stride = 0x2)", "`stride` must be whole numbers >= 1"),
    ("adaptive_avgpool(0x3)", "`size` must be whole numbers >= 1"),
    ("conv(8, 3, stride = 2x2x2)", "`stride` must be a number or HxW"),
    ("bn(0)", "`eps` must be a number > 0"),
])
def test_a_shape_argument_obeys_the_rules_of_a_number(call: str, part: str) -> None:
    """Each part of an HxW argument is checked as a number argument is (`stride = 3x0` was a
    ZeroDivisionError in the window rule); the error points at the argument."""
    e = spec_error(f"network n {{\n  input 3x8x8\n  {call}\n}}\n")
    assert part in e.message and e.span is not None and e.span.line == 3 and e.span.col > 3


def test_padding_may_be_zero_in_one_direction() -> None:
    net = sedsl.loads("network n {\n  input 3x8x8\n  conv(8, 3x1, padding = 1x0)\n}\n")
    assert net.ir.graph["output"] and net.cost().se.params == 8 * 3 * 3


def test_use_through_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a.se").symlink_to("b.se")
    (tmp_path / "b.se").symlink_to("a.se")
    (tmp_path / "spec.se").write_text('use "a.se"\n' + TINY)
    with time_budget(2.0), pytest.raises(sedsl.SpecError, match="a symlink loop") as caught:
        sedsl.load(tmp_path / "spec.se")  # was a RuntimeError from pathlib
    assert caught.value.span is not None and caught.value.span.line == 1
    assert run("check", str(tmp_path / "a.se"))[0] == 1  # the spec itself: a clean error too


@pytest.mark.parametrize("where", ['use "lib/\udcff.se"\n', '# a note \ud800\n',
                                   "block b(s = \"x\udfff\") { bn }\n"])
def test_a_lone_surrogate_is_refused_where_it_stands(where: str) -> None:
    """Text that is no UTF-8 (only a str passed in Python or an editor can hold it) is refused
    at its place; it was a UnicodeEncodeError in the parser's transformer for a `use` path."""
    e = spec_error(where + TINY)
    assert "lone surrogate" in e.message and e.span is not None and e.span.line == 1
    assert "\ufffd" in str(e) and "\udcff" not in str(e)  # the excerpt prints anywhere


def test_cr_only_line_ends_are_line_ends(tmp_path: Path) -> None:
    """Old Mac files end lines with a lone CR, which Python reads as a line end: so does sedsl
    (it was one comment line: "this file defines no network")."""
    (tmp_path / "mac.se").write_bytes(("# a spec\r" + TINY).replace("\n", "\r").encode())
    assert sedsl.load(tmp_path / "mac.se").name == "tiny"
    (tmp_path / "bad.se").write_bytes(TINY.replace("bn", "bnn").replace("\n", "\r").encode())
    with pytest.raises(sedsl.SpecError) as caught:
        sedsl.load(tmp_path / "bad.se")
    assert str(caught.value).split("\n")[:3] == [
        f"{tmp_path / 'bad.se'}:3:14: error: unknown name `bnn`",
        "3 |   conv(8, 3) bnn relu", "  |              ^^^"]


def test_a_syntax_error_at_a_line_end_reads_well() -> None:
    e = spec_error("network n {\n  input\n}\n")
    assert e.message == "unexpected end of line; expected a shape like 3x224x224"


# --- limits ---------------------------------------------------------------------------------


def test_repeat_limit_is_configurable() -> None:
    text = "network n {\n  input 3x8x8\n  identity * 20000\n}\n"
    assert "SEDSL_LIMITS=repeat=N" in (spec_error(text).hint or "")
    with limits.raised(repeat=20_000):
        assert sedsl.loads(text).graph.number_of_nodes() == 1


def test_node_limit_refuses_before_the_work() -> None:
    """10^9 placements are refused after the first few thousand."""
    start = time.process_time()
    e = spec_error("network n {\n  input 3x8x8\n  { { bn * 1000 } * 1000 } * 1000\n}\n")
    assert "nodes" in e.message and time.process_time() - start < 30
    with limits.raised(nodes=50):
        assert "(the limit is 50)" in str(spec_error("network n {\n  input 3x8x8\n  bn * 60\n}"))


def test_empty_repeats_count_too() -> None:
    """Repeats that place nothing still cost time: they count against the node limit."""
    e = spec_error("network n {\n  input 3x8x8\n  { { identity * 9000 } * 9000 } * 9000\n}\n")
    assert "nodes" in e.message


def test_nesting_limits() -> None:
    assert "nested too deeply" in spec_error("network n {\n input 3x8x8\n x = " + "-" * 500 +
                                             "1\n}").message
    # a chain of 200 blocks, each calling the one before: shallow syntax, deep placement
    chain = "".join(f"block b{i} {{ b{i - 1} }}\n" for i in range(1, 200))
    e = spec_error(f"block b0 {{ bn }}\n{chain}network n {{\n  input 3x8x8\n  b199\n}}\n")
    assert "nested too deeply" in e.message


def test_use_chain_limit(tmp_path: Path) -> None:
    for i in range(40):
        (tmp_path / f"m{i}.se").write_text(f'use "m{i + 1}.se"\n' if i < 39 else "block b { bn }\n")
    (tmp_path / "spec.se").write_text('use "m0.se"\nnetwork n {\n  input 3x8x8\n  b\n}\n')
    with pytest.raises(sedsl.SpecError, match="chained too deeply"):
        sedsl.load(tmp_path / "spec.se")


def test_spec_size_limit(tmp_path: Path) -> None:
    (tmp_path / "big.se").write_text(TINY + "# padding\n" * 100)
    with limits.raised(spec_bytes=200), pytest.raises(sedsl.SpecError, match="too large"):
        sedsl.load(tmp_path / "big.se")


def test_limits_from_the_environment() -> None:
    assert limits.from_environment("nodes=5, repeat = 7").repeat == 7
    with pytest.raises(sedsl.SpecError, match="SEDSL_LIMITS"):
        limits.from_environment("nodes=many")
    with pytest.raises(ValueError, match="no limit"):
        limits.raised(nodez=5).__enter__()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**100, 1e300, "1e99999999"])
def test_python_override_values(value: object) -> None:
    with time_budget(2.0), pytest.raises(sedsl.SpecError):
        sedsl.load(R50, classes=value)


# --- input files ----------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "message"), [
    ("/dev/zero", "not a regular file"), ("/", "directory"), ("/no/such.se", "No such file")])
def test_devices_and_directories(path: str, message: str) -> None:
    with time_budget(2.0), pytest.raises(sedsl.SpecError, match=message):
        sedsl.load(path)


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.se"
    os.mkfifo(fifo)
    with time_budget(2.0), pytest.raises(sedsl.SpecError, match="not a regular file"):
        sedsl.load(fifo)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    spec = tmp_path / "spec.se"
    spec.write_text(TINY)
    spec.chmod(0)
    with pytest.raises(sedsl.SpecError, match="Permission denied"):
        sedsl.load(spec)


def test_binary_and_non_utf8_files(tmp_path: Path) -> None:
    (tmp_path / "latin1.se").write_bytes(TINY.replace("tiny", "t\xefny").encode("latin-1"))
    with pytest.raises(sedsl.SpecError, match="not UTF-8") as caught:
        sedsl.load(tmp_path / "latin1.se")
    assert caught.value.span is not None and caught.value.span.line == 1
    (tmp_path / "zeros.se").write_bytes(b"\0" * 4096)
    with pytest.raises(sedsl.SpecError, match="U\\+0000"):
        sedsl.load(tmp_path / "zeros.se")


def test_bom_and_crlf(tmp_path: Path) -> None:
    (tmp_path / "dos.se").write_bytes(b"\xef\xbb\xbf" + TINY.replace("\n", "\r\n").encode())
    assert sedsl.load(tmp_path / "dos.se").name == "tiny"


def test_use_of_a_device_a_directory_or_a_bad_library(tmp_path: Path) -> None:
    (tmp_path / "zero.se").symlink_to("/dev/zero")
    (tmp_path / "folder.se").mkdir()
    (tmp_path / "binary.se").write_bytes(b"block b { bn }\n\xff\xfe\n")
    for target, message in (("zero.se", "leaves the spec search path"),
                            ("folder.se", "cannot find"), ("binary.se", "not UTF-8")):
        (tmp_path / "spec.se").write_text(f'use "{target}"\n' + TINY)
        with time_budget(2.0), pytest.raises(sedsl.SpecError, match=message):
            sedsl.load(tmp_path / "spec.se")


# --- the command line ---------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "classes=1e99999999"], "--set:1:9: error: the number `1e99999999` is too large"),
    (["--input", "99999999999999999999"], "--input:1:1: error: the number"),
    (["--set", "classes=" + "9" * 5000], "too large"),
])
def test_option_values_are_read_like_spec_numbers(args: list[str], message: str) -> None:
    code, out = run("check", R50, *args)
    assert code == 1 and message in out and "Traceback" not in out


def test_ratio_values_are_checked() -> None:
    code, out = run("cost", R50, "--ratio", "8,1e999999")
    assert code == 1 and "--ratio:1:3: error: the number `1e999999` is too large" in out


def test_exit_statuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("check", "/dev/zero")[0] == 1
    assert run("check", str(tmp_path))[0] == 1
    assert run("check", R50, "--no-such-option")[0] == 2
    assert run("graph", R50, "--format", "svg")[1].endswith("\n")

    def broken(*args: object, **kw: object) -> None:
        raise RuntimeError("an invariant broke")

    monkeypatch.setattr(cli_build, "_load", broken)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    code, out = run("check", R50)
    assert code == 3 and "Traceback" not in out
    assert "internal error: RuntimeError: an invariant broke" in out and "bug in sedsl" in out
    report = next(tmp_path.glob("sedsl-bug-*.txt")).read_text()
    assert "Traceback" in report and "an invariant broke" in report


def test_graph_output_is_a_file(tmp_path: Path) -> None:
    assert run("graph", R50, "-o", str(tmp_path))[0] == 2


# --- the command line's edges (issue 21) ----------------------------------------------------

DIGITS = str(SPECS / "se_digits.se")


@pytest.mark.parametrize("args", [
    ["check", DIGITS, "--set", "ratio"], ["cost", DIGITS, "--ratio", ","],
    ["cost", DIGITS, "--sweep", "ratio"], ["cost", DIGITS, "--sweep", "ratio=,"],
    ["cost", DIGITS, "--by", "layer", "--batch", "x"], ["graph", DIGITS, "--format", "png"],
    ["graph", DIGITS, "--format", "svg", "--depth", "0"], ["export", DIGITS, "--format", "x"],
    ["train", DIGITS, "--data", "sklearn:digits", "--optimizer", "x"],
    ["compare", DIGITS, "--data", "sklearn:digits", "--optimizer", "x"],
    ["compare", DIGITS, "--data", "sklearn:digits", "--json", "--csv"],
    ["excite", DIGITS, "--weights", "w.pt", "--data", "sklearn:digits", "--split", "x"],
    ["lsp", "--set", "ratio"],
])
def test_usage_errors_exit_2(args: list[str]) -> None:
    """An option that does not say what to do is a usage error (2), everywhere: `--set ratio`
    and `--ratio ,` exited 1, as a mistake in the spec does."""
    code, out = run(*args)
    assert code == 2 and "Traceback" not in out, out


def test_an_output_below_a_file_is_a_usage_error(tmp_path: Path, tiny: Path) -> None:
    file = tmp_path / "file"
    file.write_text("precious")
    for args in (["build", str(tiny), "-o", str(file / "sub")],  # was "File exists", exit 1
                 ["graph", str(tiny), "--format", "svg", "-o", str(file / "x.svg")],
                 ["export", str(tiny), "-o", str(file / "x.onnx")],
                 ["cost", str(tiny), "--plot", str(file / "p.svg")],
                 ["train", str(tiny), "--data", "sklearn:digits", "-o", str(file)]):
        code, out = run(*args)
        assert code == 2 and f"{file} is a file, not a folder" in " ".join(out.split()), out
    assert file.read_text() == "precious" and sorted(tmp_path.iterdir()) == [file, tiny]


def test_outputs_get_their_folders(tmp_path: Path, tiny: Path) -> None:
    """`graph -o newdir/x.svg` makes newdir, as build and export do (it failed)."""
    assert run("graph", str(tiny), "--format", "svg", "-o", str(tmp_path / "new" / "x.svg"))[0] \
        == 0
    assert (tmp_path / "new" / "x.svg").read_text().startswith("<svg")
    assert run("graph", str(tiny), "-o", str(tmp_path / "a" / "b" / "g.json"))[0] == 0


def test_printed_paths_are_not_markup(tmp_path: Path, tiny: Path) -> None:
    """rich read `[/x]` in a path as a closing tag: a MarkupError, reported as a bug."""
    code, out = run("build", str(tiny), "-o", str(tmp_path / "[/x]"))
    assert code == 0 and "[/x]/model.py" in out


def test_weights_files_are_read_by_one_loader(tmp_path: Path, tiny: Path) -> None:
    """`export --weights` with a missing file, a folder, a non-state-dict or a whole pickled
    module was a bug report (exit 3); the loader excite and train use says what is wrong."""
    import torch

    from sedsl.pytorch import saved

    torch.save(torch.nn.Linear(2, 3), tmp_path / "module.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    (tmp_path / "text.pt").write_text("not a torch file")
    (tmp_path / "empty.pt").write_bytes(b"")
    os.mkfifo(tmp_path / "fifo.pt")
    for name, message in (("missing.pt", "No such file"), ("module.pt", "a whole model?"),
                          ("list.pt", "holds a list, not a state dict"),
                          ("text.pt", "not a file torch.save wrote"),
                          ("empty.pt", "empty or cut short"), ("fifo.pt", "not a regular file"),
                          (".", "it is a directory")):
        with time_budget(5.0), pytest.raises(sedsl.ModelError, match=re.escape(message)):
            saved.state_dict(tmp_path / name)
        code, out = run("export", str(tiny), "--weights", str(tmp_path / name))
        assert code == 1 and message in " ".join(out.split()), out
    torch.save({"w": torch.zeros(1)}, tmp_path / "state.pt")
    assert list(saved.state_dict(tmp_path / "state.pt")) == ["w"]


@pytest.mark.parametrize(("module", "extra", "args"), [
    ("onnxscript", "onnx", ["export", "SPEC", "--format", "onnx"]),
    ("resvg_py", "png", ["graph", "SPEC", "--format", "png", "-o", "x.png"]),
    ("matplotlib", "plot", ["cost", "SPEC", "--plot", "p.svg"]),
    ("pygls", "lsp", ["lsp"]),
])
def test_a_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch, tiny: Path, module: str,
                                  extra: str, args: list[str]) -> None:
    """Every optional dependency is asked for the same way (`export --format onnx` without
    onnx reported a bug in sedsl)."""
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    code, out = run(*[str(tiny) if a == "SPEC" else a for a in args])
    assert code == 1 and f"pip install 'sedsl[{extra}]'" in out and "bug" not in out, out


def test_every_extra_is_declared() -> None:
    import tomllib

    from sedsl import extras

    declared = tomllib.loads((SPECS.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert set(extras.EXTRAS) <= set(declared)


@pytest.mark.parametrize("command", ["build", "check", "cost", "graph", "export", "import", "fmt",
                                     "train", "excite", "lsp"])
def test_help_shows_every_option_as_written(command: str) -> None:
    """typer reads help texts as rich markup: `sedsl[plot]` lost its `[plot]`. Every option's
    help, and the words of `--by`, appear as written."""
    from sedsl.cli import app as typer_app

    result = CliRunner().invoke(typer_app, [command, "--help"], env={"COLUMNS": "200"})
    shown = " ".join(result.stdout.replace("│", " ").split())
    click_command = typer.main.get_command(typer_app).commands[command]  # type: ignore[attr-defined]
    for param in click_command.params:
        help_text = getattr(param, "help", None)
        if help_text and not getattr(param, "hidden", False):
            assert " ".join(help_text.replace("\\[", "[").split()) in shown, param.name
    if command == "cost":
        assert "pip install 'sedsl[plot]'" in shown and "stage, block, op or layer" in shown


@pytest.mark.skipif(os.name != "posix", reason="SIGINT")
def test_ctrl_c_while_starting_prints_no_traceback(tiny: Path) -> None:
    """A Ctrl-C at random moments of the first ~100 ms: sedsl's code (once it runs) ends with
    status 130 and no traceback. Before it runs, Python itself is starting: killed by the
    signal, or its own start-up report, which names no sedsl file."""
    rnd = random.Random(21)
    package = f"{SPECS.parent / 'sedsl'}{os.sep}"  # a traceback through sedsl's code names it
    for _ in range(12):
        p = subprocess.Popen([sys.executable, "-m", "sedsl.cli", "check", str(tiny)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(SPECS.parent)})
        time.sleep(rnd.uniform(0, 0.1))
        p.send_signal(signal.SIGINT)
        errors = p.communicate(timeout=60)[1].decode()
        if "sedsl: interrupted" in errors or package in errors:
            # sedsl stopped: 130 (or, when the Ctrl-C came inside an eval() such as
            # namedtuple's, Python 3.11 still ends by SIGINT after the exit: -2)
            assert p.returncode in (130, -signal.SIGINT), (p.returncode, errors)
            assert errors == "sedsl: interrupted\n", errors
        else:  # it had finished (0); it stopped in typer's parsing (130, silently); Python was
            # still starting (its own report, no word from sedsl: 1, or killed by SIGINT: -2)
            assert p.returncode in (0, 1, 130, -signal.SIGINT), (p.returncode, errors)


# --- atomic builds ------------------------------------------------------------------------


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    spec = tmp_path / "tiny.se"
    spec.write_text(TINY)
    return spec


def test_build_refuses_an_existing_file_or_foreign_folder(tmp_path: Path, tiny: Path) -> None:
    target = tmp_path / "out"
    target.write_text("precious")
    code, out = run("build", str(tiny), "-o", str(target))
    assert code == 2 and "exists and is not a folder" in " ".join(out.split())
    assert "Traceback" not in out
    assert target.read_text() == "precious"
    target.unlink()
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    assert run("build", str(tiny), "-o", str(target))[0] == 2
    assert _tree(target) == {"notes.txt": b"precious"}


def test_rebuild_replaces_a_build_whole(tmp_path: Path, tiny: Path) -> None:
    target = tmp_path / "out"
    assert run("build", str(tiny), "-o", str(target))[0] == 0
    assert run("build", str(tiny), "-o", str(target), "--set", "classes=7")[0] == 0
    assert _consistent(target) == 7
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_build_keeps_the_old_one(
        tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch,
        failure: BaseException) -> None:
    target = tmp_path / "out"
    assert run("build", str(tiny), "-o", str(target))[0] == 0
    good = _tree(target)
    assert run("build", str(tmp_path / "missing.se"), "-o", str(target))[0] == 1
    assert _tree(target) == good
    written = []
    real = Path.write_text

    def flaky(self: Path, text: str, **kw: object) -> int:
        if written:
            raise failure
        written.append(self)
        return real(self, text, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", flaky)
    code, out = run("build", str(tiny), "-o", str(target), "--set", "classes=7")
    assert code == (130 if isinstance(failure, KeyboardInterrupt) else 1), out
    assert "Traceback" not in out
    assert _tree(target) == good and _leftovers(tmp_path) == []


def _build(spec: Path, target: Path, classes: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sedsl.cli", "build", str(spec), "-o", str(target), "--set",
         f"classes={classes}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


def _consistent(target: Path) -> int:
    """The build's three files come from one run: the same classes in each."""
    files = _tree(target)
    assert sorted(files) == ["graph.json", "model.py", "summary.json"]
    classes = int(files["model.py"].decode().split("nn.Linear(8, ")[1].split(",")[0])
    (linear,) = [n for n in json.loads(files["graph.json"])["nodes"] if n["op"] == "linear"]
    assert linear["shape"] == [classes]
    # conv 3*8*9 + bn 2*8 + linear (8 + 1) * classes
    assert json.loads(files["summary.json"])["base"]["params"] == 216 + 16 + 9 * classes
    return classes


def test_concurrent_builds_never_mix(tmp_path: Path, tiny: Path) -> None:
    target = tmp_path / "out"
    for _ in range(2):
        procs = [_build(tiny, target, k) for k in (11, 22, 33)]
        for p in procs:
            _, errors = p.communicate(timeout=120)
            assert p.returncode == 0, errors.decode()
        assert _consistent(target) in (11, 22, 33)
        assert _leftovers(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="SIGINT")
def test_ctrl_c_mid_build(tmp_path: Path, tiny: Path) -> None:
    """Interrupted at any moment, the folder holds the old build or the new one, whole."""
    target = tmp_path / "out"
    assert run("build", str(tiny), "-o", str(target))[0] == 0
    # a build of this spec takes ~0.3 s: the early delays land in imports, compile and writing
    for delay in (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.8, 1.5):
        p = _build(tiny, target, 44)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=120)
        # 130: sedsl stopped; -2: Python stopped while still starting up; 0: it had finished
        assert p.returncode in (0, 130, -signal.SIGINT), p.returncode
        assert _consistent(target) in (10, 44)
        assert _leftovers(tmp_path) == []


# --- big networks -------------------------------------------------------------------------

HUGE = "network huge {\n  input 3x224x224\n  conv(1000000, 3) global_avgpool flatten\n" \
       "  linear(100000)\n}\n"


def test_meta_device_builds_any_size_without_memory() -> None:
    import torch

    net = sedsl.loads(HUGE)
    start = time.perf_counter()
    model = net.to_torch(device="meta")
    elapsed = time.perf_counter() - start
    params = list(model.parameters())
    assert all(p.device.type == "meta" for p in params)
    assert sum(p.numel() for p in params) == net.cost().se.params > 10**11
    assert elapsed < 10, elapsed  # allocating 400 GB would not return at all
    assert isinstance(model, torch.nn.Module)


def test_to_torch_refuses_what_does_not_fit() -> None:
    with pytest.raises(sedsl.DeviceError, match=r"(?s)needs about .*device=\"meta\""):
        sedsl.loads(HUGE).to_torch()


def test_the_memory_estimate_counts_buffers_as_torch_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """BN's running statistics are state too: a network of BN layers has as many buffer
    elements as parameters, and the estimate must count both, as torch's module holds them."""
    import torch

    net = sedsl.loads("network bns {\n  input 64x4x4\n  bn * 50\n  flatten\n}\n")
    model = net.to_torch(device="meta")
    params = sum(p.numel() for p in model.parameters())
    state = params + sum(b.numel() for b in model.buffers())
    assert state > 1.9 * params
    itemsize = torch.get_default_dtype().itemsize
    monkeypatch.setattr(memory, "free_memory", lambda kind, device: (state - 1) * itemsize)
    with pytest.raises(sedsl.DeviceError, match=f"{state:,} parameters and buffers"):
        net.to_torch()
    monkeypatch.setattr(memory, "free_memory", lambda kind, device: state * itemsize)
    assert isinstance(net.to_torch(), torch.nn.Module)


@pytest.mark.parametrize("before", [10, 100_000])
def test_an_error_on_a_long_line_shows_the_part_around_it(before: int) -> None:
    text = "network n {\n  input 3x8x8\n  " + "relu " * before + "bogus relu relu\n}\n"
    with pytest.raises(sedsl.SpecError) as caught:
        sedsl.loads(text, path="long.se")
    rendered = str(caught.value)
    assert len(rendered) < 1200  # not the megabyte line
    source, caret = rendered.split("\n")[1:3]
    start = caret.index("^")
    assert source[start:start + caret.count("^")] == "bogus"
    assert source.startswith("3 | ...") == (before > 100)
