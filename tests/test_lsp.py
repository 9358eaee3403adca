"""The language server end to end, through a real LSP client over stdio (tests/lsp_client.py):
initialize, diagnostics (exact ranges, hints, related places, errors inside `use`d files),
hover (a stage's shape and exact cost, checked against timm and fvcore), inlay hints, code
lenses, definition and references across `use`, rename, symbols, completion, formatting,
settings; and docs/editors.md's captured output. One server for the module (start-up is the
slow part); each test opens documents of its own."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient

import sedsl
from sedsl.ir.ops import OPS
from sedsl.ir.se import SETTINGS
from sedsl.lsp import words
from tests.lsp_client import (
    ROOT,
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

RESNET50 = SPECS / "se_resnet50.se"
WHOLE = lsp.Range(lsp.Position(0, 0), lsp.Position(10_000, 0))


@pytest_lsp.fixture(config=config(), scope="module")
async def client(lsp_client: LanguageClient) -> AsyncIterator[None]:
    lsp_client.init_result = await initialize(lsp_client)  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()


@pytest.fixture(scope="module")
def timm_oracle() -> dict[str, int]:
    """SE-ResNet-50 as timm builds it in the SE authors' layout (legacy_seresnet50, stride on
    the first 1x1 as specs/se_resnet50.se): its layer3 (the spec's conv4) counted by torch and
    fvcore, and the whole network's parameters. No sedsl code is involved."""
    import warnings

    import timm
    import torch

    with warnings.catch_warnings():  # fvcore's TorchScript use is deprecated in newer torch
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis
    with torch.device("meta"):  # counted, not initialised: a fraction of the time
        model = timm.create_model("legacy_seresnet50")
        base = timm.create_model("resnet50")
    layer3 = model.layer3.to_empty(device="cpu").eval()
    x = torch.zeros(1, 512, 28, 28)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        count = FlopCountAnalysis(layer3, x)
        count.unsupported_ops_warnings(False)
        count.uncalled_modules_warnings(False)
        flops = int(count.total())
        out = layer3(x).shape
    return {"params": sum(p.numel() for p in layer3.parameters()), "flops": flops,
            "channels": out[1], "size": out[2],
            "total": sum(p.numel() for p in model.parameters()),
            "base_total": sum(p.numel() for p in base.parameters())}


async def opened(client: LanguageClient, path: Path, text: str | None = None) -> str:
    """Open a file (its text from disk unless given), or bring the open one to that text;
    return its URI once that version is compiled."""
    uri = uri_of(path)
    text = path.read_text() if text is None else text
    versions: dict[str, tuple[int, str]] = client.__dict__.setdefault("versions", {})
    version, now = versions.get(uri, (0, None))
    if now == text:
        return uri
    after = published(client)
    if version:
        change(client, uri, text, version + 1)
    else:
        open_doc(client, uri, text)
    versions[uri] = (version + 1, text)
    await diagnostics(client, uri, version + 1, after)
    return uri


# --- initialize ---------------------------------------------------------------------------------


@module_loop
async def test_initialize_advertises_the_features(client: LanguageClient) -> None:
    init: lsp.InitializeResult = client.init_result  # type: ignore[attr-defined]
    caps = init.capabilities
    assert init.server_info is not None and init.server_info.name == "sedsl"
    assert caps.hover_provider and caps.inlay_hint_provider and caps.code_lens_provider
    assert caps.definition_provider and caps.references_provider and caps.rename_provider
    assert caps.document_symbol_provider and caps.completion_provider
    assert caps.document_formatting_provider
    sync = caps.text_document_sync
    assert isinstance(sync, lsp.TextDocumentSyncOptions)
    assert sync.change == lsp.TextDocumentSyncKind.Full


# --- diagnostics --------------------------------------------------------------------------------

BROKEN = """use "lib/resnet.se"

network broken(classes = 10) {
  input 3x32x32
  stem  = { conv(16, 3) bnn relu }
  conv2 = bottleneck(16) * 2
  head  = classifier(classes)
}
"""


@module_loop
async def test_a_broken_spec_then_fixed(client: LanguageClient, tmp_path: Path) -> None:
    uri = uri_of(tmp_path / "broken.se")
    open_doc(client, uri, BROKEN)
    (found,) = await diagnostics(client, uri, 1)
    start = position_of(BROKEN, "bnn")
    assert found.range == lsp.Range(start, lsp.Position(start.line, start.character + 3))
    assert found.message == "unknown name `bnn`\nhint: did you mean `bn`?"
    assert found.severity == lsp.DiagnosticSeverity.Error and found.source == "sedsl"
    change(client, uri, BROKEN.replace("bnn", "bn"), 2)
    assert await diagnostics(client, uri, 2) == []


@module_loop
async def test_a_failing_block_call_points_at_the_block(client: LanguageClient,
                                                       tmp_path: Path) -> None:
    text = BROKEN.replace("bnn", "bn").replace("bottleneck(16)", "bottleneck(16, strde = 2)")
    uri = uri_of(tmp_path / "call.se")
    open_doc(client, uri, text)
    (found,) = await diagnostics(client, uri, 1)
    assert found.message.startswith("block `bottleneck` has no parameter `strde`")
    assert found.range.start == position_of(text, "strde")
    (related,) = found.related_information or []
    lib = (SPECS / "lib" / "resnet.se").read_text()
    assert related.location.uri == uri_of(SPECS / "lib" / "resnet.se")
    assert related.location.range.start.line == position_of(lib, "block bottleneck").line


@module_loop
async def test_errors_inside_a_used_file(client: LanguageClient, tmp_path: Path) -> None:
    """Shown on the line here that reached them, with the place in the used file, and in
    the used file itself once it is open; a used file that does not parse, on the `use`."""
    lib = tmp_path / "mylib.se"
    lib.write_text("# blocks\nblock bad(c_out) {\n  conv(c_out, 3, groups = 3) bn relu\n}\n")
    (tmp_path / "broken_lib.se").write_text("block x( {\n")
    spec = ('use "mylib.se"\n\nnetwork t {\n  input 3x16x16\n  stem = bad(16)\n}\n')
    uri = uri_of(tmp_path / "spec.se")
    open_doc(client, uri, spec)
    (here,) = await diagnostics(client, uri, 1)
    assert here.range.start.line == 4 and "groups" in here.message
    assert f"{lib}:3:3" in here.message
    (there,) = here.related_information or []
    assert there.location.uri == uri_of(lib)
    assert there.location.range.start == lsp.Position(2, 2)
    lib_uri = uri_of(lib)
    open_doc(client, lib_uri, lib.read_text())
    (in_lib,) = await diagnostics(client, lib_uri, 1)
    assert in_lib.range.start == lsp.Position(2, 2) and "while compiling" in in_lib.message
    after = published(client)
    change(client, uri, spec.replace("mylib.se", "broken_lib.se"), 2)
    (on_use,) = await diagnostics(client, uri, 2, after)
    assert on_use.range.start.line == 0 and "broken_lib.se" in on_use.message
    assert "expected" in on_use.message  # the syntax error, with its place in the file
    assert (await diagnostics(client, lib_uri, 1, after)) == []  # the spec moved on
    client.text_document_did_close(lsp.DidCloseTextDocumentParams(doc_id(lib_uri)))


@module_loop
async def test_ranges_count_utf16_code_units(client: LanguageClient, tmp_path: Path) -> None:
    """Columns past characters outside the BMP (two UTF-16 units each) are exact."""
    text = 'network t(a = "😀😀", b = bnn) {\n  input 3x8x8\n}\n'
    uri = uri_of(tmp_path / "emoji.se")
    open_doc(client, uri, text)
    (found,) = await diagnostics(client, uri, 1)
    col = text.index("bnn") + 2  # two astral characters before it
    assert found.range == lsp.Range(lsp.Position(0, col), lsp.Position(0, col + 3))


# --- hover --------------------------------------------------------------------------------------


@module_loop
async def test_hover_on_a_stage_shows_its_shape_and_exact_cost(
        client: LanguageClient, timm_oracle: dict[str, int]) -> None:
    """`conv4 = bottleneck(256, stride = 2, ...) * 6` is timm's layer3 of legacy_seresnet50:
    the same output shape, parameters (torch) and FLOPs (fvcore)."""
    uri = await opened(client, RESNET50)
    text = RESNET50.read_text()
    for needle in ("conv4", "bottleneck(256"):
        at = position_of(text, needle, 1)
        shown = await hover(client, uri, at.line, at.character)
        assert shown is not None
        o = timm_oracle
        assert f"`{o['channels']}x{o['size']}x{o['size']}`" in shown
        assert f"params: {o['params']:,} " in shown
        assert f"FLOPs (fvcore): {o['flops']:,} " in shown
        assert "per copy (6): block1 " in shown and "block2..block6 " in shown


@module_loop
async def test_hover_on_an_op_a_rule_a_setting_a_parameter(client: LanguageClient) -> None:
    uri = await opened(client, RESNET50)
    text = RESNET50.read_text()
    lib = SPECS / "lib" / "resnet.se"
    lib_uri = await opened(client, lib)
    conv = position_of(lib.read_text(), "conv(c_out, 7")
    shown = await hover(client, lib_uri, conv.line, conv.character)
    assert shown is not None and shown.startswith("**conv**(c_out, kernel, stride = 1")
    assert OPS["conv"].doc in shown
    rule = position_of(text, "at residual.end")
    shown = await hover(client, uri, rule.line, rule.character + 4)
    assert shown is not None and "places 16 SE blocks: conv2.block1..block3, " in shown
    assert "reduced widths: 256 → 16, 512 → 32, 1024 → 64, 2048 → 128" in shown
    ratio = position_of(text, "ratio = 16")
    shown = await hover(client, uri, ratio.line, ratio.character)
    assert shown is not None and shown.startswith("**ratio** = `16` — SE setting")
    assert "takes: a number > 0" in shown
    layout = position_of(text, 'layout: "caffe"')
    shown = await hover(client, uri, layout.line, layout.character)
    assert shown is not None and shown.startswith('**layout** = `"caffe"` — network parameter')
    assert 'takes: one of `"caffe"`, `"timm"`' in shown  # as the spec declares them


# --- inlay hints and code lenses ----------------------------------------------------------------


@module_loop
async def test_inlay_hints_show_every_stage_shape(client: LanguageClient,
                                                  timm_oracle: dict[str, int]) -> None:
    uri = await opened(client, RESNET50)
    text = RESNET50.read_text()
    hints = await client.text_document_inlay_hint_async(lsp.InlayHintParams(doc_id(uri), WHOLE))
    shown = {h.position.line: str(h.label) for h in hints or []}
    expected = {"stem": "64x56x56", "conv2": "256x56x56", "conv3": "512x28x28",
                "conv4": "1024x14x14", "conv5": "2048x7x7", "head": "1000"}
    for stage, dims in expected.items():
        line = position_of(text, f"  {stage} ").line
        assert shown[line].startswith(f"{dims} · "), (stage, shown)
    last = max(hints or [], key=lambda h: h.position.line)
    assert f"the network up to here: {timm_oracle['total']:,} params" in str(last.tooltip)


@module_loop
async def test_code_lenses_give_totals_and_the_se_overhead(client: LanguageClient,
                                                           timm_oracle: dict[str, int]) -> None:
    uri = await opened(client, RESNET50)
    text = RESNET50.read_text()
    lenses = await client.text_document_code_lens_async(lsp.CodeLensParams(doc_id(uri)))
    by_line: dict[int, list[str]] = {}
    for lens in lenses or []:
        assert lens.command is not None
        by_line.setdefault(lens.range.start.line, []).append(lens.command.title)
    network = by_line[position_of(text, "network").line]
    extra = timm_oracle["total"] - timm_oracle["base_total"]
    assert network[0].startswith(f"{timm_oracle['total']:,} (28.09M) params")
    share = 100 * extra / timm_oracle["base_total"]
    assert network[1].startswith(f"SE: +2.53M params (+{share:.2f}%)")
    assert by_line[position_of(text, "se {").line][0].startswith("16 SE blocks: +2.53M params")
    assert by_line[position_of(text, "at residual").line][0].startswith(
        "16 SE blocks: +2.53M params (100.00% of the SE overhead)")


# --- navigation ---------------------------------------------------------------------------------


@module_loop
async def test_definition_across_use(client: LanguageClient) -> None:
    uri = await opened(client, RESNET50)
    text = RESNET50.read_text()
    lib = SPECS / "lib" / "resnet.se"
    for needle, target in (("bottleneck(256", "bottleneck"), ("stem7x7", "stem7x7")):
        at = position_of(text, needle, 2)
        (found,) = await client.text_document_definition_async(
            lsp.DefinitionParams(doc_id(uri), at)) or []
        assert isinstance(found, lsp.Location) and found.uri == uri_of(lib)
        assert found.range.start == position_of(lib.read_text(), f"block {target}", 6)
    use = position_of(text, '"lib/resnet.se"', 3)
    (found,) = await client.text_document_definition_async(
        lsp.DefinitionParams(doc_id(uri), use)) or []
    assert isinstance(found, lsp.Location) and found.uri == uri_of(lib)
    stage = position_of(text, "conv2..conv5", 8)  # a stage named in a rule: its statement
    (found,) = await client.text_document_definition_async(
        lsp.DefinitionParams(doc_id(uri), stage)) or []
    assert isinstance(found, lsp.Location) and found.uri == uri
    assert found.range.start == position_of(text, "  conv5 =", 2)


OWN_BLOCK = """block unit(c) {
  conv(c, 3) bn relu
}

network t {
  input 3x16x16
  a = unit(8)
  b = unit(8) * 2
}

se {
  ratio = 4
  at block.end of unit
}
"""


@module_loop
async def test_references_and_rename_of_a_block(client: LanguageClient, tmp_path: Path) -> None:
    uri = await opened(client, tmp_path / "own.se", OWN_BLOCK)
    at = position_of(OWN_BLOCK, "unit(8)")
    refs = await client.text_document_references_async(lsp.ReferenceParams(
        text_document=doc_id(uri), position=at,
        context=lsp.ReferenceContext(include_declaration=True))) or []
    assert sorted((r.range.start.line, r.range.start.character) for r in refs) == [
        (0, 6), (6, 6), (7, 6), (12, 18)]
    edit = await client.text_document_rename_async(lsp.RenameParams(doc_id(uri), at, "cell"))
    assert edit is not None and edit.changes is not None
    edits = edit.changes[uri]
    assert len(edits) == 4 and {e.new_text for e in edits} == {"cell"}
    with pytest.raises(JsonRpcException, match="is taken"):
        await client.text_document_rename_async(lsp.RenameParams(doc_id(uri), at, "conv"))
    resnet = await opened(client, RESNET50)
    library_block = position_of(RESNET50.read_text(), "bottleneck(256")
    with pytest.raises(JsonRpcException, match="sedsl's block library"):
        await client.text_document_rename_async(lsp.RenameParams(
            doc_id(resnet), library_block, "unit2"))


@module_loop
async def test_document_symbols(client: LanguageClient) -> None:
    uri = await opened(client, RESNET50)
    symbols = await client.text_document_document_symbol_async(
        lsp.DocumentSymbolParams(doc_id(uri))) or []
    names = [s.name for s in symbols]
    assert names == ['use "lib/resnet.se"', "se_resnet50", "se"]
    network = symbols[1]
    assert isinstance(network, lsp.DocumentSymbol) and network.children is not None
    stages = {c.name: c.detail for c in network.children}
    assert stages["conv4"] == "1024x14x14" and stages["head"] == "1000"
    assert "classes" in stages and "layout" in stages


# --- completion ---------------------------------------------------------------------------------


async def labels(client: LanguageClient, uri: str, at: lsp.Position) -> set[str]:
    found = await client.text_document_completion_async(lsp.CompletionParams(doc_id(uri), at))
    items = found.items if isinstance(found, lsp.CompletionList) else found or []
    return {i.label for i in items}


@module_loop
async def test_completion(client: LanguageClient, tmp_path: Path) -> None:
    text = RESNET50.read_text()
    uri = await opened(client, tmp_path / "complete.se", text)
    # half-typed lines: the context comes from the text, the scope from the last compile
    typing = re.sub(r"  ratio = 16.*", "  gate = \n  ratio = 16\n  at residual.end in \n"
                    "  at \n  after ", text)
    typing = typing.replace("  head  = classifier(classes)",
                            "  head  = classifier(classes)\n  x = con\n  y = conv(8, 3, ")
    change(client, uri, typing, 2)
    await diagnostics(client, uri, 2)
    lines = typing.split("\n")

    def end_of(line_text: str) -> lsp.Position:
        line = lines.index(line_text)
        return lsp.Position(line, len(line_text))

    assert {"sigmoid", "hardsigmoid", "tanh", "relu"} <= await labels(client, uri,
                                                                       end_of("  gate = "))
    assert {"residual.end", "standard", "post"} <= await labels(client, uri, end_of("  at "))
    assert {"conv2", "conv5", "conv4.block6"} <= await labels(client, uri,
                                                               end_of("  at residual.end in "))
    assert {"relu2", "conv3", "shortcut.conv1"} <= await labels(client, uri, end_of("  after "))
    body = await labels(client, uri, end_of("  x = con"))
    assert {"conv", "bn", "bottleneck", "classifier", "floor"} <= body
    assert "stride =" in await labels(client, uri, end_of("  y = conv(8, 3, "))
    settings = await labels(client, uri, lsp.Position(end_of("  gate = ").line, 2))
    assert set(SETTINGS) <= settings and {"at", "after"} <= settings
    use = end_of('use "lib/resnet.se"')
    assert "lib/resnet.se" in await labels(client, uri, lsp.Position(use.line, 5))


# --- formatting ---------------------------------------------------------------------------------


@module_loop
async def test_formatting_uses_the_spec_printer(client: LanguageClient, tmp_path: Path) -> None:
    if importlib.util.find_spec("sedsl.language.printer") is None:
        pytest.skip("no spec printer (sedsl fmt) yet: formatting answers with no edits")
    text = RESNET50.read_text().replace("  conv2 = ", "  conv2   =   ")
    uri = await opened(client, tmp_path / "fmt.se", text)
    edits = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        doc_id(uri), lsp.FormattingOptions(2, True))) or []
    assert len(edits) == 1 and "conv2   =" not in edits[0].new_text
    sedsl.loads(edits[0].new_text, path=str(tmp_path / "fmt.se"))  # still the same spec


