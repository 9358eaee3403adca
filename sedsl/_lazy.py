"""Deferred imports, so `sedsl --help` and commands that do not need networkx, lark or rich do
not pay for them (`python -X importtime -m sedsl.cli ...` shows where a start-up goes)."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any


class LazyModule(ModuleType):
    """A module that is imported on first attribute access."""

    def __init__(self, name: str):
        super().__init__(name)
        self.__dict__["_target"] = name

    def __getattr__(self, attr: str) -> Any:
        module = sys.modules.get(self._target) or importlib.import_module(self._target)
        return getattr(module, attr)


def lazy(name: str) -> Any:
    """`name` imported when first used; typed Any, so import the real module under TYPE_CHECKING."""
    return LazyModule(name)


class LazyConsole:
    """A rich Console made on first use; rich costs ~25 ms to import and JSON output needs none."""

    def __init__(self, stderr: bool = False):
        self._stderr = stderr
        self._console: Any = None

    def _get(self) -> Any:
        """The Console itself."""
        if self._console is None:
            from rich.console import Console

            # rich honours NO_COLOR and drops colour and spinners when the stream is no terminal
            self._console = Console(stderr=self._stderr, highlight=False)
        return self._console

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._get(), attr)
