"""genstream: event-sourced LLM code generation on PostgreSQL, streamed over SSE.

A generation is a run that emits progress events. Every event is appended to one PostgreSQL
table with a per-generation sequence number that grows by exactly one, in the same transaction
that signals NOTIFY. Streams replay the table after the last sequence a client saw and then
follow live, so a client never misses, repeats or reorders an event, whichever process ran
the generation and however often the client reconnected.

Dependencies point one way: ``api`` (HTTP) -> ``generation`` (runs) -> ``store`` (all SQL).
``api`` may read through ``store`` directly. ``events``, ``errors``, ``settings`` and ``spec``
are leaves anyone may import. ``generation`` never imports Litestar; ``store`` imports neither
Litestar nor ``generation``; only ``store`` speaks SQL.
"""
