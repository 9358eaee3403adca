"""The language server never dies and never blocks: a fuzz campaign (bench/fuzz.py's seeded
inputs) replayed as edits of one document, a spec typed character by character, `use` of a FIFO
and of a device, a 10^6-node spec superseded mid-compile, a burst of edits (only the newest is
published), a cancelled request, a failing handler; and shutdown/exit ends the process cleanly.
All through a real client over stdio (tests/lsp_client.py), except the failing handler."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcRequestCancelled
from pytest_lsp import LanguageClient

from bench.fuzz import FUZZ_LIMITS, generate
from tests.lsp_client import (
    SPECS,
    change,
    config,
    diagnostics,
    doc_id,
    hover,
    initialize,
    open_doc,
    position_of,
    published,
    uri_of,
)

module_loop = pytest.mark.asyncio(loop_scope="module")  # the module's server, its loop

FUZZ_INPUTS = 200  # about 10 s on the 2-core CI machine
LIMITS = ",".join(f"{k}={v}" for k, v in FUZZ_LIMITS.items())
DIGITS = (SPECS / "se_digits.se").read_text()
WHOLE = lsp.Range(lsp.Position(0, 0), lsp.Position(10_000, 0))


@pytest_lsp.fixture(config=config(env={"SEDSL_LIMITS": LIMITS}), scope="module")
async def fuzz_client(lsp_client: LanguageClient) -> AsyncIterator[None]:
    await initialize(lsp_client, {"sedsl": {"debounceMs": 0}})
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=config("--set", "classes=10"), scope="module")
async def client(lsp_client: LanguageClient) -> AsyncIterator[None]:
    await initialize(lsp_client, editor="neovim")
    yield
    await lsp_client.shutdown_session()


async def answers(client: LanguageClient, uri: str, limit_s: float = 5.0) -> None:
    """The server answers a request promptly."""
    start = time.monotonic()
    await asyncio.wait_for(client.text_document_document_symbol_async(
        lsp.DocumentSymbolParams(doc_id(uri))), limit_s)
    assert time.monotonic() - start < limit_s


def within(d: lsp.Diagnostic, text: str) -> bool:
    """A diagnostic's range lies inside the document (LSP lines, UTF-16 columns)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    ok = True
    for p in (d.range.start, d.range.end):
        ok &= 0 <= p.line < len(lines)
        ok &= p.line >= len(lines) or 0 <= p.character <= len(lines[p.line].encode(
            "utf-16-le", "surrogatepass")) // 2
    return ok and (d.range.start.line, d.range.start.character) <= (
        d.range.end.line, d.range.end.character)


# --- any text -----------------------------------------------------------------------------------


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


@module_loop
async def test_a_fuzz_campaign_replayed_as_edits(fuzz_client: LanguageClient) -> None:
    """Every input of a seeded fuzz campaign, as the next version of one document: each gets
    its diagnostics (with ranges inside the text) or none, and the server still answers."""
    client = fuzz_client
    uri = uri_of(SPECS / "fuzz.se")
    open_doc(client, uri, DIGITS)
    assert await diagnostics(client, uri, 1) == []
    for k in range(FUZZ_INPUTS):
        text = generate(k).text
        if not isinstance(text, str) or _unencodable(text):
            continue  # bytes or files: no buffer; a lone surrogate cannot travel as JSON text
        version = k + 2
        change(client, uri, text, version)
        for d in await diagnostics(client, uri, version):
            assert within(d, text), (k, d.range, text)
    await answers(client, uri)
    change(client, uri, DIGITS, FUZZ_INPUTS + 2)
    assert await diagnostics(client, uri, FUZZ_INPUTS + 2) == []
    at = position_of(DIGITS, "conv3 =")
    assert "`32x4x4`" in (await hover(client, uri, at.line, at.character) or "")


@module_loop
async def test_a_spec_typed_character_by_character(fuzz_client: LanguageClient) -> None:
    client = fuzz_client
    uri = uri_of(SPECS / "typed.se")
    open_doc(client, uri, "")
    await diagnostics(client, uri, 1)
    version = 1
    for end in [*range(0, len(DIGITS), 7), len(DIGITS)]:
        version += 1
        change(client, uri, DIGITS[:end], version)
        for d in await diagnostics(client, uri, version):
            assert within(d, DIGITS[:end])
    assert await diagnostics(client, uri, version) == []


@module_loop
async def test_a_burst_of_edits_publishes_the_newest_only(fuzz_client: LanguageClient) -> None:
    """Edits faster than the debounce: stale versions are never published after newer ones,
    and the last one is."""
    client = fuzz_client
    client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(
        {"sedsl": {"debounceMs": 300}}))
    try:
        uri = uri_of(SPECS / "burst.se")
        open_doc(client, uri, DIGITS)
        await diagnostics(client, uri, 1)
        after = published(client)
        for v in range(2, 52):
            change(client, uri, DIGITS.replace("width = 16", f"width = {v}"), v)
        assert await diagnostics(client, uri, 51, after) == []
        await asyncio.sleep(0.5)
        versions = [p.version for p in client.published[after:]  # type: ignore[attr-defined]
                    if p.uri == uri]
        assert versions[-1] == 51 and versions == sorted(set(versions)) and len(versions) < 5
    finally:
        client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(
            {"sedsl": {"debounceMs": 0}}))


