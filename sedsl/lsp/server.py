"""The language server: documents, when they are compiled, and the protocol's handlers.

Every edit schedules a compile after a quiet time (`sedsl.debounceMs`); an edit that comes
sooner cancels the one pending or running (the worker checks its cancel flag at every node),
and a compile whose version is no longer the document's is dropped, never published. Compiles
run one at a time in a worker thread, so the event loop stays free to answer; requests wait for
the current version's compile (the syntax-only ones for its parse), up to a time limit.

No handler can take the server down: each runs under a guard that logs what went wrong (the
server's stderr, and `window/logMessage`) and answers with nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from sedsl import files
from sedsl.lsp import completion, diagnostics, formatting, hover, inline, navigation
from sedsl.lsp.compiler import Cancelled, LibraryCache, Settings, Snapshot
from sedsl.lsp.text import uri_to_path
from sedsl.lsp.view import View, build
from sedsl.targets.cost import CONVENTIONS
from sedsl.version import __version__

log = logging.getLogger("sedsl.lsp")
T = TypeVar("T")
REQUEST_WAIT_S = 5.0  # how long a request waits for the current version's compile


# --- the worker ---------------------------------------------------------------------------------


class Worker:
    """One daemon thread running compiles in order (a daemon: a compile in progress never holds
    up the server's exit)."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.AbstractEventLoop,
                                           asyncio.Future[Any]]] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="sedsl-compile", daemon=True).start()

    def run(self, job: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self.jobs.put((job, loop, done))
        return done

    def _loop(self) -> None:
        while True:
            job, loop, done = self.jobs.get()
            try:
                result, error = job(), None
            except BaseException as e:  # the job's own; the thread goes on
                result, error = None, e
            try:
                loop.call_soon_threadsafe(_settle, done, result, error)
            except RuntimeError:  # the loop has closed: the server is exiting
                log.info("a compile finished after the server stopped")


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None = None) -> None:
    if not future.done():
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


# --- documents ----------------------------------------------------------------------------------


@dataclass(eq=False)
class Document:
    uri: str
    path: str
    version: int
    text: str
    syntax: asyncio.Future[View | None]  # the current version, parsed (and its `use`s read)
    full: asyncio.Future[View | None]  # the current version, compiled
    task: asyncio.Task[None] | None = None
    cancel: threading.Event | None = None
    latest: View | None = None  # the last compile that finished
    good: View | None = None  # the last version that parsed
    compiled: View | None = None  # the last version that compiled
    contributes: set[str] = field(default_factory=set)  # other URIs its diagnostics went to
    refresh: bool = False  # the client should ask again for hints and lenses once compiled


