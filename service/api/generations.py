"""The generations resource: create, list, read, cancel, events, files."""

from __future__ import annotations

import io
import zipfile
from typing import Annotated, Final
from uuid import UUID

from litestar import Controller, HttpMethod, MediaType, Response, get, post, route
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from service.access import tokens
from service.access.quotas import effective
from service.api.auth import provide_caller
from service.api.context import Services
from service.api.cursors import OPAQUE_CURSOR, decode_list_cursor, encode_list_cursor
from service.api.schemas import (
    OVER_QUOTA,
    CancelAccepted,
    Created,
    CreateGeneration,
    FileEntry,
    FileList,
    GenerationPage,
    GenerationState,
    RetryAccepted,
    StreamToken,
)
from service.errors import InvalidRequest
from service.events import Status
from service.generation import runs
from service.observe import metrics
from service.settings import Settings
from service.store import generations
from service.store.db import BIGINT_MAX, connection
from service.store.keys import KeyOwner
from service.streams import snapshots

MAX_EVENTS_PAGE = 1000
MAX_LIST_PAGE = 100


_STATUS: Final[dict[str, object]] = {"enum": [status.value for status in Status]}


def _status(text: str | None) -> Status | None:
    if text is None:
        return None
    try:
        return Status(text)
    except ValueError:
        choices = ", ".join(status.value for status in Status)
        raise InvalidRequest(f"status must be one of {choices}, got {text[:40]!r}") from None


def create_limits(caller: KeyOwner, settings: Settings) -> runs.CreateLimits:
    return runs.CreateLimits(
        max_active_runs=effective(caller.max_active_runs, settings.owner_max_active_runs),
        runs_per_minute=effective(caller.runs_per_minute, settings.owner_runs_per_minute),
    )


