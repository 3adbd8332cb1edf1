"""``streams/multiplex.py``: every run of one owner on one stream, against a real PostgreSQL.

The hub is woken by hand after each append, as the LISTEN connection would. The strongest
check: from the cursor of every frame a stream sent, a new stream sends exactly the frames
that came after it, run by run, in both phases and with runs appended out of feed order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator
from uuid import UUID

from service.events import EventType, NewEvent
from service.generation import runs as commands
from service.store import event_log
from service.store.db import Pool
from service.streams.follow import Keepalive, Streams
from service.streams.hub import Hub
from service.streams.multiplex import CursorMark, OwnerCursor, OwnerFrame, follow_owner
from tests.helpers import DONE, STARTED, append, delta, new_generation

QUIET_S = 0.3  # the keepalive interval here: a keepalive means nothing more is coming


class Follower:
    """One multiplexed stream, read a step at a time."""

    def __init__(self, hub: Hub, pool: Pool, owner: str, cursor: OwnerCursor, snapshots: bool):
        self.pages = follow_owner(
            Streams(hub, QUIET_S), pool, owner, cursor, with_snapshots=snapshots
        )
        self.frames: list[OwnerFrame] = []
        self.marks: list[OwnerCursor] = []  # resume points sent with no frame

    async def until_quiet(self, seconds: float = 10.0) -> list[OwnerFrame]:
        """The frames up to the next keepalive (nothing more for ``QUIET_S``)."""
        got: list[OwnerFrame] = []
        async with asyncio.timeout(seconds):
            async for page in self.pages:
                if isinstance(page, Keepalive):
                    break
                if isinstance(page, CursorMark):
                    self.marks.append(page.cursor)
                    continue
                got.extend(page)
        self.frames.extend(got)
        return got

    async def close(self) -> None:
        assert isinstance(self.pages, AsyncGenerator)
        await self.pages.aclose()


@contextlib.asynccontextmanager
async def following(
    hub: Hub,
    pool: Pool,
    owner: str = "alice",
    cursor: OwnerCursor | None = None,
    snapshots: bool = False,
) -> AsyncIterator[Follower]:
    follower = Follower(hub, pool, owner, cursor or OwnerCursor(), snapshots)
    try:
        yield follower
    finally:
        await follower.close()


async def appended(pool: Pool, hub: Hub, run: UUID, *events: NewEvent) -> int:
    last = await append(pool, run, *events)
    hub.wake(run, last)
    return last


def runs(frames: list[OwnerFrame]) -> dict[UUID, list[int]]:
    """Each run's seqs as the frames deliver them (a snapshot stands for 1..its seq)."""
    seqs: dict[UUID, list[int]] = defaultdict(list)
    for frame in frames:
        if frame.type == "snapshot":
            seqs[frame.generation_id].extend(range(1, frame.seq + 1))
        else:
            seqs[frame.generation_id].append(frame.seq)
    return dict(seqs)


async def running_run(pool: Pool, owner: str = "alice", deltas: int = 2) -> UUID:
    run = await new_generation(pool, owner)
    await append(pool, run, STARTED, *(delta(n) for n in range(deltas)))
    return run


async def test_a_fresh_stream_sends_unfinished_runs_then_everything_new_of_its_owner_only(
    pool: Pool,
) -> None:
    hub = Hub(pool)
    running = await running_run(pool)
    finished = await running_run(pool)
    await append(pool, finished, DONE)
    bobs = await running_run(pool, "bob")
    async with following(hub, pool) as alice:
        first = await alice.until_quiet()
        assert runs(first) == {running: [1, 2, 3, 4]}
        assert all(frame.cursor.catching_up for frame in first)

        await appended(pool, hub, running, delta(9))
        await appended(pool, hub, bobs, delta(9))
        created = await new_generation(pool)
        hub.wake(created, 1)
        await appended(pool, hub, created, STARTED)
        await appended(pool, hub, running, DONE)
        then = await alice.until_quiet()

    assert runs(then) == {running: [5, 6], created: [1, 2]}
    assert not any(frame.cursor.catching_up for frame in then)
    assert then[-1].cursor.ahead == {}, "in steady state a cursor names no run"
    for frame in then:
        body = json.loads(frame.json)
        assert (body["generation_id"], body["seq"], body["type"]) == (
            str(frame.generation_id),
            frame.seq,
            frame.type,
        )


