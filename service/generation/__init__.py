"""Runs: creating and cancelling generations, and the worker that executes them.

The generator itself knows nothing of SQL or HTTP: it states events through ``Emitter``.
"""
