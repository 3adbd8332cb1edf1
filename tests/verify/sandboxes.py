"""What the tests of service/verify share: small limits, and finding a sandbox's processes from
the host (by a token the command carries in its argv, so it works as root and not)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from uuid import uuid4

from service.verify.limits import Limits

# Small enough that a test hitting one is quick and light on a shared 2-core machine.
SMALL = Limits(cpu_s=5, wall_s=30, memory_mb=256, processes=32, file_mb=1, disk_mb=16)


def token() -> str:
    return f"genstream-test-{uuid4().hex}"


def processes_with(mark: str) -> list[int]:
    """The host's processes whose command line holds ``mark``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if mark.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue  # it ended meanwhile
    return found


def project(tests: str, *, app: str = "app = object()\n") -> dict[str, str]:
    """A minimal project: an app module and one test module (dedented)."""
    return {
        "app/__init__.py": "",
        "app/main.py": app,
        "tests/__init__.py": "",
        "tests/test_generated.py": textwrap.dedent(tests),
    }
