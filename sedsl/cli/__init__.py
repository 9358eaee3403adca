"""The `sedsl` command: `app` (typer) and `main` (the console script), one module per command
family; importing them registers their commands.

Nothing is imported here until it is used: `main` imports the commands itself, so that a Ctrl-C
while the command starts (typer, rich and the compiler take ~50 ms to import) ends it quietly
with status 130, as a Ctrl-C while it runs does, instead of printing a traceback."""

import sys
import types

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at start-up
if TYPE_CHECKING:
    from typing import Any

_COMMANDS = ("analysis", "build", "compare", "cost", "fmt", "lsp", "model")


def main() -> None:
    """The console script: the command, and a quiet exit (130) on a Ctrl-C at any moment."""
    try:
        run = _load().main
    except KeyboardInterrupt:
        sys.stderr.write("sedsl: interrupted\n")
        raise SystemExit(130) from None
    run()


def _load() -> types.ModuleType:
    """Import the command modules (registering their commands); the module of the typer app."""
    import importlib

    for name in _COMMANDS:
        importlib.import_module(f"sedsl.cli.{name}")
    return importlib.import_module("sedsl.cli.app")


def __getattr__(name: str) -> "Any":
    """`app` (the typer app, every command registered) and the command modules, on first use."""
    module = _load()
    if name == "app":
        return module.app
    if name in _COMMANDS:
        return sys.modules[f"sedsl.cli.{name}"]
    raise AttributeError(f"module 'sedsl.cli' has no attribute {name!r}")


class _Package(types.ModuleType):
    """This package, whose `app` is the typer app: the import system would bind the submodule
    `sedsl.cli.app` here once it is loaded (which stays in sys.modules under its name)."""

    def __setattr__(self, name: str, value: "Any") -> None:
        if name == "app" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = ["app", "main"]
