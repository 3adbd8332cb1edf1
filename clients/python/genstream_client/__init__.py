"""genstream's Python client: create generations, read them, and follow their events live.

``AsyncGenstream`` for asyncio programs, ``Genstream`` for scripts; the same methods. The
events' vocabulary (``EventType``, each type's ``data``) is generated from the server's.
Depends on httpx only (the SSE parser is ``genstream_client.sse``).
"""

from __future__ import annotations

from genstream_client.client import AsyncGenstream
from genstream_client.errors import (
    ChainBroken,
    Conflict,
    Forbidden,
    GenstreamError,
    InvalidRequest,
    NotFound,
    ProtocolError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from genstream_client.events import EVENT_DATA, TERMINAL_TYPES, EventType, Status
from genstream_client.models import Created, Event, EventPage, FileEntry, Generation, GenerationPage
from genstream_client.sync import Genstream

__all__ = [
    "EVENT_DATA",
    "TERMINAL_TYPES",
    "AsyncGenstream",
    "ChainBroken",
    "Conflict",
    "Created",
    "Event",
    "EventPage",
    "EventType",
    "FileEntry",
    "Forbidden",
    "Generation",
    "GenerationPage",
    "Genstream",
    "GenstreamError",
    "InvalidRequest",
    "NotFound",
    "ProtocolError",
    "Status",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
]
