"""The `sedsl` command. torch and fvcore are imported only by the options that need them;
networkx, lark and rich only by the commands that use them (start-up time: docs/benchmarks.md)."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from sedsl import files
from sedsl.errors import SedslError, Span, SpecError, UsageError
from sedsl.language import numbers
from sedsl.version import __version__

if TYPE_CHECKING:
    from rich.console import Console

    from sedsl.api import Network

# Exit statuses: 0 done, 1 a mistake in the spec or its values, 2 a usage error (click's),
# 3 a bug in sedsl, 130 interrupted.
SPEC_ERROR, USAGE_ERROR, INTERNAL_ERROR, INTERRUPTED = 1, 2, 3, 130
BUG_REPORTS = "the sedsl issue tracker"


class _Guarded(TyperGroup):
    """Runs every command so that no user mistake ends in a traceback: a SedslError prints (a
    SpecError as file:line:col) and exits 1, or 2 for a UsageError; anything unexpected is
    reported as a bug in sedsl and exits 3."""

    def invoke(self, ctx: Any) -> Any:  # a click Context (vendored by typer or not)
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except SedslError as e:
            _show(e)
            raise typer.Exit(USAGE_ERROR if isinstance(e, UsageError) else SPEC_ERROR) from None
        except KeyboardInterrupt:
            sys.stderr.write("sedsl: interrupted\n")
            raise typer.Exit(INTERRUPTED) from None
        except BrokenPipeError:  # `sedsl graph spec | head`: the reader has gone
            with suppress(OSError, ValueError):  # and Python's final flush must not complain
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(SPEC_ERROR) from None
        except Exception as e:
            if type(e).__module__.startswith(("click.", "typer.")):
                raise  # click's usage errors: it prints them and exits 2
            _report_bug(e)
            raise typer.Exit(INTERNAL_ERROR) from None


def _report_bug(e: BaseException) -> None:
    """What went wrong, that it is sedsl's fault, and where the details are for a report."""
    import tempfile  # this module imports what only some commands use where they use it:
    import traceback  # start-up time (docs/benchmarks.md)

    details = "".join(traceback.format_exception(e))
    where = ""
    try:
        fd, name = tempfile.mkstemp(prefix="sedsl-bug-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"sedsl {__version__}, argv {sys.argv!r}\n{details}")
        where = f"; the details are in {name}"
    except OSError:
        pass
    sys.stderr.write(
        f"sedsl: internal error: {type(e).__name__}: {e}\n"
        f"This is a bug in sedsl, not a mistake in your spec. Please report it to {BUG_REPORTS} "
        f"with the command and the spec{where}.\n")
    if os.environ.get("SEDSL_DEBUG"):
        sys.stderr.write(details)


def _typer() -> typer.Typer:
    return typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, cls=_Guarded,
                       help="A compiler for Squeeze-and-Excitation networks.")


app = _typer()
T = TypeVar("T")
_consoles: dict[bool, Console] = {}


def out() -> Console:
    """The rich console on stdout, made on first use (rich costs ~25 ms to import, and JSON
    output needs none); rich drops colour and spinners where the stream is no terminal and
    honours NO_COLOR."""
    return _console(stderr=False)


def err() -> Console:
    """The rich console on stderr (see `out`)."""
    return _console(stderr=True)


def _console(stderr: bool) -> Console:
    if stderr not in _consoles:
        from rich.console import Console

        # no markup: what is printed holds paths and names the user chose (`-o 'out[/x]'`)
        _consoles[stderr] = Console(stderr=stderr, highlight=False, markup=False)
    return _consoles[stderr]

SetOption = Annotated[list[str] | None, typer.Option(
    "--set", metavar="NAME=VALUE", help="Override a top-level parameter or SE setting.")]
SpecArgument = Annotated[Path, typer.Argument(metavar="SPEC", help="The .se spec.")]
InputOption = Annotated[str | None, typer.Option(
    "--input", metavar="SHAPE", help="Input size: 224, 320x320 or 3x320x320.")]


@contextmanager
def _spec_errors() -> Iterator[None]:
    """Spec mistakes print as file:line:col, the line, a caret and a hint; exit status 1."""
    try:
        yield
    except SpecError as e:
        _show(e)
        raise typer.Exit(SPEC_ERROR) from None


def _show(e: SedslError) -> None:
    """The error on stderr; on a terminal (unless NO_COLOR is set) with the spec line
    highlighted."""
    text = str(e)
    if sys.stderr.isatty() and not os.environ.get("NO_COLOR"):
        from sedsl.language.lexer import highlight_error

        text = highlight_error(text)
    sys.stderr.write(f"{text}\n")


