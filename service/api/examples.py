"""An example for every operation of the OpenAPI document, by operation id.

Written out rather than generated so that they read like a real run (one generation, the same
id throughout); ``tests/api/test_openapi.py`` validates each against its schema, so they cannot
drift from what the service sends.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

ID: Final = "0193a0c4-5f2e-7d61-9c1a-3b8e2f4d6a10"
TOKEN: Final = "eyJnIjoiMDE5M2EwYzQiLCJlIjoxNzY0NDc2MDAwfQ.3q2-7w"  # noqa: S105 (an example)
AT: Final = "2026-11-30T06:40:12.123456Z"
SHA256: Final = "9f2b5c1e8d7a4b3c6e0f1a2d3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e"

STATE: Final = {
    "id": ID,
    "status": "running",
    "stage": "models",
    "message": "Saved app/models/user.py",
    "progress": 0.42,
    "last_seq": 7,
    "provider": "offline",
    "model": None,
    "verify": "tests",
    "created_at": "2026-11-30T06:40:10.001000Z",
    "started_at": "2026-11-30T06:40:10.250000Z",
    "finished_at": None,
    "error": None,
}


def _event(seq: int, type_: str, status: str, stage: str, progress: float, message: str,
           data: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    return {
        "generation_id": ID,
        "seq": seq,
        "type": type_,
        "status": status,
        "stage": stage,
        "progress": progress,
        "message": message,
        "timestamp": AT,
        "data": data,
        "chain": hashlib.sha256(f"{seq}".encode()).hexdigest(),  # illustrative, not a real chain
    }


EVENTS: Final = [
    _event(1, "generation.queued", "queued", "queued", 0.0, "Queued, waiting for a worker", {}),
    _event(
        2, "generation.started", "running", "starting", 0.02, "Started with the offline provider",
        {"worker": "host-1:4242", "attempt": 1, "provider": "offline", "model": None},
    ),
    _event(
        3, "phase.started", "running", "plan", 0.03, "Phase 1 of 4: Plan",
        {"phase": "plan", "number": 1, "of": 4, "attempt": 1, "provider": "offline",
         "model": None},
    ),
    _event(
        4, "llm.delta", "running", "plan", 0.05, "Writing plan",
        {"phase": "plan", "attempt": 1, "text": "=== FILE: PLAN.md ===\n# shop\n"},
    ),
    _event(
        5, "file.saved", "running", "plan", 0.1, "Saved PLAN.md",
        {"path": "PLAN.md", "size": 812, "sha256": SHA256, "language": "markdown"},
    ),
    _event(
        6, "phase.completed", "running", "plan", 0.12, "Plan done: 1 files",
        {"phase": "plan", "files": 1, "attempts": 1, "prompt_tokens": 412,
         "output_tokens": 230, "duration_ms": 1840, "provider": "offline", "model": None},
    ),
]  # fmt: skip


def _day(
    day: str, *, succeeded: int, failed: int, cancelled: int, p50: float | None, p95: float | None
) -> dict[str, Any]:
    """One entry of ``getStats``'s ``days`` (none in progress)."""
    return {
        "day": day,
        "total": succeeded + failed + cancelled,
        "succeeded": succeeded,
        "failed": failed,
        "cancelled": cancelled,
        "in_progress": 0,
        "p50_duration_s": p50,
        "p95_duration_s": p95,
    }


SPEC: Final = {
    "project": "shop",
    "description": "A small shop",
    "entities": [
        {"name": "User", "fields": {"email": "str", "name": "str"}},
        {"name": "Order", "fields": {"user": "User", "total": "float", "paid": "bool"}},
    ],
}

REQUEST: Final[dict[str, Any]] = {
    "createGeneration": {"spec": SPEC, "provider": "offline", "verify": "tests"}
}
"""The request body of each operation that has one."""

SUCCESS: Final[dict[str, Any]] = {
    "createGeneration": {
        "id": ID,
        "status": "queued",
        "stream_url": f"/api/generations/{ID}/stream",
        "stream_token": TOKEN,
        "events_url": f"/api/generations/{ID}/events",
    },
    "listGenerations": {"items": [STATE], "next_cursor": None},
    "getGeneration": STATE,
    "issueStreamToken": {
        "stream_url": f"/api/generations/{ID}/stream",
        "stream_token": TOKEN,
        "expires_in": 3600,
    },
    "cancelGeneration": {"id": ID, "status": "running"},
    "retryGeneration": {"id": ID, "status": "queued"},
    "listEvents": {"events": EVENTS[:3], "next_after": 3, "has_more": True},
    "streamEvents": "retry: 2000\n\n"
    + "".join(
        f"id: {event['seq']}\nevent: {event['type']}\ndata: {{...the event's JSON...}}\n\n"
        for event in EVENTS[:2]
    )
    + ": keepalive\n\n",
    "streamAll": "retry: 2000\n\n"
    + "".join(
        f"id: {cursor}\nevent: {event['type']}\ndata: {{...the event's JSON...}}\n\n"
        for cursor, event in zip(
            (
                "AQEAAAAAAAAC5QAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "AQAAAAAAAAAC5gGTWgxF8gAAAAAAAAAAAAAAAAAAAAI",
            ),
            EVENTS[:2],
            strict=True,
        )
    )
    + ": keepalive\n\n",
    "issueOwnerStreamToken": {
        "stream_url": "/api/stream",
        "stream_token": TOKEN,
        "expires_in": 3600,
    },
    "listFiles": {
        "files": [
            {"path": "PLAN.md", "size": 812, "sha256": SHA256, "language": "markdown", "seq": 5}
        ]
    },
    "getFile": "# shop\n\nEntities: User, Order.\n",
    "feed": {"events": EVENTS[:2], "next_cursor": "MTIzNDU6MDE5M2EwYzQtNWYyZTo2"},
    "getStats": {
        "generations": {
            "total": 12,
            "succeeded": 10,
            "failed": 1,
            "cancelled": 1,
            "in_progress": 0,
        },
        "duration_s": {"p50": 6.6, "p95": 9.8},
        "to_first_event_s": {"p50": 0.01, "p95": 0.03},
        "to_first_file_s": {"p50": 1.9, "p95": 2.7},
        "tokens": {"prompt": 48210, "output": 30112},
        "recoveries": {"resumed": 1, "phase_retry": 2, "repair": 1, "retried": 1, "failed": 1},
        # ?days=3: the last three UTC days, oldest first, a day without runs as zeros
        "days": [
            _day("2026-11-28", succeeded=0, failed=0, cancelled=0, p50=None, p95=None),
            _day("2026-11-29", succeeded=4, failed=1, cancelled=0, p50=6.1, p95=9.8),
            _day("2026-11-30", succeeded=6, failed=0, cancelled=1, p50=6.9, p95=9.1),
        ],
        "tokens_by_model": [
            {
                "provider": "gemini",
                "model": "gemini-2.5-flash",
                "phases": 31,
                "prompt": 40110,
                "output": 25402,
            },
            {"provider": "offline", "model": None, "phases": 12, "prompt": 8100, "output": 4710},
        ],
    },
    "healthz": {"status": "ok"},
    "readyz": {"status": "ready", "listener": True, "schema": "at head"},
    "metrics": "# HELP genstream_streams_open Streams open in this process.\n"
    "# TYPE genstream_streams_open gauge\ngenstream_streams_open 3.0\n",
}
"""The success answer of each operation (the archive, a zip, has none)."""
