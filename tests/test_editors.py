"""The editor integrations: the VS Code extension's manifest starts the language server for
.se files with the settings the server reads, and its extension.js is valid JavaScript (checked
with node when it is installed); the Neovim and Helix snippets start `sedsl lsp`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sedsl.lsp.compiler import Settings
from sedsl.lsp.server import parse_settings

ROOT = Path(__file__).resolve().parents[1]
VSCODE = ROOT / "editors" / "vscode"
MANIFEST = json.loads((VSCODE / "package.json").read_text())


def test_the_extension_activates_on_sedsl_files_and_starts_the_server() -> None:
    assert "onLanguage:sedsl" in MANIFEST["activationEvents"]
    (language,) = MANIFEST["contributes"]["languages"]
    assert language["id"] == "sedsl" and ".se" in language["extensions"]
    assert (VSCODE / language["configuration"]).is_file()
    (grammar,) = MANIFEST["contributes"]["grammars"]
    assert (VSCODE / grammar["path"]).resolve().is_file()
    assert MANIFEST["main"] == "./extension.js" and (VSCODE / "extension.js").is_file()
    assert "vscode-languageclient" in MANIFEST["dependencies"]
    source = (VSCODE / "extension.js").read_text()
    assert 'require("vscode-languageclient/node")' in source
    assert 'args: ["lsp"]' in source and "TransportKind.stdio" in source
    lock = json.loads((VSCODE / "package-lock.json").read_text())
    assert "node_modules/vscode-languageclient" in lock["packages"]


def test_the_extension_settings_are_the_servers() -> None:
    """Every `sedsl.*` setting the extension declares (but the server's path) is one the server
    reads, and each changes what it reads."""
    declared = MANIFEST["contributes"]["configuration"]["properties"]
    examples = {"set": {"ratio": "8"}, "searchPath": ["specs"], "convention": "paper",
                "debounceMs": 7}
    for key in declared:
        name = key.removeprefix("sedsl.")
        if name == "server.path":
            continue
        assert name in examples, f"the server does not read {key}"
        assert parse_settings({"sedsl": {name: examples[name]}}, Settings()) != Settings()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_extension_js_is_valid_javascript() -> None:
    """What `npm run compile` runs (the extension has no build step)."""
    assert MANIFEST["scripts"]["compile"] == "node --check extension.js"
    done = subprocess.run(["node", "--check", "extension.js"], cwd=VSCODE, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


def test_neovim_and_helix_snippets_start_the_server() -> None:
    readme = (ROOT / "editors" / "README.md").read_text()
    lua = re.search(r"```lua\n(.*?)```", readme, re.S)
    assert lua is not None and "vim.lsp.start" in lua.group(1)
    assert re.search(r"cmd\s*=\s*\{\s*\"sedsl\",\s*\"lsp\"\s*\}", lua.group(1))
    toml = re.search(r"```toml\n(.*?)```", readme, re.S)
    assert toml is not None
    try:
        import tomllib
    except ImportError:  # Python 3.10
        pytest.skip("tomllib is Python 3.11+")
    helix = tomllib.loads(toml.group(1))
    assert helix["language-server"]["sedsl"] == {"command": "sedsl", "args": ["lsp"]}
    (language,) = helix["language"]
    assert language["name"] == "sedsl" and "se" in language["file-types"]
    assert language["language-servers"] == ["sedsl"]