class SedslServer(LanguageServer):
    def __init__(self, settings: Settings | None = None):
        super().__init__("sedsl", __version__,
                         text_document_sync_kind=lsp.TextDocumentSyncKind.Full)
        self.base_settings = self.settings = settings or Settings()
        self.docs: dict[str, Document] = {}
        self.worker = Worker()
        self.cache = LibraryCache()
        self.published: dict[str, dict[str, list[lsp.Diagnostic]]] = {}
        _register(self)

    # -- scheduling --

    def open(self, uri: str, version: int, text: str) -> None:
        loop = asyncio.get_running_loop()
        old = self.docs.pop(uri, None)
        if old is not None:
            self._stop(old)
        doc = Document(uri, uri_to_path(uri), version, text, loop.create_future(),
                       loop.create_future())
        self.docs[uri] = doc
        self.schedule(doc, 0.0)

    def change(self, uri: str, version: int, text: str) -> None:
        doc = self.docs.get(uri)
        if doc is None:
            return self.open(uri, version, text)
        doc.version, doc.text = version, text
        self.schedule(doc, self.settings.debounce_ms / 1000)
        self._dependents(doc)

    def close(self, uri: str) -> None:
        doc = self.docs.pop(uri, None)
        if doc is None:
            return
        self._stop(doc)
        for other in doc.contributes:
            self.published.get(other, {}).pop(uri, None)
            if other in self.docs:
                self._send(other)
        self.published.get(uri, {}).pop(uri, None)
        self._send(uri)

    def schedule(self, doc: Document, delay: float) -> None:
        """Compile the document's current version after `delay`, superseding any other."""
        self._stop(doc)
        loop = asyncio.get_running_loop()
        doc.syntax, doc.full = loop.create_future(), loop.create_future()
        doc.task = loop.create_task(self._compile(doc, doc.version, delay))

    def _stop(self, doc: Document) -> None:
        if doc.cancel is not None:
            doc.cancel.set()
        if doc.task is not None:
            doc.task.cancel()
        _settle(doc.syntax, None)
        _settle(doc.full, None)

    def _dependents(self, changed: Document) -> None:
        """Open specs that `use` the changed document compile again."""
        target = _resolved(changed.path)
        for doc in self.docs.values():
            if doc is not changed and doc.latest is not None and any(
                    _resolved(f) == target for f in doc.latest.analysis.sources):
                doc.refresh = True
                self.schedule(doc, self.settings.debounce_ms / 1000)

    async def _compile(self, doc: Document, version: int, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        cancel = doc.cancel = threading.Event()
        loop = asyncio.get_running_loop()
        syntax = doc.syntax
        snap = Snapshot(doc.uri, doc.path, version, doc.text, self.settings, self._overlays())
        encoding = str(self.workspace.position_encoding or "utf-16")

        def parsed(view: View) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: exiting
                loop.call_soon_threadsafe(_settle, syntax, view)

        try:
            view = await self.worker.run(
                lambda: build(snap, self.cache, cancel, encoding, parsed))
        except Cancelled:
            return
        if self.docs.get(doc.uri) is not doc or doc.version != version:
            return  # superseded: never published
        doc.latest = view
        if view.module is not None:
            doc.good = view
        if view.facts is not None:
            doc.compiled = view
        _settle(doc.full, view)
        self.publish(doc, view)
        if doc.refresh:
            doc.refresh = False
            self.refresh()

    def _overlays(self) -> dict[str, str]:
        return {_resolved(d.path): d.text for d in self.docs.values()}

    # -- what requests read --

    async def view(self, uri: str, full: bool = True) -> View | None:
        """The current version's compile (`full`) or parse, waiting for it up to a limit."""
        doc = self.docs.get(uri)
        if doc is None:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REQUEST_WAIT_S
        while True:
            future = doc.full if full else doc.syntax
            try:
                view = await asyncio.wait_for(asyncio.shield(future), deadline - loop.time())
            except TimeoutError:
                doc.refresh = True  # answered with nothing: ask again once compiled
                return None
            if view is not None and view.version == doc.version:
                return view
            if future is (doc.full if full else doc.syntax) or self.docs.get(uri) is not doc:
                return None

    async def best(self, uri: str) -> View | None:
        """The current version parsed, or compiled if that is done already."""
        view = await self.view(uri, full=False)
        doc = self.docs.get(uri)
        if view is None or doc is None or not doc.full.done():
            return view
        compiled = doc.full.result()
        return compiled if compiled is not None and compiled.version == view.version else view

    # -- diagnostics --

    def publish(self, doc: Document, view: View) -> None:
        by_uri = diagnostics.build(view.analysis, view.text)
        for uri in doc.contributes | set(by_uri):
            bucket = self.published.setdefault(uri, {})
            if uri in by_uri:
                bucket[doc.uri] = by_uri[uri]
            else:
                bucket.pop(doc.uri, None)
            if uri == doc.uri or uri in self.docs:
                self._send(uri)
        doc.contributes = set(by_uri) - {doc.uri}

    def _send(self, uri: str) -> None:
        found = [d for source in self.published.get(uri, {}).values() for d in source]
        doc = self.docs.get(uri)
        self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(
            uri, found, doc.version if doc is not None else None))

    # -- settings --

    def configure(self, config: Any) -> None:
        """Apply `sedsl.*` settings (over the command line's and the initialization options')
        and compile everything again."""
        settings = parse_settings(config, self.base_settings, self.workspace.root_path)
        if settings != self.settings:
            self.settings = settings
            for doc in self.docs.values():
                doc.refresh = True
                self.schedule(doc, 0.0)

    def refresh(self) -> None:
        """Ask the client to ask again for inlay hints and code lenses: after a compile that no
        edit of the document caused (settings, a `use`d file), or that a request gave up on."""
        caps = self.client_capabilities.workspace
        if caps is None:
            return
        asks = []
        if caps.inlay_hint is not None and caps.inlay_hint.refresh_support:
            asks.append(self.workspace_inlay_hint_refresh)
        if caps.code_lens is not None and caps.code_lens.refresh_support:
            asks.append(self.workspace_code_lens_refresh)
        for ask in asks:
            ask(None).add_done_callback(_quiet)

    def report_server_error(self, error: Exception, source: Any) -> None:
        log.error("%s: %s", getattr(source, "__name__", source), error)


def _quiet(future: Any) -> None:
    """A refresh the client did not answer well: nothing to do about it."""
    if not future.cancelled() and future.exception() is not None:
        log.info("the client refused a refresh: %s", future.exception())


def _resolved(path: str) -> str:
    try:
        return str(files.resolve(Path(path)))
    except files.Unusable:
        return path


