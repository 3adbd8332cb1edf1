"""genstream: event-sourced LLM code generation on PostgreSQL, streamed over SSE.

A generation is a run that emits progress events. Every event is appended to one PostgreSQL
table with a per-generation sequence number that grows by exactly one, in the same transaction
that signals NOTIFY. Streams replay the table after the last sequence a client saw and then
follow live, so a client never misses, repeats or reorders an event, whichever process ran
the generation and however often the client reconnected.

The packages, from the outside in; each may import only the ones ``LAYERS`` lists for it
(``tests/test_layout.py`` checks every import, including those inside functions):

    cli, server, app, runtime   composition: the command line, uvicorn, the ASGI app, and the
                                one place a process's parts are built and wired
    connections                 what one connection may cost ``serve`` (uvicorn's protocol,
                                with a read deadline and a cap); server's, importing leaves only
    api                         HTTP only: parse, authorize, shape responses (Litestar)
    operations                  what an operator does outside HTTP: export/import, rebuild,
                                replay (``cli`` is the thin parser on top)
    streams                     the read side: the hub, following one generation, paced replay
    access                      who may do what: API keys, stream tokens
    generation                  the run: worker, phases, providers (no HTTP, no SQL)
    verify                      untrusted code run safely: the bubblewrap sandbox with its
                                limits, and the checks (compile, import, tests); leaves only
    store                       the only SQL: the event log, runs, keys, the LISTEN connection
    events errors files         leaves: the vocabulary, the error tree, what a stored file
    settings spec observe       may be (its path, size, language), configuration, the
    snapshot ids                request's spec, the metrics, logs and traces, a run's state
                                reduced from its events, time-ordered generation ids;
                                anyone may import them

Only ``api`` and the composition modules import Litestar; only ``store`` speaks SQL; only
``generation/providers/gemini.py`` imports google-genai, only ``generation/providers/openai.py``
the openai SDK.
"""

from __future__ import annotations

from typing import Final

_LEAVES: Final = frozenset(
    {"events", "errors", "files", "ids", "observe", "settings", "snapshot", "spec"}
)
_BELOW_API: Final = frozenset({"access", "streams", "generation", "verify", "store"}) | _LEAVES
_EVERYTHING: Final = (
    frozenset(
        {"app", "runtime", "server", "connections", "cli", "api", "operations", "web", "litestar"}
    )
    | _BELOW_API
)

LAYERS: Final[dict[str, frozenset[str]]] = {
    "__main__": _EVERYTHING,
    "cli": _EVERYTHING,
    "server": _EVERYTHING,
    "app": _EVERYTHING,
    "connections": _LEAVES,
    "runtime": _BELOW_API,
    "api": _BELOW_API | {"litestar"},
    "operations": frozenset({"streams", "store"}) | _LEAVES,
    "streams": frozenset({"store"}) | _LEAVES,
    "access": frozenset({"store"}) | _LEAVES,
    "generation": frozenset({"store", "verify"}) | _LEAVES,
    "verify": _LEAVES,
    "store": _LEAVES,
    "events": _LEAVES,
    "errors": _LEAVES,
    "files": _LEAVES,
    "ids": _LEAVES,
    "settings": _LEAVES,
    "spec": _LEAVES,
    "snapshot": _LEAVES,
    "observe": _LEAVES,
    "web": frozenset(),  # the page's HTML, CSS and script: no Python
}
"""Layer -> the layers (and "litestar") its modules may import; its own is always allowed."""