@module_loop
async def test_formatting_without_a_printer_edits_nothing(client: LanguageClient,
                                                          tmp_path: Path) -> None:
    if importlib.util.find_spec("sedsl.language.printer") is not None:
        pytest.skip("the spec printer exists")
    uri = await opened(client, tmp_path / "nofmt.se", RESNET50.read_text())
    edits = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        doc_id(uri), lsp.FormattingOptions(2, True)))
    assert not edits


# --- settings -----------------------------------------------------------------------------------


@module_loop
async def test_settings_override_parameters(client: LanguageClient, tmp_path: Path) -> None:
    """`sedsl.set` is `--set`: the SE overhead follows `ratio = 8`, a wrong name is reported."""
    uri = await opened(client, tmp_path / "settings.se", RESNET50.read_text())
    before = len(client.published)  # type: ignore[attr-defined]
    try:
        refreshes = len(client.refreshes)  # type: ignore[attr-defined]
        client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(
            {"sedsl": {"set": {"ratio": 8}}}))
        await _republished(client, uri, before)
        await asyncio.sleep(0.2)  # the client is asked to fetch its lenses again
        assert lsp.WORKSPACE_CODE_LENS_REFRESH in client.refreshes[refreshes:]  # type: ignore
        lenses = await client.text_document_code_lens_async(lsp.CodeLensParams(doc_id(uri)))
        extra = sedsl.load(RESNET50, ratio=8).cost().overhead.params
        from sedsl.targets.report import human

        assert any(f"SE: +{human(extra)} params" in (lens.command.title if lens.command else "")
                   for lens in lenses or [])
        at = position_of(RESNET50.read_text(), "ratio = 16")
        assert "`sedsl.set` makes it `8`" in (await hover(client, uri, at.line, at.character)
                                               or "")
        before = len(client.published)  # type: ignore[attr-defined]
        client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(
            {"sedsl": {"set": {"ratoi": "8"}}}))
        (found,) = await _republished(client, uri, before)
        assert found.message.startswith("settings (sedsl.set): unknown parameter `ratoi`")
        assert "did you mean `ratio`?" in found.message
    finally:
        client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(
            {"sedsl": {}}))


