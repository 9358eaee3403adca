"""A real LSP client for the language server's tests (pytest-lsp: pygls' client over the
server's stdin/stdout, `sedsl lsp` started as editors start it), recording every
publishDiagnostics with its version so that a test can wait for a given version's."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient
from pytest_lsp.client import make_test_lsp_client

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
WAIT_S = 30.0  # generous: CI's two cores are shared with the rest of the suite


def _client() -> LanguageClient:
    client = make_test_lsp_client()
    client.published = []  # type: ignore[attr-defined]

    def record(ls: LanguageClient, params: lsp.PublishDiagnosticsParams) -> None:
        ls.published.append(params)  # type: ignore[attr-defined]
        ls.diagnostics[params.uri] = params.diagnostics

    client.protocol.fm.features.pop(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS, None)
    client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)(record)
    client.refreshes = []  # type: ignore[attr-defined]
    for method in (lsp.WORKSPACE_CODE_LENS_REFRESH, lsp.WORKSPACE_INLAY_HINT_REFRESH):
        client.feature(method)(lambda ls, params, m=method: ls.refreshes.append(m))
    return client


def config(*args: str, env: dict[str, str] | None = None) -> ClientServerConfig:
    """`python -m sedsl.cli lsp ARGS` with this checkout first on the path."""
    return ClientServerConfig(
        server_command=[sys.executable, "-m", "sedsl.cli", "lsp", *args],
        server_env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        client_factory=_client)


async def initialize(client: LanguageClient, options: Any = None,
                     editor: str = "visual-studio-code") -> lsp.InitializeResult:
    return await client.initialize_session(lsp.InitializeParams(
        capabilities=pytest_lsp.client_capabilities(editor), root_uri=ROOT.as_uri(),
        initialization_options=options))


def uri_of(path: Path) -> str:
    return path.resolve().as_uri()


def open_doc(client: LanguageClient, uri: str, text: str, version: int = 1) -> None:
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        lsp.TextDocumentItem(uri, "sedsl", version, text)))


def change(client: LanguageClient, uri: str, text: str, version: int) -> None:
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(version=version, uri=uri),
        [lsp.TextDocumentContentChangeWholeDocument(text)]))


async def diagnostics(client: LanguageClient, uri: str, version: int, after: int = 0,
                      timeout: float = WAIT_S) -> list[lsp.Diagnostic]:
    """The diagnostics published for that version of the document (waiting for them), among
    those published after the first `after`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for p in reversed(client.published[after:]):  # type: ignore[attr-defined]
            if p.uri == uri and p.version == version:
                return list(p.diagnostics)
        await asyncio.sleep(0.01)
    raise TimeoutError(f"no diagnostics for {uri} version {version} in {timeout} s")


def published(client: LanguageClient) -> int:
    """How many publishDiagnostics the client has had: `after` for `diagnostics`."""
    return len(client.published)  # type: ignore[attr-defined]


def doc_id(uri: str) -> lsp.TextDocumentIdentifier:
    return lsp.TextDocumentIdentifier(uri)


async def hover(client: LanguageClient, uri: str, line: int, character: int) -> str | None:
    found = await client.text_document_hover_async(lsp.HoverParams(
        doc_id(uri), lsp.Position(line, character)))
    if found is None:
        return None
    assert isinstance(found.contents, lsp.MarkupContent)
    return found.contents.value


def position_of(text: str, needle: str, offset: int = 0) -> lsp.Position:
    """The LSP position of `needle` (plus `offset` characters) in ASCII text."""
    i = text.index(needle) + offset
    return lsp.Position(text.count("\n", 0, i), i - (text.rfind("\n", 0, i) + 1))
