"""``AsyncGenstream``: every endpoint a program drives, over one ``httpx.AsyncClient``."""

from __future__ import annotations

import builtins
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from genstream_client import following
from genstream_client.errors import error_of
from genstream_client.models import (
    Created,
    Event,
    EventPage,
    FileEntry,
    Generation,
    GenerationPage,
)

DEFAULT_TIMEOUT_S = 30.0
MAX_LIST_PAGE = 100
MAX_EVENTS_PAGE = 1000


class AsyncGenstream:
    """A genstream server at ``base_url``, driven with one API key.

        async with AsyncGenstream("http://127.0.0.1:8000", api_key) as genstream:
            created = await genstream.create({"project": "shop", "entities": [...]})
            async for event in genstream.follow(created.id):
                print(event.seq, event.type, event.message)

    ``http_client``: an ``httpx.AsyncClient`` of yours (proxies, TLS, transports); it is
    left open on close. Without one the client makes its own with ``timeout`` (seconds, or
    an ``httpx.Timeout``). Every error answer raises a ``GenstreamError`` subclass
    (``genstream_client.errors``); connection failures raise httpx's own, except in
    ``follow``, which reconnects by itself.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        http_client: httpx.AsyncClient | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._owns_http = http_client is None
        self.http = http_client or httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> AsyncGenstream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
    ) -> httpx.Response:
        """One authenticated request; an error answer raises its ``GenstreamError``."""
        response = await self.http.request(
            method, self.url(path), json=json, params=params, headers=self._headers
        )
        if response.status_code >= 400:
            raise error_of(response)
        return response

    # --- generations -------------------------------------------------------------------------

    async def create(
        self, spec: Mapping[str, Any], provider: str | None = None, model: str | None = None
    ) -> Created:
        """Start a generation of ``spec`` (``{"project": ..., "entities": [...]}``)."""
        body: dict[str, Any] = {"spec": spec}
        if provider is not None:
            body["provider"] = provider
        if model is not None:
            body["model"] = model
        response = await self.request("POST", "/api/generations", json=body)
        return Created.from_dict(response.json())

    async def get(self, generation_id: str) -> Generation:
        response = await self.request("GET", f"/api/generations/{generation_id}")
        return Generation.from_dict(response.json())

    async def list_page(
        self, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> GenerationPage:
        """One page of the caller's generations, newest first (``limit`` at most 100)."""
        params: dict[str, str | int] = {"limit": limit}
        if status is not None:
            params["status"] = status
        if cursor is not None:
            params["cursor"] = cursor
        body = (await self.request("GET", "/api/generations", params=params)).json()
        items = [Generation.from_dict(item) for item in body["items"]]
        return GenerationPage(items, body.get("next_cursor"))

    async def list(
        self, status: str | None = None, limit: int = MAX_LIST_PAGE
    ) -> AsyncGenerator[Generation, None]:
        """Every generation of the caller's (with ``status``, if given), newest first,
        fetched ``limit`` at a time."""
        cursor: str | None = None
        while True:
            page = await self.list_page(status, limit, cursor)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel(self, generation_id: str) -> str:
        """Ask the run to stop; its status then (Conflict if it had already finished)."""
        response = await self.request("POST", f"/api/generations/{generation_id}/cancel")
        status: str = response.json()["status"]
        return status

    # --- events --------------------------------------------------------------------------------

    async def events_page(
        self, generation_id: str, after: int = 0, limit: int = MAX_EVENTS_PAGE
    ) -> EventPage:
        """Stored events with ``seq > after``, at most ``limit`` (1000) of them."""
        response = await self.request(
            "GET",
            f"/api/generations/{generation_id}/events",
            params={"after": after, "limit": limit},
        )
        return EventPage.from_text(response.text)

    async def events(self, generation_id: str, after: int = 0) -> AsyncGenerator[Event, None]:
        """Every stored event after ``after``, page by page; ends at the last stored one (a
        running generation's later events need ``follow``)."""
        while True:
            page = await self.events_page(generation_id, after)
            for event in page.events:
                yield event
            if not page.has_more:
                return
            after = page.next_after

    def follow(self, generation_id: str, after: int | None = None) -> AsyncGenerator[Event, None]:
        """The generation's events after ``after`` (None: from the first), live, until its
        terminal event; each exactly once, in seq order, across dropped connections and
        restarts of the server or its database. See ``genstream_client.following``."""
        return following.follow(self, generation_id, after or 0)

    async def stream_token(self, generation_id: str) -> str:
        """A fresh token for the generation's stream (``?token=``), for code that opens
        the stream itself, such as a browser's EventSource."""
        response = await self.request("POST", f"/api/generations/{generation_id}/stream-token")
        token: str = response.json()["stream_token"]
        return token

    # --- files ---------------------------------------------------------------------------------

    async def files(self, generation_id: str) -> builtins.list[FileEntry]:
        response = await self.request("GET", f"/api/generations/{generation_id}/files")
        return [FileEntry.from_dict(entry) for entry in response.json()["files"]]

    async def file(self, generation_id: str, path: str) -> str:
        """One generated file's text."""
        quoted = quote(path.lstrip("/"), safe="/")
        response = await self.request("GET", f"/api/generations/{generation_id}/files/{quoted}")
        return response.text

    async def archive(self, generation_id: str) -> bytes:
        """Every generated file, as the bytes of a zip archive."""
        response = await self.request("GET", f"/api/generations/{generation_id}/archive")
        return response.content