def parse_settings(config: Any, base: Settings, root: str | None = None) -> Settings:
    """`{"set": {"ratio": "8"}, "searchPath": [...], "convention": "paper",
    "debounceMs": 100}` (or the same under a "sedsl" key) over the command line's settings;
    what is not understood is logged and left out."""
    if not isinstance(config, dict):
        return base
    c = config.get("sedsl", config)
    if not isinstance(c, dict):
        return base
    overrides = dict(base.overrides)
    given = c.get("set") or {}
    if isinstance(given, list):
        given = dict(str(x).partition("=")[::2] for x in given)
    if isinstance(given, dict):
        overrides.update({str(k): _setting_text(v) for k, v in given.items()})
    search = c.get("searchPath") or []
    paths = tuple(str(Path(root or ".") / str(p)) for p in search) \
        if isinstance(search, list) else ()
    convention = c.get("convention", base.convention)
    if convention not in CONVENTIONS:
        log.warning("sedsl.convention: %r is not one of %s", convention, ", ".join(CONVENTIONS))
        convention = base.convention
    debounce = c.get("debounceMs", base.debounce_ms)
    debounce = debounce if isinstance(debounce, int) and 0 <= debounce <= 10_000 \
        else base.debounce_ms
    return Settings(tuple(overrides.items()), (*base.search_path, *paths), convention, debounce)


def _setting_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- handlers -----------------------------------------------------------------------------------

Handler = Callable[[Any], Awaitable[Any]]


def _guard(server: SedslServer, name: str, fallback: Any = None) -> Callable[[Handler], Handler]:
    """A handler that cannot crash the server: failures are logged and answered with
    `fallback`; cancellation and deliberate protocol errors pass through."""
    def wrap(fn: Handler) -> Handler:
        async def guarded(params: Any) -> Any:
            try:
                return await fn(params)
            except (asyncio.CancelledError, JsonRpcException):
                raise
            except Exception as e:
                log.exception("%s failed", name)
                server.window_log_message(lsp.LogMessageParams(
                    lsp.MessageType.Error, f"sedsl: {name} failed: {type(e).__name__}: {e} "
                    "(a bug in sedsl; the server's stderr has the traceback)"))
                return fallback
        return guarded
    return wrap


def _register(ls: SedslServer) -> None:
    features: list[tuple[str, Any, Handler, Any]] = [
        (lsp.INITIALIZE, None, _on_initialize(ls), None),
        (lsp.INITIALIZED, None, _on_initialized(ls), None),
        (lsp.TEXT_DOCUMENT_DID_OPEN, None, _did_open(ls), None),
        (lsp.TEXT_DOCUMENT_DID_CHANGE, None, _did_change(ls), None),
        (lsp.TEXT_DOCUMENT_DID_SAVE, None, _did_save(ls), None),
        (lsp.TEXT_DOCUMENT_DID_CLOSE, None, _did_close(ls), None),
        (lsp.WORKSPACE_DID_CHANGE_CONFIGURATION, None, _did_change_configuration(ls), None),
        (lsp.SHUTDOWN, None, _on_shutdown(ls), None),
        (lsp.TEXT_DOCUMENT_HOVER, None, _full(ls, hover.hover), None),
        (lsp.TEXT_DOCUMENT_INLAY_HINT, lsp.InlayHintOptions(resolve_provider=False),
         _inlay(ls), []),
        (lsp.TEXT_DOCUMENT_CODE_LENS, lsp.CodeLensOptions(resolve_provider=False),
         _lenses(ls), []),
        (lsp.TEXT_DOCUMENT_DEFINITION, None, _syntax(ls, navigation.definition), []),
        (lsp.TEXT_DOCUMENT_REFERENCES, None, _references(ls), []),
        (lsp.TEXT_DOCUMENT_PREPARE_RENAME, None, _syntax(ls, navigation.prepare_rename), None),
        (lsp.TEXT_DOCUMENT_RENAME, lsp.RenameOptions(prepare_provider=True), _rename(ls), None),
        (lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL, None, _symbols(ls), []),
        (lsp.TEXT_DOCUMENT_COMPLETION,
         lsp.CompletionOptions(trigger_characters=[".", "(", '"', "=", " "]), _complete(ls),
         []),
        (lsp.TEXT_DOCUMENT_FORMATTING, None, _format(ls), []),
    ]
    for method, options, handler, fallback in features:
        ls.feature(method, options)(_guard(ls, method, fallback)(handler))


def _on_initialize(ls: SedslServer) -> Handler:
    async def handler(params: lsp.InitializeParams) -> None:
        ls.configure(params.initialization_options)
        ls.base_settings = ls.settings  # what the editor's configuration then adds to
    return handler


def _on_initialized(ls: SedslServer) -> Handler:
    async def handler(params: lsp.InitializedParams) -> None:
        await _pull_configuration(ls)
    return handler


