"""Verification of generated code: a sandbox that runs untrusted Python with limits, and the
checks a project must pass in it (compile, import, tests).

- ``sandbox.py``: ``run_sandboxed(files, argv, limits)`` under bubblewrap, without blocking the
  event loop.
- ``limits.py``: ``Limits.from_settings`` (the GENSTREAM_VERIFY_* settings), as rlimits; which
  limit stopped a command, and the words for it.
- ``inside.py``: the sandbox's first process (standard library only): writes the files,
  lowers the limits, runs the command, reports how it ended.
- ``checks.py``: ``verify(files, limits)`` yields one ``CheckResult`` per step as it finishes.

A leaf beside ``settings``: it imports only leaves, and ``generation`` imports it.
"""
