from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from service.access import keys
from service.errors import GenerationFinished, LeaseLost, NotFound, StoreUnavailable
from service.events import EventType, NewEvent, NewFile
from service.generation.runner import LogEmitter
from service.observe import metrics
from service.store import event_log, generations
from service.store.db import Connection, Pool, asyncpg_dsn
from tests.helpers import ZERO_CHAIN, chain_after, delta, new_generation, stored_events


async def all_seqs(pool: Pool, generation_id: UUID) -> list[int]:
    async with pool.acquire() as conn:
        events = await event_log.select_events_after(conn, generation_id, 0, 100_000)
    return [event.seq for event in events]


async def test_append_numbers_events_from_one_and_renders_the_contract_shape(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    async with pool.acquire() as conn:
        appended = await event_log.append(conn, generation_id, [delta(1), delta(2)])
        events = await event_log.select_events_after(conn, generation_id, 0, 10)
    assert appended.last_seq == 3
    assert [e.seq for e in events] == [1, 2, 3]
    body = json.loads(events[2].json)
    assert list(body) == [
        "generation_id", "seq", "type", "status", "stage", "progress", "message", "timestamp",
        "data", "chain",
    ]  # fmt: skip
    assert body["generation_id"] == str(generation_id)
    assert body["seq"] == 3
    assert body["type"] == "llm.delta"
    assert body["status"] == "running"
    assert body["progress"] == 0.5
    assert body["data"] == {"n": 2}
    assert body["timestamp"].endswith("Z")


async def test_each_event_chains_the_one_before_and_the_terminal_one_says_what_came_before(
    pool: Pool,
) -> None:
    generation_id = await new_generation(pool)
    files = [NewFile(f"app/m{i}.py", f"X = {i}\n", "python") for i in range(3)]
    async with pool.acquire() as conn:
        await event_log.append(conn, generation_id, [delta(1)])
        await event_log.append(
            conn, generation_id, [f.saved("models", 0.6) for f in files], files=files
        )
        await event_log.append(
            conn, generation_id, [delta(2), NewEvent(EventType.SUCCEEDED, "done", 1.0, "Done")]
        )
        events = await event_log.select_events_after(conn, generation_id, 0, 100)

    chain = ZERO_CHAIN
    for event in events:
        chain = chain_after(chain, event.json)
        assert json.loads(event.json)["chain"] == chain, f"seq {event.seq}"
    last = json.loads(events[-1].json)
    assert last["data"] == {
        "count": len(events),
        "chain_hash": json.loads(events[-2].json)["chain"],
    }
    async with pool.acquire() as conn:
        assert (await event_log.check_chains(conn, [generation_id])).breaks == []


async def test_the_text_a_read_sends_is_the_text_the_chain_hashed_whatever_the_event_holds(
    pool: Pool,
) -> None:
    """Reads render events with one concat() and the append hashes a chain of ||: the two
    must give the same text for every value a column can hold."""
    awkward = 'say "hi" \\ \n\r\t\x01\x1f \u00e9 \U0001f600 \u2028 </script>'
    events = [
        NewEvent(EventType.LLM_DELTA, awkward, 0.0, awkward, {"text": awkward, "n": [1, 2.5]}),
        NewEvent(EventType.LLM_DELTA, "models", 1 / 3, "", {}),
        NewEvent(EventType.LLM_DELTA, "models", 1e-7, "x", {"nested": {"a": None, "b": True}}),
        NewEvent(EventType.SUCCEEDED, "done", 1.0, awkward),
    ]
    generation_id = await new_generation(pool)
    async with pool.acquire() as conn:
        await event_log.append(conn, generation_id, events)
    stored = await stored_events(pool, generation_id)
    chain = ZERO_CHAIN
    for event in stored:
        chain = chain_after(chain, event.json)
        assert json.loads(event.json)["chain"] == chain, f"seq {event.seq}"
    sent = [json.loads(event.json) for event in stored[1:]]
    assert [(e["stage"], e["message"], e["progress"]) for e in sent] == [
        (event.stage, event.message, event.progress) for event in events
    ]
    assert sent[0]["data"] == {"text": awkward, "n": [1, 2.5]}


async def test_an_edited_a_deleted_and_a_cut_off_event_break_the_chain_at_their_seq(
    pool: Pool,
) -> None:
    edited, deleted, cut, intact = [await new_generation(pool) for _ in range(4)]
    async with pool.acquire() as conn:
        for generation_id in (edited, deleted, cut, intact):
            for n in range(5):
                await event_log.append(conn, generation_id, [delta(n)])
        await conn.execute(
            "UPDATE generation_events SET payload = '{\"n\": 99}' "
            "WHERE generation_id = $1 AND seq = 3",
            edited,
        )
        for generation_id, seq in ((deleted, 2), (cut, 6)):
            await conn.execute(
                "DELETE FROM generation_events WHERE generation_id = $1 AND seq = $2",
                generation_id,
                seq,
            )
        checked = await event_log.check_chains(conn)
        named = await event_log.check_chains(conn, [intact, edited])

    assert {(b.generation_id, b.seq, b.kind, b.other_seq) for b in checked.breaks} == {
        (edited, 3, "altered", None),
        (deleted, 2, "missing", 3),
        (cut, 6, "truncated", 6),
    }
    assert (checked.generations, checked.events) == (4, 4 * 6 - 2)
    assert [(b.generation_id, b.seq) for b in named.breaks] == [(edited, 3)]
    assert (named.generations, named.events) == (2, 12)


async def test_concurrent_appenders_on_one_generation_never_gap_or_repeat(pool: Pool) -> None:
    generation_id = await new_generation(pool)

    async def writer(w: int) -> None:
        for i in range(25):
            async with pool.acquire() as conn:
                await event_log.append(conn, generation_id, [delta(w * 100 + i)] * (1 + i % 3))

    await asyncio.gather(*(writer(w) for w in range(8)))
    expected = 1 + sum(1 + i % 3 for i in range(25)) * 8
    assert await all_seqs(pool, generation_id) == list(range(1, expected + 1))


async def test_concurrent_appenders_on_many_generations_each_stay_gap_free(pool: Pool) -> None:
    ids = [await new_generation(pool) for _ in range(6)]

    async def writer(generation_id: UUID) -> None:
        for i in range(30):
            async with pool.acquire() as conn:
                await event_log.append(conn, generation_id, [delta(i)])

    await asyncio.gather(*(writer(g) for g in ids for _ in range(2)))
    for generation_id in ids:
        assert await all_seqs(pool, generation_id) == list(range(1, 62))


async def test_nothing_is_appended_after_the_terminal_event(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    done = NewEvent(EventType.SUCCEEDED, "done", 1.0, "done")
    async with pool.acquire() as conn:
        await event_log.append(conn, generation_id, [done])
        with pytest.raises(GenerationFinished):
            await event_log.append(conn, generation_id, [delta(1)])
        head = await event_log.select_head(conn, generation_id)
    assert head.last_seq == 2
    assert head.is_finished


async def test_append_to_an_unknown_generation_is_not_found(pool: Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(NotFound):
            await event_log.append(conn, uuid4(), [delta(1)])


async def test_a_live_keys_owner_and_the_runs_head_come_back_in_one_read(pool: Pool) -> None:
    key = await keys.create_key(pool, "alice", quotas=keys.Quotas(max_streams=3))
    caller = await keys.authenticate(pool, key)
    generation_id = await new_generation(pool)
    async with pool.acquire() as conn:
        await event_log.append(conn, generation_id, [delta(1), delta(2)])
        found = await event_log.select_key_and_head(conn, caller.key_id, generation_id)
        assert found == (caller, await event_log.select_head(conn, generation_id))
        assert found is not None
        assert found[1].last_seq == 3
        with pytest.raises(NotFound):
            await event_log.select_key_and_head(conn, caller.key_id, uuid4())
        assert await event_log.select_key_and_head(conn, uuid4(), generation_id) is None
    await keys.revoke_key(pool, caller.key_id)
    async with pool.acquire() as conn:
        assert await event_log.select_key_and_head(conn, caller.key_id, generation_id) is None
        assert await event_log.select_key_and_head(conn, caller.key_id, uuid4()) is None


async def test_a_head_read_for_an_owner_is_of_their_run_alone(pool: Pool) -> None:
    """A stream opened with a key reads the head and checks the owner in one statement:
    someone else's run is as missing as one that never was (a 404, never a 403)."""
    generation_id = await new_generation(pool, owner="alice")
    async with pool.acquire() as conn:
        await event_log.append(conn, generation_id, [delta(1)])
        head = await event_log.select_head(conn, generation_id, "alice")
        assert head == await event_log.select_head(conn, generation_id)
        assert head.last_seq == 2
        with pytest.raises(NotFound):
            await event_log.select_head(conn, generation_id, "bob")
        with pytest.raises(NotFound):
            await event_log.select_head(conn, uuid4(), "alice")


async def test_files_are_stored_in_the_same_transaction_as_their_event(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    file = NewFile("app/models/user.py", "class User: ...\n", "python")
    async with pool.acquire() as conn:
        await event_log.append(conn, generation_id, [delta(1), file.saved("models", 0.5)], [file])
        files = await generations.select_files(conn, "alice", generation_id)
    assert [(f.path, f.size, f.sha256, f.seq) for f in files] == [
        (file.path, file.size, file.sha256, 3)
    ]


async def test_a_failed_append_leaves_no_trace(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    file = NewFile("a.py", "x = 1\n", "python")
    async with pool.acquire() as conn:
        with pytest.raises(ValueError, match=r"no file\.saved event"):
            await event_log.append(conn, generation_id, [delta(1)], [file])
    assert await all_seqs(pool, generation_id) == [1]


async def test_append_notifies_with_generation_and_last_seq_only(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    received: asyncio.Queue[object] = asyncio.Queue()

    def on_notify(*args: object) -> None:
        received.put_nowait(args[3])

    async with pool.acquire() as listener:
        await listener.add_listener(event_log.EVENTS_CHANNEL, on_notify)
        try:
            async with pool.acquire() as conn:
                await event_log.append(conn, generation_id, [delta(1), delta(2)])
            payload = await asyncio.wait_for(received.get(), 5)
        finally:
            await listener.remove_listener(event_log.EVENTS_CHANNEL, on_notify)
    assert payload == f"{generation_id}:3"
    assert event_log.parse_notification(str(payload)) == (generation_id, 3)


def test_the_append_uses_every_parameter_of_its_record_and_no_other() -> None:
    numbers = {int(n) for n in re.findall(r"\$(\d+)", event_log.INSERT_EVENTS)}
    assert numbers == set(range(1, len(event_log.AppendParameters._fields) + 1))
    outside_literals = re.sub(r"'(?:[^']|'')*'", "''", event_log.INSERT_EVENTS)
    assert re.search(r"(?<!:):\w", outside_literals) is None  # no name left unnumbered


AN_ID = UUID("3e9a1c47-8b2d-4f60-a5e3-71c0d9b24f86")  # fixed: the same test ids in every worker


@pytest.mark.parametrize(
    "payload",
    ["", ":", ":3", "garbage", "not-a-uuid:3", "12345:6", "\x00", f"{AN_ID}:", f"{AN_ID}:-1"],
)
def test_parse_notification_rejects_garbage(payload: str) -> None:
    assert event_log.parse_notification(payload) is None


async def test_last_seqs_are_those_of_the_generation_rows(pool: Pool) -> None:
    first, second = await new_generation(pool), await new_generation(pool)
    async with pool.acquire() as conn:
        await event_log.append(conn, first, [delta(1), delta(2)])
        last_seqs = await event_log.select_last_seqs(conn, [first, second, uuid4()])
    assert last_seqs == {first: 3, second: 1}


async def test_generations_ahead_are_those_whose_log_went_past_the_seq_seen(pool: Pool) -> None:
    first, second, third = [await new_generation(pool) for _ in range(3)]
    async with pool.acquire() as conn:
        await event_log.append(conn, first, [delta(1), delta(2)])  # last seq 3
        await event_log.append(conn, second, [delta(1)])  # last seq 2
        ahead = await event_log.select_generations_ahead(
            conn, [(first, 2), (second, 2), (third, 0), (uuid4(), 0)]
        )
    assert sorted(ahead) == sorted([first, third])


async def test_keyset_pages_cover_the_log_exactly_once(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    async with pool.acquire() as conn:
        await event_log.append(conn, generation_id, [delta(i) for i in range(20)])
        seen: list[int] = []
        after = 0
        while page := await event_log.select_events_after(conn, generation_id, after, 7):
            seen.extend(e.seq for e in page)
            after = page[-1].seq
    assert seen == list(range(1, 22))


# -- idempotency keys, fencing, run state, and an ambiguous COMMIT -----------------------------


async def claimed_by(pool: Pool, worker: str, lease_s: float = 60.0) -> generations.Claimed:
    async with pool.acquire() as conn:
        claimed = await generations.claim_next(conn, worker, lease_s)
    assert claimed is not None
    return claimed


async def test_an_append_retried_with_the_same_keys_is_stored_once(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    keys = ["1.1.0", "1.1.1"]
    async with pool.acquire() as conn:
        first = await event_log.append(conn, generation_id, [delta(1), delta(2)], keys=keys)
        again = await event_log.append(conn, generation_id, [delta(1), delta(2)], keys=keys)
        head = await event_log.select_head(conn, generation_id)
    assert first.last_seq == 3
    assert again.last_seq == 3
    assert head.last_seq == 3
    assert await all_seqs(pool, generation_id) == [1, 2, 3]


async def test_a_batch_sharing_any_key_with_a_stored_batch_counts_as_stored(pool: Pool) -> None:
    """The batch is one transaction: one of its keys in the log means all of it is."""
    generation_id = await new_generation(pool)
    async with pool.acquire() as conn:
        await event_log.append(conn, generation_id, [delta(1), delta(2)], keys=["a", "b"])
        overlapping = await event_log.append(
            conn, generation_id, [delta(2), delta(3)], keys=["b", "c"]
        )
        fresh = await event_log.append(conn, generation_id, [delta(4)], keys=["d"])
        events = await event_log.select_events_after(conn, generation_id, 0, 100)
    assert overlapping.last_seq == 3
    assert fresh.last_seq == 4
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [json.loads(e.json)["data"] for e in events[1:]] == [{"n": 1}, {"n": 2}, {"n": 4}]


async def test_the_same_keys_on_another_generation_are_a_different_batch(pool: Pool) -> None:
    one, other = await new_generation(pool), await new_generation(pool)
    async with pool.acquire() as conn:
        await event_log.append(conn, one, [delta(1)], keys=["1.1.0"])
        appended = await event_log.append(conn, other, [delta(1)], keys=["1.1.0"])
    assert appended.last_seq == 2
    assert await all_seqs(pool, other) == [1, 2]


async def test_an_append_fenced_by_the_current_attempt_is_stored(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    claimed = await claimed_by(pool, "worker-a")
    assert (claimed.id, claimed.attempt) == (generation_id, 1)
    async with pool.acquire() as conn:
        appended = await event_log.append(conn, generation_id, [delta(1)], fence=1)
    assert appended.last_seq == 2


async def test_an_append_fenced_by_an_older_attempt_raises_lease_lost_and_stores_nothing(
    pool: Pool,
) -> None:
    generation_id = await new_generation(pool)
    old = await claimed_by(pool, "worker-a", lease_s=0.0)
    new = await claimed_by(pool, "worker-b")  # A's lease ran out at once: B takes over
    assert (old.attempt, new.attempt) == (1, 2)
    fenced = metrics.APPENDS_FENCED.value("lease_lost")
    async with pool.acquire() as conn:
        with pytest.raises(LeaseLost):
            await event_log.append(conn, generation_id, [delta(1), delta(2)], fence=old.attempt)
        assert metrics.APPENDS_FENCED.value("lease_lost") - fenced == 1
        head = await event_log.select_head(conn, generation_id)
        await event_log.append(conn, generation_id, [delta(3)], fence=new.attempt)
    assert head.last_seq == 1
    assert head.attempt == 2
    assert await all_seqs(pool, generation_id) == [1, 2]


async def test_a_fenced_append_after_the_terminal_event_raises_generation_finished(
    pool: Pool,
) -> None:
    generation_id = await new_generation(pool)
    claimed = await claimed_by(pool, "worker-a")
    done = NewEvent(EventType.SUCCEEDED, "done", 1.0, "done")
    async with pool.acquire() as conn:
        await event_log.append(conn, generation_id, [done], fence=claimed.attempt)
        with pytest.raises(GenerationFinished):
            await event_log.append(conn, generation_id, [delta(1)], fence=claimed.attempt)
    assert await all_seqs(pool, generation_id) == [1, 2]


async def test_run_state_lists_completed_phases_in_order_and_exactly_their_files(
    pool: Pool,
) -> None:
    generation_id = await new_generation(pool)
    core = NewFile("pyproject.toml", "[project]\n", "toml")
    model = NewFile("app/models/user.py", "class User: ...\n", "python")
    async with pool.acquire() as conn:
        before = await event_log.select_run_state(conn, generation_id)
        await event_log.append(
            conn, generation_id, [NewEvent(EventType.STARTED, "starting", 0.0, "Started")]
        )
        for stage, file in (("core", core), ("models", model)):
            await event_log.append(
                conn,
                generation_id,
                [
                    NewEvent(EventType.PHASE_STARTED, stage, 0.1, f"{stage} starts"),
                    file.saved(stage, 0.2),
                    NewEvent(EventType.PHASE_COMPLETED, stage, 0.3, f"{stage} done"),
                ],
                [file],
            )
        await event_log.append(
            conn, generation_id, [NewEvent(EventType.PHASE_STARTED, "api", 0.4, "api starts")]
        )
        state = await event_log.select_run_state(conn, generation_id)
    assert before == event_log.RunState(started=False, completed_stages=(), files={})
    assert state.started is True
    assert state.completed_stages == ("core", "models")
    assert state.files == {core.path: core.content, model.path: model.content}


async def test_an_append_whose_commit_outcome_was_lost_is_retried_and_stored_once(
    pool: Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first append really commits, then its backend is killed before the worker hears
    back: the emitter sees a real connection error, retries with the same keys, and the log
    holds the batch once."""
    generation_id = await new_generation(pool)
    claimed = await claimed_by(pool, "worker-a")
    real_append = event_log.append
    calls: list[int] = []
    killed_pids: list[int] = []

    async def append_then_lose_the_connection(
        conn: Connection, *args: Any, **kwargs: Any
    ) -> event_log.Appended:
        appended = await real_append(conn, *args, **kwargs)
        calls.append(appended.last_seq)
        if len(calls) == 1:
            pid = conn.get_server_pid()
            admin = await asyncpg.connect(asyncpg_dsn(database_url))
            try:
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await admin.close()
            killed_pids.append(pid)
            # Let the driver take in the FATAL and the EOF (a query issued between the two
            # meets asyncpg's InternalClientError instead), then hear of the dead backend.
            async with asyncio.timeout(5):
                while not conn.is_closed():
                    await asyncio.sleep(0.01)
            await conn.fetchval("SELECT 1")
            raise AssertionError("the terminated backend still answered")
        return appended

    monkeypatch.setattr(event_log, "append", append_then_lose_the_connection)
    emitter = LogEmitter(pool, claimed, retry_s=10.0)
    files = [NewFile("a.py", "a = 1\n", "python")]
    async with asyncio.timeout(15):
        await emitter.emit(delta(1), files[0].saved("core", 0.5), delta(2), files=files)
        await emitter.emit(delta(3))
    monkeypatch.undo()

    assert len(killed_pids) == 1
    # The first call committed (seq 4), the retry found its keys and reported the same head.
    assert calls == [4, 4, 5]
    async with pool.acquire() as conn:
        events = await event_log.select_events_after(conn, generation_id, 0, 100)
        stored_files = await generations.select_files(conn, "alice", generation_id)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.type for e in events] == [
        "generation.queued", "llm.delta", "file.saved", "llm.delta", "llm.delta",
    ]  # fmt: skip
    assert [(f.path, f.seq) for f in stored_files] == [("a.py", 3)]


# --- the global feed ---------------------------------------------------------------------------


async def read_feed(pool: Pool, after: event_log.FeedPosition, limit: int = 1000) -> list[Any]:
    async with pool.acquire() as conn:
        return await event_log.select_feed(conn, after, limit)


async def test_the_feed_pages_through_every_generations_events_once_in_commit_safe_order(
    pool: Pool,
) -> None:
    first, second = await new_generation(pool), await new_generation(pool)
    async with pool.acquire() as conn:
        await event_log.append(conn, first, [delta(1), delta(2)])
        await event_log.append(conn, second, [delta(3)])
        await event_log.append(conn, first, [delta(4)])
    seen: list[tuple[UUID, int]] = []
    position = event_log.FeedPosition()
    while page := await read_feed(pool, position, limit=2):
        for event in page:
            body = json.loads(event.json)
            assert (UUID(body["generation_id"]), body["seq"]) == (
                event.position.generation_id,
                event.position.seq,
            )
            seen.append((event.position.generation_id, event.position.seq))
        position = page[-1].position
    mine = [pair for pair in seen if pair[0] in (first, second)]
    assert sorted(mine) == sorted(
        [(first, 1), (first, 2), (first, 3), (first, 4), (second, 1), (second, 2)]
    )
    assert len(seen) == len(set(seen))
    # Within one generation the feed keeps seq order (its appends commit in seq order).
    assert [seq for generation, seq in mine if generation == first] == [1, 2, 3, 4]


async def test_an_event_committed_behind_a_running_transaction_waits_for_it(
    pool: Pool,
) -> None:
    slow, fast = await new_generation(pool), await new_generation(pool)
    start = await read_feed(pool, event_log.FeedPosition())
    position = start[-1].position if start else event_log.FeedPosition()
    async with pool.acquire() as slow_conn:
        transaction = slow_conn.transaction()
        await transaction.start()
        await event_log.append(slow_conn, slow, [delta(1)])  # an older transaction id...
        async with pool.acquire() as fast_conn:
            await event_log.append(fast_conn, fast, [delta(2)])  # ...committed after a newer
        held = await read_feed(pool, position)
        await transaction.commit()
    released = await read_feed(pool, position)

    assert (fast, 2) not in [(e.position.generation_id, e.position.seq) for e in held]
    order = [(e.position.generation_id, e.position.seq) for e in released]
    assert order.index((slow, 2)) < order.index((fast, 2))


async def test_a_reader_tailing_racing_writers_sees_every_event_exactly_once(
    pool: Pool,
) -> None:
    generation_ids = [await new_generation(pool) for _ in range(6)]
    start = await read_feed(pool, event_log.FeedPosition())
    position = start[-1].position if start else event_log.FeedPosition()
    writing = True

    async def writer(generation_id: UUID, salt: int) -> None:
        for n in range(25):
            async with pool.acquire() as conn, conn.transaction():
                await event_log.append(conn, generation_id, [delta(n)])
                # Commit late, at random: transactions finish out of their id order.
                await asyncio.sleep(((n * 7 + salt * 13) % 5) / 500)

    seen: list[tuple[UUID, int]] = []

    async def reader() -> None:
        nonlocal position
        while True:
            done = not writing
            page = await read_feed(pool, position, limit=7)
            seen.extend((e.position.generation_id, e.position.seq) for e in page)
            if page:
                position = page[-1].position
            elif done:
                return
            await asyncio.sleep(0.001)

    tailing = asyncio.ensure_future(reader())
    await asyncio.gather(*(writer(g, k) for k, g in enumerate(generation_ids)))
    writing = False
    await asyncio.wait_for(tailing, 30)

    expected = {(g, seq) for g in generation_ids for seq in range(2, 27)}
    mine = [pair for pair in seen if pair[0] in set(generation_ids)]
    assert len(mine) == len(set(mine))  # never twice
    assert set(mine) == expected  # never skipped


# --- many generations' appends in one statement ------------------------------------------------


def script(n: int) -> list[tuple[list[NewEvent], list[NewFile]]]:
    """The batches of generation ``n`` of a group test, round by round: deltas, a phase with
    files, one of those files again (replaced), then an end (succeeded, or failed with an
    error); odd generations carry on with more deltas where even ones end early."""
    first = [NewFile(f"app/m{n}_{i}.py", f"X = {n * 10 + i}\n", "python") for i in range(2)]
    again = NewFile(first[0].path, f"X = 'replaced {n}'\n", "python")
    rounds: list[tuple[list[NewEvent], list[NewFile]]] = [
        ([delta(n * 100 + i) for i in range(1 + n % 3)], []),
        ([f.saved("models", 0.6) for f in first] + [delta(n)], first),
        ([again.saved("models", 0.7)], [again]),
    ]
    if n % 2:
        rounds.append(([delta(n * 1000 + i) for i in range(4)], []))
        rounds.append(([NewEvent(EventType.FAILED, "api", 0.8, "Failed", {"error": f"e{n}"})], []))
    else:
        rounds.append(([delta(n), NewEvent(EventType.SUCCEEDED, "done", 1.0, "Done")], []))
    return rounds


async def written(pool: Pool, generation_id: UUID) -> dict[str, Any]:
    """What an append writes for a run, all but what differs between any two runs (their ids,
    clocks and transactions): the events' columns and the files, in order; the chain is
    checked where it stands (``assert_chained``)."""
    async with pool.acquire() as conn:
        events = await conn.fetch(
            "SELECT seq, type, status, stage, progress, message, payload::text AS payload,"
            " idempotency_key, owner, redacted_at FROM generation_events"
            " WHERE generation_id = $1 ORDER BY seq",
            generation_id,
        )
        files = await conn.fetch(
            "SELECT path, content, size, sha256, language, seq, redacted_at"
            " FROM generated_files WHERE generation_id = $1 ORDER BY path",
            generation_id,
        )
        row = await conn.fetchrow(
            "SELECT status, stage, progress, message, error, last_seq, attempt,"
            " started_at IS NOT NULL AS started, finished_at IS NOT NULL AS finished,"
            " finished_at >= started_at AS in_order, updated_at >= created_at AS updated"
            " FROM generations WHERE id = $1",
            generation_id,
        )
    rows = [dict(event) for event in events]
    for event in rows:  # a terminal event's chain_hash is its run's own (checked elsewhere)
        payload = json.loads(event["payload"])
        if "chain_hash" in payload:
            payload["chain_hash"] = "its run's"
            event["payload"] = json.dumps(payload)
    return {"events": rows, "files": [dict(f) for f in files], "row": dict(row or {})}


async def assert_chained(pool: Pool, generation_id: UUID) -> None:
    """Each event's chain is the one a reader computes from the text it receives, and the
    terminal event's data names the chain before it and the count."""
    events = await stored_events(pool, generation_id)
    chain = ZERO_CHAIN
    for event in events:
        previous, chain = chain, chain_after(chain, event.json)
        body = json.loads(event.json)
        assert body["chain"] == chain, (generation_id, event.seq)
        if event.is_terminal:
            assert body["data"]["chain_hash"] == previous
            assert body["data"]["count"] == event.seq


async def test_append_many_writes_what_appending_each_alone_writes(pool: Pool) -> None:
    """Round by round, four runs appended one statement each time, and four twins appended
    one at a time: chains go on across batches, files are replaced, runs end (one failed with
    its error); every column that does not name a run or a clock is the same."""
    alone = [await new_generation(pool) for _ in range(4)]
    grouped = [await new_generation(pool) for _ in range(4)]
    scripts = [script(n) for n in range(4)]
    for rnd in range(max(len(s) for s in scripts)):
        async with pool.acquire() as conn:
            batches = [
                (n, *scripts[n][rnd], [f"k{n}.{rnd}.{i}" for i in range(len(scripts[n][rnd][0]))])
                for n in range(4)
                if rnd < len(scripts[n])
            ]
            singles = [
                await event_log.append(conn, alone[n], events, files, fence=0, keys=keys)
                for n, events, files, keys in batches
            ]
            many = await event_log.append_many(
                conn,
                [
                    event_log.prepare(grouped[n], events, files, fence=0, keys=keys)
                    for n, events, files, keys in batches
                ],
            )
        assert many == singles
    for n, (single, member) in enumerate(zip(alone, grouped, strict=True)):
        same = await written(pool, single)
        assert await written(pool, member) == same
        assert [e["seq"] for e in same["events"]] == list(range(1, same["row"]["last_seq"] + 1))
        assert len(same["files"]) == 2
        assert same["files"][0]["content"] == f"X = 'replaced {n}'\n"
        assert same["row"]["status"] == ("failed" if n % 2 else "succeeded")
        assert same["row"]["error"] == (f"e{n}" if n % 2 else None)
        assert same["events"][-1]["idempotency_key"] is not None
        await assert_chained(pool, member)
    async with pool.acquire() as conn:
        check = await event_log.check_chains(conn, alone + grouped)
    assert check.breaks == []
    assert check.generations == 8


async def test_append_many_refuses_a_lost_fence_a_finished_run_and_a_missing_one_alone(
    pool: Pool,
) -> None:
    held, lost, finished, other = [await new_generation(pool) for _ in range(4)]
    missing = uuid4()
    async with pool.acquire() as conn:
        await conn.execute("UPDATE generations SET attempt = 3 WHERE id = ANY($1)", [held, lost])
        await event_log.append(conn, finished, [NewEvent(EventType.SUCCEEDED, "done", 1.0, "ok")])
        fenced = (
            metrics.APPENDS_FENCED.value("lease_lost"),
            metrics.APPENDS_FENCED.value("finished"),
        )
        notifies = metrics.NOTIFIES_SENT.value()
        outcomes = await event_log.append_many(
            conn,
            [
                event_log.prepare(held, [delta(1), delta(2)], fence=3),
                event_log.prepare(lost, [delta(1)], fence=2),
                event_log.prepare(finished, [delta(1)]),
                event_log.prepare(missing, [delta(1)]),
                event_log.prepare(other, [delta(1)]),
            ],
        )
    assert outcomes[0] == event_log.Appended(last_seq=3, cancel_requested=False)
    assert isinstance(outcomes[1], LeaseLost)
    assert isinstance(outcomes[2], GenerationFinished)
    assert isinstance(outcomes[3], NotFound)
    assert outcomes[4] == event_log.Appended(last_seq=2, cancel_requested=False)
    assert metrics.APPENDS_FENCED.value("lease_lost") - fenced[0] == 1
    assert metrics.APPENDS_FENCED.value("finished") - fenced[1] == 1
    assert metrics.NOTIFIES_SENT.value() - notifies == 2
    assert await all_seqs(pool, held) == [1, 2, 3]
    assert await all_seqs(pool, lost) == [1]
    assert await all_seqs(pool, finished) == [1, 2]
    assert await all_seqs(pool, other) == [1, 2]


async def test_append_many_keeps_an_error_reading_a_refusal_to_that_append(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the commit, a failed read of why one append was refused is that append's: the
    others were stored and are told so (and counted), not sent again."""
    lost, stored_after = await new_generation(pool), await new_generation(pool)
    stored_before = await new_generation(pool)

    async def failing_refusal(*_: object) -> Exception:
        raise RuntimeError("the read of the refused row failed")

    monkeypatch.setattr(event_log, "_refusal", failing_refusal)
    notifies = metrics.NOTIFIES_SENT.value()
    async with pool.acquire() as conn:
        outcomes = await event_log.append_many(
            conn,
            [
                event_log.prepare(stored_before, [delta(1)]),
                event_log.prepare(lost, [delta(1)], fence=7),
                event_log.prepare(stored_after, [delta(1)]),
            ],
        )
    assert outcomes[0] == event_log.Appended(last_seq=2, cancel_requested=False)
    assert isinstance(outcomes[1], StoreUnavailable)
    assert outcomes[2] == event_log.Appended(last_seq=2, cancel_requested=False)
    assert metrics.NOTIFIES_SENT.value() - notifies == 2
    assert await all_seqs(pool, lost) == [1]


async def test_append_many_says_a_cancel_was_asked_of_the_run_that_was_asked(pool: Pool) -> None:
    asked, not_asked = await new_generation(pool), await new_generation(pool)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE generations SET cancel_requested_at = clock_timestamp() WHERE id = $1", asked
        )
        outcomes = await event_log.append_many(
            conn, [event_log.prepare(g, [delta(1)]) for g in (asked, not_asked)]
        )
    assert outcomes == [event_log.Appended(2, True), event_log.Appended(2, False)]


async def test_append_many_takes_each_generation_once(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    async with pool.acquire() as conn:
        with pytest.raises(ValueError, match="each generation once"):
            await event_log.append_many(
                conn, [event_log.prepare(generation_id, [delta(n)]) for n in (1, 2)]
            )
        assert await event_log.append_many(conn, []) == []
    assert await all_seqs(pool, generation_id) == [1]


async def test_a_stored_key_fails_the_whole_statement_and_stores_nothing_of_it(
    pool: Pool,
) -> None:
    """The caller's cue to append each alone (generation/appender.py), where ``append``
    recognises the stored batch."""
    replayed, fresh = await new_generation(pool), await new_generation(pool)
    async with pool.acquire() as conn:
        await event_log.append(conn, replayed, [delta(1)], keys=["1.1.0"])
        with pytest.raises(asyncpg.UniqueViolationError) as raised:
            await event_log.append_many(
                conn,
                [
                    event_log.prepare(fresh, [delta(1)], keys=["1.1.0"]),
                    event_log.prepare(replayed, [delta(1)], keys=["1.1.0"]),
                ],
            )
        assert (raised.value.constraint_name or "").endswith(event_log.IDEMPOTENCY_INDEX_SUFFIX)
        head = await event_log.select_head(conn, fresh)
    assert head.last_seq == 1
    assert await all_seqs(pool, fresh) == [1]


async def test_append_many_notifies_once_per_generation_stored(pool: Pool) -> None:
    ids = [await new_generation(pool) for _ in range(3)]
    received: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(*args: object) -> None:
        received.put_nowait(str(args[3]))

    async with pool.acquire() as listener:
        await listener.add_listener(event_log.EVENTS_CHANNEL, on_notify)
        try:
            async with pool.acquire() as conn:
                await event_log.append_many(
                    conn,
                    [
                        event_log.prepare(ids[0], [delta(1), delta(2)]),
                        event_log.prepare(ids[1], [delta(1)], fence=7),  # refused
                        event_log.prepare(ids[2], [delta(1)]),
                    ],
                )
                # A statement after it: its NOTIFY comes after the group's on the channel.
                await event_log.append(conn, ids[1], [delta(1)])
            payloads = [await asyncio.wait_for(received.get(), 5) for _ in range(3)]
        finally:
            await listener.remove_listener(event_log.EVENTS_CHANNEL, on_notify)
    assert sorted(payloads[:2]) == sorted([f"{ids[0]}:3", f"{ids[2]}:2"])
    assert payloads[2] == f"{ids[1]}:2"


def test_append_many_uses_every_parameter_of_its_record_and_no_other() -> None:
    numbers = {int(n) for n in re.findall(r"\$(\d+)", event_log.APPEND_MANY)}
    assert numbers == set(range(1, len(event_log.ManyParameters._fields) + 1))
    uncommented = re.sub(r"--[^\n]*", "", event_log.APPEND_MANY)
    outside_literals = re.sub(r"'(?:[^']|'')*'", "''", uncommented)
    assert re.search(r"(?<!:):\w", outside_literals) is None


ROUNDS = 300


async def test_append_many_and_lease_renewals_over_the_same_runs_never_deadlock(
    pool: Pool,
) -> None:
    """A worker renews its runs' leases in one statement while its appender commits a group
    of the same runs: both lock the rows in id order, so neither waits for the other in a
    cycle (a deadlock would fail one of them after deadlock_timeout)."""
    runs = []
    async with pool.acquire() as conn:
        for _ in range(6):
            await new_generation(pool)
            claimed = await generations.claim_next(conn, "w", 60)
            assert claimed is not None
            runs.append(claimed.id)

    async def appends() -> None:
        async with pool.acquire() as conn:
            await conn.execute("SET enable_seqscan = off")  # as on a table of many runs
            try:
                for rnd in range(ROUNDS):
                    order = runs if rnd % 2 else runs[::-1]
                    many = await event_log.append_many(
                        conn, [event_log.prepare(run, [delta(rnd)], fence=1) for run in order]
                    )
                    assert all(isinstance(one, event_log.Appended) for one in many)
            finally:
                await conn.execute("RESET enable_seqscan")

    async def renewals() -> None:
        async with pool.acquire() as conn:
            await conn.execute("SET enable_seqscan = off")
            try:
                for rnd in range(ROUNDS):
                    order = runs[::-1] if rnd % 2 else runs
                    held = await generations.renew_leases(conn, "w", 60, order)
                    assert held == set(runs)
            finally:
                await conn.execute("RESET enable_seqscan")

    await asyncio.gather(appends(), renewals())
    assert [await all_seqs(pool, run) for run in runs] == [list(range(1, ROUNDS + 2))] * 6


async def test_the_appenders_statements_wait_briefly_for_rows_only(pool: Pool) -> None:
    """Their lock_timeout is set back to none once their rows are locked: waits after that
    (a partition being made, the notify lock at COMMIT behind a slow WAL flush) are no held
    row, and must not fail statements that have done their work."""
    one, other = await new_generation(pool), await new_generation(pool)
    async with pool.acquire() as conn, conn.transaction():
        await event_log.append_prepared(
            conn, event_log.prepare(one, [delta(1)]), briefly=True, traced=False
        )
        assert await conn.fetchval("SHOW lock_timeout") == "0"
        await conn.execute("SET LOCAL lock_timeout = '7s'")
        await event_log.append_many(
            conn, [event_log.prepare(run, [delta(2)]) for run in (one, other)]
        )
        assert await conn.fetchval("SHOW lock_timeout") == "0"
    assert await all_seqs(pool, one) == [1, 2, 3]
    assert await all_seqs(pool, other) == [1, 2]
