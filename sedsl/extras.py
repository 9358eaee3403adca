"""Optional dependencies. Each is an extra of sedsl's package (pyproject.toml's
`[project.optional-dependencies]`), and every feature that needs one imports it through
`require`, so a missing one is one kind of error everywhere: what needs it, and
`pip install 'sedsl[EXTRA]'`."""

from __future__ import annotations

import importlib
from types import ModuleType

from sedsl.errors import MissingExtra

# extra -> what it brings (the extras of pyproject.toml; tests/test_cli.py checks they match)
EXTRAS = {
    "onnx": "sedsl export --format onnx",
    "png": "sedsl graph --format png",
    "plot": "sedsl cost --plot",
    "lsp": "sedsl lsp, the language server",
    "analysis": "sedsl train, excite and compare: sklearn:digits, mnist5k, image folders, "
                "figures, .safetensors",
    "ray": "sedsl compare --ray",
}


def require(module: str, extra: str, feature: str) -> ModuleType:
    """`module`, imported for `feature`; MissingExtra naming `extra` when it cannot be."""
    assert extra in EXTRAS, f"no extra `{extra}` in pyproject.toml"
    try:
        return importlib.import_module(module)
    except ImportError as err:
        missing = err.name or module
        raise MissingExtra(f"{feature} needs `{missing}`, which is not installed",
                           f"pip install 'sedsl[{extra}]'") from None


def installed(module: str) -> bool:
    """Whether `module` can be imported (for features that are left out without it)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
