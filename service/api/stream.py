"""``GET /api/generations/{id}/stream``: the log as Server-Sent Events.

Frames are written by hand rather than through Litestar's ServerSentEvent so that the JSON
text PostgreSQL rendered goes to the socket untouched, and a keepalive is a bare comment line
(Litestar's comment messages add an empty ``data:`` that browsers turn into message events).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Final, Literal, TypeVar
from uuid import UUID

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, QueryParameter
from litestar.status_codes import HTTP_204_NO_CONTENT

from service.access import keys, tokens
from service.access.quotas import StreamSlots, effective
from service.api.auth import bearer_key
from service.api.context import Services
from service.api.handoff import HandedOffStream
from service.api.schemas import API_KEY, OVER_QUOTA, STREAM_TOKEN, problem
from service.errors import (
    GenstreamError,
    InvalidRequest,
    StoreUnavailable,
    TooManyRequests,
    Unauthorized,
)
from service.observe import metrics
from service.observe.logs import get_logger
from service.store.db import BIGINT_MAX
from service.store.event_log import Head, StoredEvent
from service.store.keys import KeyOwner
from service.streams import follow, pacing, snapshots
from service.streams.hub import QuietMark

log = get_logger(__name__)
T = TypeVar("T")

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}

_NON_NEGATIVE = re.compile(r"[0-9]{1,19}")
SEQ: Final[dict[str, object]] = {
    "pattern": "^[0-9]{1,19}$",
    "description": f"A seq: resume after it (0 to {BIGINT_MAX}).",
}


def resume_point(last_event_id: str | None, after: str | None) -> int:
    """``Last-Event-ID`` wins over ``?after=``; neither means from the start. Both are
    checked when both are given: a wrong one is a mistake whichever would have won."""
    header, query = _seq("Last-Event-ID", last_event_id), _seq("after", after)
    return header if header is not None else query if query is not None else 0


def _seq(source: str, value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not _NON_NEGATIVE.fullmatch(value) or int(value) > BIGINT_MAX:
        raise InvalidRequest(
            f"{source} must be an integer from 0 to {BIGINT_MAX}, got {value[:40]!r}"
        )
    return int(value)


async def authorize(
    request: Request[Any, Any, Any],
    services: Services,
    generation_id: UUID,
    token: str | None,
) -> tuple[KeyOwner | UUID, Head | None]:
    """The caller; or, for a stream token while PostgreSQL is unavailable, the id of the key
    it was issued through (its MAC checked: whether the key is still live is asked once the
    database answers, before any event is sent). And the run's head, read with the check that
    the caller may see it (a token's key, or a key's ownership of the run); None only for that
    token: not read yet."""
    if token is not None:
        if keys.looks_like_api_key(token):
            raise Unauthorized(
                "API keys are never accepted in URLs: use the stream_token from POST "
                "/api/generations, or the Authorization header"
            )
        key_id = tokens.verify(services.token_secret, generation_id, token)
        try:
            return await keys.live_key_and_head(services.pool, key_id, generation_id)
        except StoreUnavailable:
            return key_id, None
    key = bearer_key(request)
    if key is None:
        raise Unauthorized("a stream needs ?token=<stream_token> or 'Authorization: Bearer'")
    caller = await keys.authenticate(services.pool, key)
    return caller, await follow.head(services.pool, generation_id, caller.owner)


KEEPALIVE_FRAME: Final = b": keepalive\n\n"


def check_snapshot(snapshot: bool, speed: float | None) -> None:
    if snapshot and speed is not None:
        raise InvalidRequest(
            "snapshot=1 cannot go with pace=recorded: a replay sends every event at its pace"
        )


def opens(head: Head, after: int, speed: float | None) -> bool:
    """Whether a stream resuming after ``after`` has anything to send (False: 204); raises
    what the caller got wrong (a resume point we never sent, a replay of a running run)."""
    if speed is not None:
        pacing.check_replayable(head, speed)
    return follow.has_events_after(head, after)


async def frames(
    services: Services,
    generation_id: UUID,
    after: int,
    speed: float | None = None,
    *,
    head_known: bool = True,
    head_seq: int = 0,
    unchecked_key: UUID | None = None,
    snapshot: bool = False,
    quiet_since: QuietMark | None = None,
) -> AsyncGenerator[bytes, None]:
    """``speed``: replay at the recorded pace. ``snapshot``: start with the run's snapshot
    (``after`` is 0), then the events after it. ``head_known`` False: the stream was opened
    while PostgreSQL was unavailable, so the checks the handler makes before answering are
    made here once it answers; until then the client gets keepalives. ``quiet_since``: the
    hub's mark from before the head was read (``follow.follow``).

    Counted and logged as it ends, with why: ``terminal`` (its last event went out),
    ``client_gone`` (closed at a ``yield``: nothing else can say so), ``shutdown``, ``ended``
    (nothing to send after all: the reconnect gets the answer) or ``error``. One generator,
    the bookkeeping inline: a wrapping generator would cost every send a hop."""
    opened_at = time.time()
    metrics.STREAMS_OPENED.inc()
    OpenStreams.count += 1
    reason, sent = "client_gone", 0
    try:
        yield f"retry: {services.settings.sse_retry_ms}\n\n".encode()
        if not head_known:
            heads: list[Head] = []
            waiting = keepalives_until(
                services, lambda: follow.head(services.pool, generation_id), heads
            )
            async for keepalive in waiting:
                yield keepalive
            head = heads[0] if heads else None
            try:
                if head is None or not opens(head, after, speed):
                    reason = "shutdown" if head is None else "ended"
                    return
            except GenstreamError:
                reason = "ended"
                return  # a 204, 400 or 409 now: the client reconnects and gets it as the answer
            head_seq = head.last_seq
        if unchecked_key is not None:
            # The token's key could not be checked when the stream opened (the database was
            # away); it answers now, so ask before the first event goes out.
            try:
                await keys.live_key(services.pool, unchecked_key)
            except GenstreamError:
                reason = "ended"
                return  # revoked meanwhile (or away again): the reconnect gets the answer
        if snapshot:
            taken_all: list[snapshots.Snapshot | None] = []
            waiting = keepalives_until(
                services, lambda: snapshots.take(services.pool, generation_id), taken_all
            )
            async for keepalive in waiting:
                yield keepalive
            taken = taken_all[0] if taken_all else None
            if taken is None:
                reason = "shutdown" if services.hub.closing else "ended"
                return
            metrics.SNAPSHOTS_SENT.inc()
            yield snapshot_frame(taken).encode()
            if taken.is_final:
                reason = "terminal"
                return
            after = taken.seq
        items = follow.follow(services.streams, generation_id, after, head_seq, quiet_since)
        if speed is not None:
            items = pacing.paced(items, speed, services.streams.keepalive_wait_s())
        # Closed here, however the stream ends: a generator left to the collector runs its
        # ``finally`` (unsubscribe, a held connection) late, in a task of its own.
        async with contextlib.aclosing(items):
            async for item in items:
                if isinstance(item, follow.Keepalive):
                    metrics.KEEPALIVES_SENT.inc()
                    yield KEEPALIVE_FRAME
                    continue
                sent += len(item)
                metrics.FRAMES_SENT.inc(len(item))
                if item[-1].is_terminal:
                    reason = "terminal"
                # Looked up before the write: the edge may forget it while the write waits.
                heard_at = _heard_at(services, generation_id, item, opened_at)
                # One write per page, not per event: a catch-up of 100,000 events is 200 sends.
                yield "".join(map(frame, item)).encode()
                _observe_delivery(item, opened_at, heard_at)  # written: the client has it
        if reason != "terminal":
            reason = "shutdown" if services.hub.closing else "ended"
    except Exception:
        reason = "error"
        raise
    finally:
        OpenStreams.count -= 1
        metrics.STREAMS_CLOSED.labels(reason).inc()
        log.info(
            "stream.closed",
            generation_id=str(generation_id),
            reason=reason,
            events=sent,
            seconds=round(time.time() - opened_at, 3),
        )


async def keepalives_until(
    services: Services, read: Callable[[], Awaitable[T]], found: list[T]
) -> AsyncIterator[bytes]:
    """Keepalive frames while ``read`` waits for the database (a stream that answered 200
    keeps its client); what it read is put in ``found`` (left empty on shutdown)."""
    async for item in follow.once_available(services.streams, read):
        if isinstance(item, follow.Keepalive):
            metrics.KEEPALIVES_SENT.inc()
            yield KEEPALIVE_FRAME
        else:
            found.append(item)


def with_stream_slot(
    services: Services, caller: KeyOwner | UUID, body: AsyncGenerator[bytes, None]
) -> AsyncIterator[bytes]:
    """The body, holding one of the owner's stream slots while it runs (429 beyond them). A
    token checked while the database was away has no owner yet: no slot."""
    if not isinstance(caller, KeyOwner):
        return body
    limit = effective(caller.max_streams, services.settings.owner_max_streams)
    try:
        services.stream_slots.take(caller.owner, limit)
    except TooManyRequests:
        metrics.STREAMS_REFUSED.labels("quota").inc()
        raise
    return HoldingSlot(body, services.stream_slots, caller.owner)


class OpenStreams:
    """SSE streams open in this process (the ``genstream_streams_open`` gauge)."""

    count = 0


metrics.STREAMS_OPEN.read_from(OpenStreams, lambda: [((), OpenStreams.count)])


def _heard_at(
    services: Services, generation_id: UUID, page: list[StoredEvent], opened_at: float
) -> float | None:
    """When the notification of the page's oldest event appended since the stream opened
    arrived (``Hub.heard_at``); None for history, or a notification heard before the stream
    opened (a reconnect onto an edge others had read: that wait was not this stream's)."""
    if page[-1].at < opened_at:
        return None
    if page[0].at < opened_at:
        page = page[next(i for i, event in enumerate(page) if event.at >= opened_at) :]
    heard_at = services.hub.heard_at(generation_id, page)
    return heard_at if heard_at is not None and heard_at >= opened_at else None


def _observe_delivery(page: list[StoredEvent], opened_at: float, heard_at: float | None) -> None:
    """One observation per write (a page's frames go out in one): from the append of the
    oldest event in it that was appended after the stream opened (a replay of history is not
    a delivery) to now, an upper bound for the page's other events. Per event it cost 0.35 µs
    each, 4 µs for a page of ten, a quarter of a send's CPU when a generation saturates.
    And from the commit's notification (``Hub.heard_at``) to now: the stream path alone."""
    if page[-1].at < opened_at:
        return  # all history
    oldest = page[0]
    if oldest.at < opened_at:
        oldest = next(event for event in page if event.at >= opened_at)
    now = time.time()
    metrics.DELIVERY_LAG.observe(now - oldest.at)
    if heard_at is not None:
        # Not below zero: wall clocks can step back.
        metrics.STREAM_WRITE_LAG.observe(max(now - heard_at, 0.0))


_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")  # where SSE ends a line


def frame(event: StoredEvent) -> str:
    """One event as ``id:``/``event:``/``data:`` lines, whatever its stored fields hold.

    A stored field with a line break (an imported or hand-edited row) must not start a line
    of its own on the wire: "llm.delta\\nid: 999" would forge an event. The id is an integer;
    a type with a break is sent with the break escaped (its real value is in the data); data
    with one goes out as several ``data:`` lines, which clients join back with a newline.
    PostgreSQL renders event JSON on one line, so the common case costs two scans.
    """
    return sse_frame(f"{event.seq:d}", event.type, event.json)


def sse_frame(frame_id: str, event_type: str, data: str) -> str:
    """``frame``'s lines for any id (a seq, or a multiplexed stream's cursor: base64url)."""
    text = f"id: {frame_id}\nevent: {event_type}\ndata: {data}\n\n"
    if text.count("\n") == 4 and "\r" not in text:
        return text
    event_type = event_type.replace("\r", "\\r").replace("\n", "\\n")
    data = "\ndata: ".join(_LINE_BREAK.split(data))
    return f"id: {frame_id}\nevent: {event_type}\ndata: {data}\n\n"


def snapshot_frame(snapshot: snapshots.Snapshot) -> str:
    """``event: snapshot`` with the seq it stands for as its id: a reconnect resumes after it.
    Its JSON is one line (``json.dumps`` escapes line breaks)."""
    return f"id: {snapshot.seq:d}\nevent: snapshot\ndata: {snapshot.json}\n\n"


@get(
    "/api/generations/{generation_id:uuid}/stream",
    security=[{API_KEY: []}, {STREAM_TOKEN: []}],
    operation_id="streamEvents",
    description=(
        "The generation's log as Server-Sent Events: what is stored after the resume point, "
        "then live events as they are committed, then the end after the terminal event. "
        "Authenticate with the API key (header) or a stream token (`?token=`, for EventSource)."
        " The response's description gives the frame grammar."
    ),
    summary="Follow the log live (Server-Sent Events)",
    media_type="text/event-stream",
    responses={
        429: OVER_QUOTA,
        503: problem("The database is unavailable and the caller sent an API key; Retry-After."),
    },
)
async def stream(
    request: Request[Any, Any, Any],
    generation_id: FromPath[UUID],
    services: NamedDependency[Services],
    token: Annotated[str | None, QueryParameter()] = None,
    after: Annotated[str | None, QueryParameter(schema_extra=SEQ)] = None,
    last_event_id: Annotated[
        str | None, HeaderParameter(name="Last-Event-ID", schema_extra=SEQ)
    ] = None,
    pace: Annotated[Literal["live", "recorded"], QueryParameter()] = "live",
    speed: Annotated[
        float,
        QueryParameter(
            schema_extra={"minimum": pacing.REPLAY_SPEED_MIN, "maximum": pacing.REPLAY_SPEED_MAX}
        ),
    ] = 1.0,
    snapshot: Annotated[
        bool,
        QueryParameter(
            description="Start with one `snapshot` frame, the run reduced up to its last "
            "event, instead of the events it stands for; then the events after it. Only "
            "from the start: with a resume point the caller has its own state."
        ),
    ] = False,
) -> Response[bytes] | HandedOffStream:
    # Before the head is read: the stream's edge may start at it unread (``Hub.subscribe``).
    quiet_since = services.streams.hub.quiet_mark(generation_id)  # the hub ``follow`` uses
    try:
        caller, head = await authorize(request, services, generation_id, token)
    except Unauthorized:
        metrics.STREAMS_REFUSED.labels("unauthorized").inc()
        raise
    start = resume_point(last_event_id, after)
    pacing.check_speed(speed)  # without pace=recorded it is unused, but still checked
    replay_speed = speed if pace == "recorded" else None
    check_snapshot(snapshot, replay_speed)
    if head is not None and not opens(head, start, replay_speed):
        return Response(b"", status_code=HTTP_204_NO_CONTENT)
    body = frames(
        services,
        generation_id,
        start,
        replay_speed,
        head_known=head is not None,
        head_seq=head.last_seq if head is not None else 0,
        unchecked_key=caller if isinstance(caller, UUID) else None,
        snapshot=snapshot and start == 0,
        quiet_since=quiet_since,
    )
    return HandedOffStream(
        with_stream_slot(services, caller, body),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


class HoldingSlot:
    """The stream's frames, holding one of its owner's slots until they end: run out, fail,
    closed, or dropped without ever being started (a response whose start failed). A
    generator's ``finally`` covers all but the last: one that never started never runs it.
    One reader at a time, as a generator: an ``anext`` or ``aclose`` while another runs
    fails, and would give the slot back under the running stream."""

    __slots__ = ("_body", "_owner", "_slots")

    def __init__(self, body: AsyncGenerator[bytes, None], slots: StreamSlots, owner: str) -> None:
        self._body = body
        self._slots: StreamSlots | None = slots
        self._owner = owner

    def __aiter__(self) -> HoldingSlot:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._body)
        except BaseException:
            self._give_back()  # ended (StopAsyncIteration), failed, or cancelled
            raise

    async def aclose(self) -> None:
        try:
            await self._body.aclose()
        finally:
            self._give_back()

    def _give_back(self) -> None:
        if self._slots is not None:
            self._slots.give_back(self._owner)
            self._slots = None

    def __del__(self) -> None:
        self._give_back()
