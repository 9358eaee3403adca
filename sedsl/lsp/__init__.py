"""The language server (`sedsl lsp`, docs/editors.md): the compiler's own stages behind the
Language Server Protocol, on pygls (`pip install 'sedsl[lsp]'`).

    text.py       offsets, LSP positions and sedsl spans
    compiler.py   a document compiled off the event loop: cancellable, libraries cached
    facts.py      what the compiled graph says about a line: shapes, parameters, FLOPs
    hover.py, inline.py (inlay hints, code lenses), navigation.py (definition,
    references, rename, symbols), completion.py, diagnostics.py, formatting.py
    server.py     the protocol: documents, debouncing, settings, handlers that never crash
"""