class GenerationsController(Controller):
    path = "/api/generations"
    dependencies = {"caller": Provide(provide_caller)}  # noqa: RUF012 (Litestar's idiom)

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        responses={429: OVER_QUOTA},
        operation_id="createGeneration",
        description=(
            "Queues a generation of `spec` and answers at once; a worker runs it. Follow it "
            "with `stream_url?token=<stream_token>` (EventSource) or page through `events_url`."
            " Over a quota: `429` with `Retry-After`."
        ),
        summary="Start a generation",
    )
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
            verify=data.verify or services.settings.verify_default,
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

    @route("/", http_method=HttpMethod.OPTIONS, include_in_schema=False, sync_to_thread=False)
    def allowed_methods(self) -> Response[None]:
        """Litestar 2's own OPTIONS answer names only one of the methods of a path with two
        (litestar#4169, fixed in 3): this path's, said here."""
        return Response(
            None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": "GET, OPTIONS, POST"}
        )

    @get(
        "/",
        operation_id="listGenerations",
        description=(
            "The caller's generations, newest first, `limit` per page; pass `next_cursor` back "
            "as `cursor` for the next page (null: no more)."
        ),
        summary="The caller's generations",
    )
    async def list_generations(
        self,
        caller: NamedDependency[KeyOwner],
        services: NamedDependency[Services],
        # Text, checked here: Litestar reads "null" as None for an optional enum.
        status: Annotated[str | None, QueryParameter(schema_extra=_STATUS)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIST_PAGE)] = 20,
        cursor: Annotated[str | None, QueryParameter(schema_extra=OPAQUE_CURSOR)] = None,
    ) -> GenerationPage:
        before = decode_list_cursor(cursor) if cursor else None
        wanted = _status(status)
        async with connection(services.pool) as conn:
            rows = await generations.select_generations(
                conn, caller.owner, status=wanted, before=before, limit=limit + 1
            )
        items, more = rows[:limit], len(rows) > limit
        next_cursor = encode_list_cursor(items[-1].created_at, items[-1].id) if more else None
        return GenerationPage(
            items=[GenerationState.of(row) for row in items], next_cursor=next_cursor
        )

    @get(
        "/{generation_id:uuid}",
        operation_id="getGeneration",
        description=(
            "A generation's state, read from the projection its events maintain: status, stage,"
            " progress, the seq of its last event, and its error if it failed."
        ),
        summary="One generation's state",
    )
    async def read(
        self,
        generation_id: FromPath[UUID],
        caller: NamedDependency[KeyOwner],
        services: NamedDependency[Services],
    ) -> GenerationState:
        async with connection(services.pool) as conn:
            row = await generations.select_generation(conn, caller.owner, generation_id)
        return GenerationState.of(row)

    @post(
        "/{generation_id:uuid}/stream-token",
        status_code=HTTP_201_CREATED,
        operation_id="issueStreamToken",
        description=(
            "A fresh stream token for one generation's stream, for a page that has the API key "
            "but no token (after a reload) or whose token expired. EventSource cannot send "
            "headers, so the stream takes this token in `?token=`."
        ),
        summary="A fresh stream token",
    )
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

    @post(
        "/{generation_id:uuid}/cancel",
        status_code=HTTP_202_ACCEPTED,
        operation_id="cancelGeneration",
        description=(
            "Asks the generation to stop: `202` with its status now (a queued one is cancelled "
            "at once; a running one ends with `generation.cancelled` when its worker notices). "
            "`409` if it had already ended."
        ),
        summary="Ask a generation to stop",
    )
    async def cancel(
        self,
        generation_id: FromPath[UUID],
        caller: NamedDependency[KeyOwner],
        services: NamedDependency[Services],
    ) -> CancelAccepted:
        status = await runs.cancel_generation(services.pool, caller.owner, generation_id)
        return CancelAccepted(id=generation_id, status=status)

    @post(
        "/{generation_id:uuid}/retry",
        status_code=HTTP_202_ACCEPTED,
        responses={429: OVER_QUOTA},
        operation_id="retryGeneration",
        description=(
            "Another attempt at a failed or cancelled generation: `202`, and a worker resumes it "
            "from the first phase that did not complete, keeping the files of those that did "
            "(verification starts again). Its log goes on: `generation.retried`, then the "
            "phases, so both attempts stay in it. `409` if it succeeded or has not ended; "
            "`429` when the owner already has their most active runs."
        ),
        summary="Retry a failed or cancelled generation",
    )
    async def retry(
        self,
        generation_id: FromPath[UUID],
        caller: NamedDependency[KeyOwner],
        services: NamedDependency[Services],
    ) -> RetryAccepted:
        limits = create_limits(caller, services.settings)
        status = await runs.retry_generation(
            services.pool,
            caller.owner,
            generation_id,
            runs.CreateLimits(max_active_runs=limits.max_active_runs),
        )
        return RetryAccepted(id=generation_id, status=status)

    @get(
        "/{generation_id:uuid}/events",
        operation_id="listEvents",
        description=(
            "A page of the generation's log after seq `after`, in seq order, as stored. Pass "
            "`next_after` back as `after` while `has_more`."
        ),
        summary="A page of the log",
    )
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
        snapshot: Annotated[
            bool,
            QueryParameter(
                description="With `after` 0: `snapshot` holds the run reduced up to its last "
                "event and `events` start after it. Ignored with a resume point."
            ),
        ] = False,
    ) -> Response[bytes]:
        async with connection(services.pool) as conn:
            row = await generations.select_generation(conn, caller.owner, generation_id)
            taken = await snapshots.read(conn, generation_id) if snapshot and not after else None
        start = taken.seq if taken else after
        # The primary's last_seq, read above, is what a standby's page must reach.
        page = await services.reads.events_after(
            generation_id, start, limit + 1, expect=row.last_seq
        )
        events, more = page[:limit], len(page) > limit
        next_after = events[-1].seq if events else start
        # The stored JSON text goes out as is: no decode/encode per event.
        body = (
            '{"events":['
            + ",".join(event.json for event in events)
            + f'],"next_after":{next_after},"has_more":{"true" if more else "false"}'
            + (f',"snapshot":{taken.json}}}' if taken else "}")
        )
        if taken:
            metrics.SNAPSHOTS_SENT.inc()
        return Response(body.encode(), media_type="application/json")

    @get(
        "/{generation_id:uuid}/files",
        operation_id="listFiles",
        description=(
            "Every file the generation saved so far, with the seq of the `file.saved` event "
            "that stored it."
        ),
        summary="The generated files",
    )
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

    @get(
        "/{generation_id:uuid}/archive",
        operation_id="getArchive",
        description="Every saved file in one zip, at the paths the files list gives.",
        summary="All generated files as a zip",
        media_type="application/zip",
    )
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

    @get(
        "/{generation_id:uuid}/files/{path:path}",
        operation_id="getFile",
        description="One saved file's text, by its path.",
        summary="One generated file",
        media_type=MediaType.TEXT,
    )
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