async def _pull_configuration(ls: SedslServer) -> None:
    caps = ls.client_capabilities.workspace
    if caps is None or not caps.configuration:
        return
    answer = await ls.workspace_configuration_async(
        lsp.ConfigurationParams([lsp.ConfigurationItem(section="sedsl")]))
    if answer:
        ls.configure({"sedsl": answer[0]})


def _did_open(ls: SedslServer) -> Handler:
    async def handler(params: lsp.DidOpenTextDocumentParams) -> None:
        d = params.text_document
        ls.open(d.uri, d.version, d.text)
    return handler


def _did_change(ls: SedslServer) -> Handler:
    async def handler(params: lsp.DidChangeTextDocumentParams) -> None:
        d = params.text_document
        ls.change(d.uri, d.version, ls.workspace.get_text_document(d.uri).source)
    return handler


def _did_save(ls: SedslServer) -> Handler:
    async def handler(params: lsp.DidSaveTextDocumentParams) -> None:
        doc = ls.docs.get(params.text_document.uri)
        if doc is not None:
            ls._dependents(doc)  # their cached copy of the file is now stale
    return handler


def _did_close(ls: SedslServer) -> Handler:
    async def handler(params: lsp.DidCloseTextDocumentParams) -> None:
        ls.close(params.text_document.uri)
    return handler


def _did_change_configuration(ls: SedslServer) -> Handler:
    async def handler(params: lsp.DidChangeConfigurationParams) -> None:
        if isinstance(params.settings, dict) and "sedsl" in params.settings:
            ls.configure(params.settings)
        else:
            await _pull_configuration(ls)
    return handler


def _on_shutdown(ls: SedslServer) -> Handler:
    async def handler(params: None) -> None:
        for doc in ls.docs.values():
            ls._stop(doc)
    return handler


def _full(ls: SedslServer, feature: Callable[[View, lsp.Position], Any]) -> Handler:
    async def handler(params: lsp.TextDocumentPositionParams) -> Any:
        view = await ls.view(params.text_document.uri)
        return feature(view, params.position) if view is not None else None
    return handler


def _syntax(ls: SedslServer, feature: Callable[[View, lsp.Position], Any]) -> Handler:
    async def handler(params: lsp.TextDocumentPositionParams) -> Any:
        view = await ls.view(params.text_document.uri, full=False)
        return feature(view, params.position) if view is not None else None
    return handler


def _inlay(ls: SedslServer) -> Handler:
    async def handler(params: lsp.InlayHintParams) -> list[lsp.InlayHint]:
        view = await ls.view(params.text_document.uri)
        return inline.inlay_hints(view, params.range) if view is not None else []
    return handler


def _lenses(ls: SedslServer) -> Handler:
    async def handler(params: lsp.CodeLensParams) -> list[lsp.CodeLens]:
        view = await ls.view(params.text_document.uri)
        return inline.code_lenses(view) if view is not None else []
    return handler


def _references(ls: SedslServer) -> Handler:
    async def handler(params: lsp.ReferenceParams) -> list[lsp.Location]:
        view = await ls.view(params.text_document.uri, full=False)
        if view is None:
            return []
        return navigation.references_at(view, params.position,
                                        params.context.include_declaration)
    return handler


def _rename(ls: SedslServer) -> Handler:
    async def handler(params: lsp.RenameParams) -> lsp.WorkspaceEdit | None:
        view = await ls.view(params.text_document.uri, full=False)
        if view is None:
            return None
        try:
            return navigation.rename(view, params.position, params.new_name)
        except navigation.RenameRefused as e:
            raise JsonRpcInvalidParams(str(e)) from None
    return handler


def _symbols(ls: SedslServer) -> Handler:
    async def handler(params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol]:
        view = await ls.best(params.text_document.uri)
        return navigation.symbols(view) if view is not None else []
    return handler


def _complete(ls: SedslServer) -> Handler:
    async def handler(params: lsp.CompletionParams) -> lsp.CompletionList:
        uri = params.text_document.uri
        view = await ls.view(uri, full=False)
        doc = ls.docs.get(uri)
        if view is None or doc is None:
            return lsp.CompletionList(False, [])
        scope = doc.compiled or doc.good or view
        return lsp.CompletionList(False, completion.complete(view, scope, params.position))
    return handler


def _format(ls: SedslServer) -> Handler:
    async def handler(params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit]:
        view = await ls.view(params.text_document.uri, full=False)
        if view is None:
            return []
        return await asyncio.get_running_loop().run_in_executor(
            None, formatting.format_document, view.text, view.path)
    return handler


# --- running ------------------------------------------------------------------------------------


def serve(settings: Settings | None = None) -> None:
    """Serve over stdin/stdout until the client says exit."""
    logging.basicConfig(level=logging.INFO, format="sedsl lsp %(levelname)s: %(message)s")
    logging.getLogger("pygls").setLevel(logging.WARNING)
    SedslServer(settings).start_io()
