"""The generations resource: create, list, read, cancel, events, files."""

from __future__ import annotations

import io
import zipfile
from typing import Annotated
from uuid import UUID

from litestar import Controller, MediaType, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED

from service.access import tokens
from service.access.quotas import effective
from service.api.auth import provide_caller
from service.api.context import Services
from service.api.cursors import decode_list_cursor, encode_list_cursor
from service.api.schemas import (
    OVER_QUOTA,
    CancelAccepted,
    Created,
    CreateGeneration,
    FileEntry,
    FileList,
    GenerationPage,
    GenerationState,
    StreamToken,
)
from service.events import Status
from service.generation import runs
from service.settings import Settings
from service.store import event_log, generations
from service.store.db import BIGINT_MAX, connection
from service.store.keys import KeyOwner

MAX_EVENTS_PAGE = 1000
MAX_LIST_PAGE = 100


def create_limits(caller: KeyOwner, settings: Settings) -> runs.CreateLimits:
    return runs.CreateLimits(
        max_active_runs=effective(caller.max_active_runs, settings.owner_max_active_runs),
        runs_per_minute=effective(caller.runs_per_minute, settings.owner_runs_per_minute),
    )


class GenerationsController(Controller):
    path = "/api/generations"
    dependencies = {"caller": Provide(provide_caller)}  # noqa: RUF012 (Litestar's idiom)

    @post("/", status_code=HTTP_201_CREATED, responses={429: OVER_QUOTA})
    async def create(
        self,
        data: JSONBody[CreateGeneration],
        caller: NamedDependency[KeyOwner],
        services: NamedDependency[Services],
    ) -> Created:
        generation_id = await runs.create_generation(
            services.pool,
            caller.owner,
            data.spec,
            provider=data.provider,
            model=data.model,
            available_providers=services.providers,
            limits=create_limits(caller, services.settings),
        )
        base = f"{self.path}/{generation_id}"
        return Created(
            id=generation_id,
            status=Status.QUEUED,
            stream_url=f"{base}/stream",
            stream_token=tokens.issue(
                services.token_secret,
                generation_id,
                services.settings.stream_token_ttl_s,
                caller.key_id,
            ),
            events_url=f"{base}/events",
        )

    @get("/")
    async def list_generations(
        self,
        caller: NamedDependency[KeyOwner],
        services: NamedDependency[Services],
        status: Annotated[Status | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIST_PAGE)] = 20,
        cursor: Annotated[str | None, QueryParameter()] = None,
    ) -> GenerationPage:
        before = decode_list_cursor(cursor) if cursor else None
        async with connection(services.pool) as conn:
            rows = await generations.select_generations(
                conn, caller.owner, status=status, before=before, limit=limit + 1
            )
        items, more = rows[:limit], len(rows) > limit
        next_cursor = encode_list_cursor(items[-1].created_at, items[-1].id) if more else None
        return GenerationPage(
            items=[GenerationState.of(row) for row in items], next_cursor=next_cursor
        )

    @get("/{generation_id:uuid}")
    async def read(
        self,
        generation_id: FromPath[UUID],
        caller: NamedDependency[KeyOwner],
        services: NamedDependency[Services],
    ) -> GenerationState:
        async with connection(services.pool) as conn:
            row = await generations.select_generation(conn, caller.owner, generation_id)
        return GenerationState.of(row)

    @post("/{generation_id:uuid}/stream-token", status_code=HTTP_201_CREATED)
    async def stream_token(
        self,
        generation_id: FromPath[UUID],
        caller: NamedDependency[KeyOwner],
        services: NamedDependency[Services],
    ) -> StreamToken:
        """A fresh stream token for a generation of the caller's: a page reopening a
        generation (after a reload, from the list) has its API key but no token, and
        EventSource cannot send the key in a header."""
        async with connection(services.pool) as conn:
            await generations.select_generation(conn, caller.owner, generation_id)
        ttl = services.settings.stream_token_ttl_s
        return StreamToken(
            stream_url=f"{self.path}/{generation_id}/stream",
            stream_token=tokens.issue(services.token_secret, generation_id, ttl, caller.key_id),
            expires_in=ttl,
        )

    @post("/{generation_id:uuid}/cancel", status_code=HTTP_202_ACCEPTED)
    async def cancel(
        self,
        generation_id: FromPath[UUID],
        caller: NamedDependency[KeyOwner],
        services: NamedDependency[Services],
    ) -> CancelAccepted:
        status = await runs.cancel_generation(services.pool, caller.owner, generation_id)
        return CancelAccepted(id=generation_id, status=status)

    @get("/{generation_id:uuid}/events")
    async def events(
        self,
        generation_id: FromPath[UUID],
        caller: NamedDependency[KeyOwner],
        services: NamedDependency[Services],
        after: Annotated[
            # schema_extra: Litestar writes bounds as floats, and 2^63 - 1 is 2^63 as one
            int, QueryParameter(ge=0, le=BIGINT_MAX, schema_extra={"maximum": BIGINT_MAX})
        ] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_EVENTS_PAGE)] = 100,
    ) -> Response[bytes]:
        async with connection(services.pool) as conn:
            await generations.select_generation(conn, caller.owner, generation_id)
            page = await event_log.select_events_after(conn, generation_id, after, limit + 1)
        events, more = page[:limit], len(page) > limit
        next_after = events[-1].seq if events else after
        # The stored JSON text goes out as is: no decode/encode per event.
        body = (
            '{"events":['
            + ",".join(event.json for event in events)
            + f'],"next_after":{next_after},"has_more":{"true" if more else "false"}}}'
        )
        return Response(body.encode(), media_type="application/json")

    @get("/{generation_id:uuid}/files")
    async def files(
        self,
        generation_id: FromPath[UUID],
        caller: NamedDependency[KeyOwner],
        services: NamedDependency[Services],
    ) -> FileList:
        async with connection(services.pool) as conn:
            rows = await generations.select_files(conn, caller.owner, generation_id)
        return FileList(
            files=[
                FileEntry(
                    path=row.path,
                    size=row.size,
                    sha256=row.sha256,
                    language=row.language,
                    seq=row.seq,
                )
                for row in rows
            ]
        )

    @get("/{generation_id:uuid}/archive")
    async def archive(
        self,
        generation_id: FromPath[UUID],
        caller: NamedDependency[KeyOwner],
        services: NamedDependency[Services],
    ) -> Response[bytes]:
        async with connection(services.pool) as conn:
            files = await generations.select_file_contents(conn, caller.owner, generation_id)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path, content in files:
                archive.writestr(path, content)
        return Response(
            buffer.getvalue(),
            media_type="application/zip",
            headers={
                "Content-Disposition": f'attachment; filename="generation-{generation_id}.zip"'
            },
        )

    @get("/{generation_id:uuid}/files/{path:path}")
    async def file(
        self,
        generation_id: FromPath[UUID],
        path: FromPath[str],
        caller: NamedDependency[KeyOwner],
        services: NamedDependency[Services],
    ) -> Response[str]:
        async with connection(services.pool) as conn:
            content, _language = await generations.select_file(
                conn, caller.owner, generation_id, path.lstrip("/")
            )
        # Litestar adds "; charset=utf-8" to text types itself: naming it here said it twice.
        return Response(content, media_type=MediaType.TEXT)