async def _republished(client: LanguageClient, uri: str, after: int) -> list[lsp.Diagnostic]:
    for _ in range(3000):
        fresh = [p for p in client.published[after:] if p.uri == uri]  # type: ignore[attr-defined]
        if fresh:
            return list(fresh[-1].diagnostics)
        await asyncio.sleep(0.01)
    raise TimeoutError(uri)


# --- the words it explains ----------------------------------------------------------------------


def test_every_setting_and_op_has_its_words() -> None:
    assert set(words.SETTINGS) == set(SETTINGS)
    assert [n for n, op in OPS.items() if op.user and not op.doc] == []


# --- docs/editors.md shows what the server says -------------------------------------------------

EDITORS_MD = ROOT / "docs" / "editors.md"
BEGIN, END = "<!-- captured from the server by tests/test_lsp.py: begin -->", \
    "<!-- captured: end -->"


@module_loop
async def test_docs_show_what_the_server_says(client: LanguageClient) -> None:
    """docs/editors.md quotes the hover, inlay hints and code lenses for se_resnet50.se as the
    server gives them; SEDSL_UPDATE_DOCS=1 rewrites the quote."""
    uri = await opened(client, RESNET50)
    text = RESNET50.read_text()
    at = position_of(text, "conv4", 1)
    shown = await hover(client, uri, at.line, at.character) or ""
    at = position_of(text, "at residual.end", 1)
    rule = await hover(client, uri, at.line, at.character) or ""
    hints = await client.text_document_inlay_hint_async(lsp.InlayHintParams(doc_id(uri), WHOLE))
    lenses = await client.text_document_code_lens_async(lsp.CodeLensParams(doc_id(uri)))
    lines = text.split("\n")
    hinted = list(lines)
    for h in sorted(hints or [], key=lambda h: -h.position.character):
        line = hinted[h.position.line]
        hinted[h.position.line] = f"{line[:h.position.character]}   => {h.label}" \
            f"{line[h.position.character:]}"
    lensed: list[str] = []
    by_line: dict[int, list[str]] = {}
    for lens in lenses or []:
        by_line.setdefault(lens.range.start.line, []).append(lens.command.title
                                                             if lens.command else "")
    for i, line in enumerate(hinted):
        if i in by_line:
            indent = re.match(r"\s*", line).group()  # type: ignore[union-attr]
            lensed.append(indent + "  |  ".join(f"[{t}]" for t in by_line[i]))
        lensed.append(line)
    captured = "\n".join([
        BEGIN, "", "Hover on `conv4 = bottleneck(256, stride = 2, stride_3x3 = timm) * 6`:", "",
        "```markdown", shown, "```", "", "Hover on the rule `at residual.end in conv2..conv5`:",
        "", "```markdown", rule, "```", "",
        "Inlay hints (after `=>`) and code lenses (`[...]`, above their line):", "",
        "```", "\n".join(lensed[lensed.index(next(x for x in lensed if "[" in x)):]).rstrip(),
        "```", "", END])
    doc = EDITORS_MD.read_text()
    start, end = doc.find(BEGIN), doc.find(END)
    if os.environ.get("SEDSL_UPDATE_DOCS"):
        EDITORS_MD.write_text(doc[:start] + captured + doc[end + len(END):])
        return
    assert start >= 0 and end > start, f"docs/editors.md lacks the markers {BEGIN} ... {END}"
    assert doc[start:end + len(END)] == captured, \
        "docs/editors.md is out of date; rerun with SEDSL_UPDATE_DOCS=1:\n" + captured