async def test_resuming_from_any_frame_sends_exactly_what_came_after_it(pool: Pool) -> None:
    """Runs mid-way, finished, created later, and one run appended out of feed order (its
    seq 7 in an older transaction than its seq 6, while that transaction holds the feed's
    horizon back): from each frame's cursor, the rest, exactly."""
    for snapshots in (False, True):
        hub = Hub(pool)
        one, two = await running_run(pool), await running_run(pool, deltas=40)
        async with following(hub, pool, snapshots=snapshots) as stream:
            await stream.until_quiet()
            await appended(pool, hub, one, delta(1))
            async with pool.acquire() as early:
                transaction = early.transaction()
                await transaction.start()
                await early.fetchval("SELECT pg_current_xact_id()")  # the older transaction
                await appended(pool, hub, two, delta(2))  # seq 43, newer transaction
                await event_log.append(early, two, [delta(3)])  # seq 44, older transaction
                await transaction.commit()
            hub.wake(two, 44)
            three = await new_generation(pool)
            hub.wake(three, 1)
            await appended(pool, hub, three, STARTED, delta(4))
            await appended(pool, hub, one, DONE)
            await appended(pool, hub, two, DONE)
            await stream.until_quiet()
        sent = stream.frames
        whole = runs(sent)
        assert whole[two] == list(range(1, 46))
        assert whole[one] == list(range(1, 7))
        assert whole[three] == [1, 2, 3]
        # Seq 44 came first in the feed: 43 was sent ahead of its turn, and its cursor says so.
        (ahead_of_turn,) = [f for f in sent if (f.generation_id, f.seq) == (two, 43)]
        assert ahead_of_turn.cursor.ahead[two].seq == 43
        assert not ahead_of_turn.cursor.catching_up

        for index, frame in enumerate(sent):
            async with following(hub, pool, cursor=frame.cursor, snapshots=snapshots) as rest:
                resumed = await rest.until_quiet()
            had, rest_of_it = runs(sent[: index + 1]), runs(resumed)
            for run, seqs in whole.items():
                assert had.get(run, []) + rest_of_it.get(run, []) == seqs, (
                    f"resumed from frame {index} ({frame.type}), run {run}"
                )


async def test_an_event_behind_an_open_transaction_is_sent_once_it_ends(pool: Pool) -> None:
    """The owner feed reads an event only once no older transaction is open; one that ends
    without appending notifies nobody, so the stream looks again by itself."""
    hub = Hub(pool)
    run = await running_run(pool)
    async with following(hub, pool) as stream:
        await stream.until_quiet()
        async with pool.acquire() as blocker:
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.fetchval("SELECT pg_current_xact_id()")
            await appended(pool, hub, run, delta(7))
            reading = asyncio.create_task(stream.until_quiet())
            await asyncio.sleep(0)  # the stream reads: the event is behind the horizon
            await transaction.commit()  # no notification
        got = await reading
    assert [frame.seq for frame in got] == [5]


async def test_a_run_failed_and_retried_in_one_page_is_sent_whole(pool: Pool) -> None:
    """A run's terminal event, its generation.retried and the next attempt's first event,
    all read in one page of the feed, after the catch-up's bookkeeping has expired."""
    hub = Hub(pool)
    run = await running_run(pool)
    bobs = await running_run(pool, "bob")
    async with following(hub, pool) as stream:
        await stream.until_quiet()
        await appended(pool, hub, bobs, delta(1))  # the feed moves on past the catch-up
        await stream.until_quiet()
        await append(pool, run, NewEvent(EventType.FAILED, "core", 0.2, "x", {"error": "e"}))
        await commands.retry_generation(pool, "alice", run)
        last = await append(pool, run, STARTED)
        hub.wake(run, last)
        got = await stream.until_quiet()
    assert [(frame.seq, frame.type) for frame in got] == [
        (5, "generation.failed"), (6, "generation.retried"), (7, "generation.started"),
    ]  # fmt: skip


async def test_a_stream_that_sent_no_frame_resumes_from_its_mark_and_misses_nothing(
    pool: Pool,
) -> None:
    """No unfinished run at first: the catch-up sends nothing but a resume point (an id
    alone). From it, a run created and finished while disconnected comes whole."""
    hub = Hub(pool)
    async with following(hub, pool) as stream:
        assert await stream.until_quiet() == []
    (mark,) = stream.marks
    assert not mark.catching_up
    meanwhile = await running_run(pool)
    await append(pool, meanwhile, DONE)
    async with following(hub, pool, cursor=mark) as resumed:
        got = await resumed.until_quiet()
    assert runs(got) == {meanwhile: [1, 2, 3, 4, 5]}


async def test_a_quiet_owners_position_moves_past_other_owners_events(pool: Pool) -> None:
    hub = Hub(pool)
    await running_run(pool)
    bobs = await running_run(pool, "bob")
    async with following(hub, pool) as stream:
        await stream.until_quiet()
        first = stream.marks[0].position
        for n in range(5):
            await appended(pool, hub, bobs, delta(n))
        await stream.until_quiet()
        await stream.until_quiet()  # a keepalive later: the moved position is marked
    assert stream.marks[-1].position.tx_id > first.tx_id
    assert stream.marks[-1].ahead == {}