def _overrides(sets: list[str] | None, input_size: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in sets or []:
        name, eq, value = item.partition("=")
        if not eq or not name.strip().isidentifier():
            raise UsageError(f"--set takes NAME=VALUE, got `{item}`", "e.g. --set ratio=8")
        _check_option_value("--set", item, len(name) + 1, value)
        values[name.strip()] = value
    if input_size is not None:
        _check_option_value("--input", input_size, 0, input_size)
        values["input"] = input_size  # sedsl.load parses 224, 320x240 and 3x320x240
    return values


def _check_option_value(option: str, text: str, start: int, value: str) -> None:
    """Numbers in an option's value are read as a spec's are, with the same errors, pointing
    into the option's text: `--set:1:7: error: the number `1e999` is too large`."""
    span = Span(option, 1, start + 1, 1, start + len(value) + 1)
    try:
        parts = value.strip().lower().split("x")
        if len(parts) > 1 and all(p.isdigit() for p in parts):
            for part in parts:
                numbers.dimension(part, span)
        else:
            numbers.number_value(value, span)
    except SpecError as e:
        raise e.attach({option: text}) from None


_SAID: set[str] = set()  # notes printed so far (a sweep compiles a spec once a point)


def _load(spec: Path, sets: list[str] | None, input_size: str | None = None,
          **extra: Any) -> Network:
    """Compile a spec; what the compiler notes beside errors goes to stderr, once each."""
    from sedsl.api import load

    net = load(spec, **{**_overrides(sets, input_size), **extra})
    for note in net.notes:
        if note not in _SAID:
            _SAID.add(note)
            err().print(f"note: {note}", highlight=False, markup=False)
    return net



# --- writing files ------------------------------------------------------------------------------


def _write_file(path: Path, data: str | bytes, option: str = "-o") -> None:
    """One file, whole or not at all: written beside it, then renamed over it; the folders
    above it are made as needed."""
    import tempfile

    if path.is_dir():
        raise typer.BadParameter(f"{path} is a folder; {option} names the file to write",
                                 param_hint=option)
    output_folder(path, option)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        raise SedslError(f"cannot write {files.shown(path)}: {files.reason(e)}") from None


def output_folder(path: Path, option: str = "-o", make: bool = True,
                  is_folder: bool = False) -> None:
    """Make the folders above an output path (`make`), or only check that those there are
    folders: one that is a file is a usage error. `is_folder`: the path is itself a folder."""
    inner = path / "_" if is_folder else path
    try:
        if make:
            files.folder_for(inner)
        else:
            files.check_folders(inner)
    except files.Unusable as err:
        raise UsageError(f"{option} {files.shown(path)}: {err.reason}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main() -> None:
    """The `sedsl` command. Typer turns every command's signature into click options as it
    starts (~35 ms for all of them), so a run that names a command builds only that one. A
    Ctrl-C at any moment ends it with status 130 and no traceback."""
    try:
        name = sys.argv[1] if len(sys.argv) > 1 else ""
        chosen = [c for c in app.registered_commands
                  if (c.name or c.callback.__name__.replace("_", "-")) == name]  # type: ignore[union-attr]
        runner = app
        if name in ("check", "cost", "graph"):
            # A one-shot compile makes ~10^5 objects that live to the end and leaves almost no
            # cycles: the cyclic collector's passes over them are ~5% of the run, for nothing.
            gc.disable()
        if chosen:
            runner = _typer()
            runner.registered_commands = chosen
            runner.callback()(lambda: None)  # a callback keeps it a group: `sedsl NAME ...`
        runner()
    except KeyboardInterrupt:  # outside a command (typer's parsing, or starting up)
        sys.stderr.write("sedsl: interrupted\n")
        raise SystemExit(INTERRUPTED) from None
    finally:
        _flush()
        _done()


def _done() -> None:
    """The work is over: a Ctrl-C while Python shuts down just ends the process (no
    KeyboardInterrupt in an exit handler). Only the command's own process does this."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        with suppress(ValueError, OSError):
            signal.signal(signal.SIGINT, signal.SIG_DFL)


def _flush() -> None:
    """Flush stdout and stderr before Python's exit does, so that a reader that has gone
    (`sedsl graph SPEC | head`) costs no "Exception ignored" message at shutdown."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        with suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