@module_loop
async def test_use_of_a_fifo_or_a_device(fuzz_client: LanguageClient, tmp_path: Path) -> None:
    """Refused with a diagnostic on the `use` line: never read (a FIFO would block)."""
    client = fuzz_client
    os.mkfifo(tmp_path / "pipe.se")
    (tmp_path / "zero.se").symlink_to("/dev/zero")
    body = "\nnetwork t {\n  input 3x8x8\n  conv(4, 3)\n}\n"
    for k, target in enumerate(("pipe.se", "zero.se", "/dev/zero", "lib")):
        uri = uri_of(tmp_path / f"uses{k}.se")
        open_doc(client, uri, f'use "{target}"{body}')
        (found,) = await diagnostics(client, uri, 1)
        assert found.range.start.line == 0, (target, found.message)
    await answers(client, uri)


# --- never blocked ------------------------------------------------------------------------------

HUGE = "network huge {\n  input 1x1x1\n  a = { relu * 1000 } * 990\n}\n"  # ~10^6 nodes


@module_loop
async def test_a_huge_spec_is_superseded_mid_compile(client: LanguageClient) -> None:
    """A 10^6-node spec (minutes to compile) does not block the server, and the next edit
    cancels its compile: the small spec's diagnostics come at once, the huge one's never."""
    uri = uri_of(SPECS / "huge.se")
    after = published(client)
    open_doc(client, uri, HUGE)
    await asyncio.sleep(1.0)  # well into the compile
    await answers(client, uri)  # symbols need the parse only
    start = time.monotonic()
    change(client, uri, DIGITS, 2)
    assert await diagnostics(client, uri, 2, after, timeout=20) == []
    assert time.monotonic() - start < 20
    assert all(p.version != 1 for p in client.published[after:]  # type: ignore[attr-defined]
               if p.uri == uri)


@module_loop
async def test_a_cancelled_request(client: LanguageClient) -> None:
    """A hover waiting for a compile is cancelled by $/cancelRequest; the next one answers."""
    path = SPECS / "se_resnext101.se"
    uri = uri_of(path)
    # conv4 five times as deep: a compile of ~1 s, long after the cancel (at 23 blocks it could
    # finish within the 10 ms below on a quiet machine, and the hover was answered)
    text = path.read_text().replace("* 23", "* 120")
    open_doc(client, uri, text)
    at = position_of(text, "conv4", 1)
    params = lsp.HoverParams(doc_id(uri), at)
    pending = asyncio.ensure_future(client.protocol.send_request_async(
        lsp.TEXT_DOCUMENT_HOVER, params, msg_id="hover-to-cancel"))
    await asyncio.sleep(0.01)  # sent (the compile it waits for takes longer)
    client.cancel_request(lsp.CancelParams(id="hover-to-cancel"))
    with pytest.raises(JsonRpcRequestCancelled):
        await pending
    assert "`1024x14x14`" in (await hover(client, uri, at.line, at.character) or "")


@module_loop
async def test_command_line_settings(client: LanguageClient) -> None:
    """`sedsl lsp --set classes=10`: the head has 10 outputs."""
    uri = uri_of(SPECS / "se_resnet50.se")
    open_doc(client, uri, (SPECS / "se_resnet50.se").read_text())
    await diagnostics(client, uri, 1)
    hints = await client.text_document_inlay_hint_async(lsp.InlayHintParams(doc_id(uri), WHOLE))
    assert str(max(hints or [], key=lambda h: h.position.line).label).startswith("10 · ")


@module_loop
async def test_utf8_positions(client: LanguageClient) -> None:
    """Neovim asks for UTF-8 positions (its first choice): columns count bytes."""
    text = 'network t(a = "é😀", b = bnn) {\n  input 3x8x8\n}\n'
    uri = uri_of(SPECS / "utf8.se")
    open_doc(client, uri, text)
    (found,) = await diagnostics(client, uri, 1)
    col = len(text[:text.index("bnn")].encode("utf-8"))
    assert found.range == lsp.Range(lsp.Position(0, col), lsp.Position(0, col + 3))


# --- handlers that fail -------------------------------------------------------------------------


def test_a_failing_handler_is_logged_and_answered(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A bug in a feature (here: hover raising) is logged, reported to the client's log, and
    answered with nothing; the server goes on."""
    from sedsl.lsp import hover as hover_feature
    from sedsl.lsp import server as lsp_server

    def boom(*args: Any) -> None:
        raise RuntimeError("a bug in a feature")

    monkeypatch.setattr(hover_feature, "hover", boom)
    ls = lsp_server.SedslServer()
    logged: list[lsp.LogMessageParams] = []
    monkeypatch.setattr(ls, "window_log_message", logged.append)
    monkeypatch.setattr(ls, "text_document_publish_diagnostics", lambda params: None)
    monkeypatch.setattr(lsp_server.SedslServer, "workspace", property(
        lambda self: type("W", (), {"position_encoding": "utf-16"})()))
    handler = ls.protocol.fm.features[lsp.TEXT_DOCUMENT_HOVER]
    uri = uri_of(SPECS / "se_digits.se")

    async def run() -> Any:
        ls.open(uri, 1, DIGITS)
        return await handler(lsp.HoverParams(doc_id(uri), lsp.Position(20, 3)))

    with caplog.at_level(logging.ERROR, "sedsl.lsp"):
        assert asyncio.run(run()) is None
    assert "textDocument/hover failed" in caplog.text and "a bug in a feature" in caplog.text
    assert logged and "a bug in sedsl" in logged[0].message


# --- shutdown -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_shutdown_and_exit() -> None:
    """shutdown, then exit: the process ends with status 0, also in the middle of a compile."""
    c = await config().start()
    try:
        await initialize(c)  # type: ignore[arg-type]
        open_doc(c, uri_of(SPECS / "huge.se"), HUGE)  # type: ignore[arg-type]
        await asyncio.sleep(0.5)
        await asyncio.wait_for(c.shutdown_session(), 20)  # type: ignore[attr-defined]
        assert c._server is not None and c._server.returncode == 0  # type: ignore[attr-defined]
    finally:
        await c.stop()
