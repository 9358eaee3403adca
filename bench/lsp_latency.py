"""How soon after an edit the language server publishes diagnostics, beside `sedsl check` as a
fresh process, for specs/se_resnext101.se. The server runs as editors run it (`sedsl lsp` over
stdio, a pygls client driving it); each edit is a whole-document change (a different ratio, depth
or comment, as when typing) and its latency runs from sending the change to receiving that
version's publishDiagnostics. Measured with no debounce (the compile and the round trip) and
with the default debounce (what a user sees once they stop typing).

    python bench/lsp_latency.py [--edits 20] [--cli-runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from _timing import ROOT, command, environment, interleaved
from lsprotocol import types as lsp
from pygls.lsp.client import LanguageClient

from sedsl.lsp.compiler import Settings

SPEC = "specs/se_resnext101.se"


def edits(text: str, n: int) -> list[str]:
    """n versions of the spec, each a small edit of the one before."""
    variants = [text.replace("ratio = 16", "ratio = 8"), text,
                text.replace("* 23", "* 22"), text + "# an edit\n"]
    return [variants[k % len(variants)] for k in range(n)]


async def server_latency(n: int, debounce_ms: int) -> tuple[list[float], float]:
    """Seconds from each edit to its diagnostics, and the server's start-up (initialize)."""
    client = LanguageClient("bench", "0")
    arrived: dict[int, float] = {}

    @client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def published(params: lsp.PublishDiagnosticsParams) -> None:
        if params.version is not None:
            arrived.setdefault(params.version, time.perf_counter())

    start = time.perf_counter()
    await client.start_io(sys.executable, "-m", "sedsl.cli", "lsp", env=environment(),
                          cwd=str(ROOT))
    await client.initialize_async(lsp.InitializeParams(
        capabilities=lsp.ClientCapabilities(), root_uri=ROOT.as_uri(),
        initialization_options={"sedsl": {"debounceMs": debounce_ms}}))
    client.initialized(lsp.InitializedParams())
    started = time.perf_counter() - start
    path = ROOT / SPEC
    uri = path.resolve().as_uri()
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        lsp.TextDocumentItem(uri, "sedsl", 1, path.read_text())))
    await _arrival(arrived, 1)
    took = []
    for version, text in enumerate(edits(path.read_text(), n), start=2):
        await asyncio.sleep(0.05)  # the server idle, as between keystrokes
        sent = time.perf_counter()
        client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(version=version, uri=uri),
            [lsp.TextDocumentContentChangeWholeDocument(text)]))
        took.append(await _arrival(arrived, version) - sent)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return took, started


async def _arrival(arrived: dict[int, float], version: int) -> float:
    for _ in range(6000):
        if version in arrived:
            return arrived[version]
        await asyncio.sleep(0.005)
    raise TimeoutError(f"no diagnostics for version {version}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--cli-runs", type=int, default=7)
    args = parser.parse_args()
    default = Settings().debounce_ms
    results = {}
    for debounce in (0, default):
        took, started = asyncio.run(server_latency(args.edits, debounce))
        results[debounce] = (statistics.median(took), min(took), max(took), started)
    cli = interleaved({"check": command([sys.executable, "-m", "sedsl.cli", "check", SPEC])},
                      args.cli_runs)["check"]
    print(f"edit -> diagnostics published for {SPEC} (median of {args.edits} edits; "
          f"min..max):")
    for debounce, (median, low, high, _) in results.items():
        label = f"sedsl lsp, debounce {debounce} ms" + (" (default)" if debounce == default
                                                         else "")
        print(f"  {label:38} {median * 1e3:7.1f} ms   ({low * 1e3:.1f}..{high * 1e3:.1f})"
              f"   {median / cli:.2f}x of the CLI")
    print(f"  {'sedsl check, a fresh process':38} {cli * 1e3:7.1f} ms   "
          f"(median of {args.cli_runs})")
    print(f"server start-up to initialized: {results[0][3] * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
