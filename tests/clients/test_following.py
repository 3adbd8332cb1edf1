"""``follow``'s promises, against a fake server over real HTTP that breaks them on purpose:
no seq skipped or repeated whatever the stream sends, the server's retry hint and Retry-After
honoured, a refused token replaced, the typed errors raised with the server's message."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from genstream_client import (
    AsyncGenstream,
    Event,
    InvalidRequest,
    NotFound,
    ProtocolError,
    Unauthorized,
    following,
)

from tests.clients.fake_genstream import (
    GENERATION_ID,
    KEY,
    Answer,
    FakeGenstream,
    event_json,
    frame,
    run_of,
)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, int, float | None]]:
    """Every wait ``follow`` decides on (retry_s, failures in a row, Retry-After); each made
    a hundredth of a second so that the tests run at once."""
    decided: list[tuple[float, int, float | None]] = []

    def spy(retry_s: float, failures: int, retry_after: float | None = None) -> float:
        decided.append((retry_s, failures, retry_after))
        return 0.01

    monkeypatch.setattr(following, "reconnect_delay", spy)
    return decided


async def follow_all(fake: FakeGenstream, after: int | None = None) -> list[Event]:
    async with AsyncGenstream(fake.base_url, KEY) as client:
        return [event async for event in client.follow(GENERATION_ID, after)]


def seqs(events: list[Event]) -> list[int]:
    return [event.seq for event in events]


@pytest.fixture
async def fake() -> AsyncIterator[FakeGenstream]:
    async with FakeGenstream(run_of(6)) as fake:
        yield fake


async def test_a_correct_stream_is_followed_to_its_terminal_event(fake: FakeGenstream) -> None:
    events = await follow_all(fake)
    assert seqs(events) == [1, 2, 3, 4, 5, 6]
    assert [event.raw for event in events] == fake.events
    assert events[-1].type == "generation.succeeded"
    assert events[-1].is_terminal
    (stream,) = fake.streams()
    assert stream.query == {"token": "token-1"}
    assert "authorization" not in stream.headers, "the key never goes to the stream"
    assert "last-event-id" not in stream.headers


async def test_a_skipped_seq_is_filled_from_the_events_endpoint_in_order(
    fake: FakeGenstream,
) -> None:
    e = fake.events
    fake.script(Answer(chunks=(frame(e[0]), frame(e[1]), frame(e[4]), frame(e[5]))))
    events = await follow_all(fake)
    assert seqs(events) == [1, 2, 3, 4, 5, 6]
    assert [event.raw for event in events] == fake.events  # filled ones keep their text too
    fill, end = [r for r in fake.requests if r.path.endswith("/events")]
    assert fill.query == {"after": "2", "limit": "2"}
    assert end.query == {"after": "6", "limit": "1"}, "is the terminal event the log's last?"
    assert fill.headers["authorization"] == f"Bearer {KEY}"


async def test_repeats_are_dropped_and_a_cut_stream_resumes_after_the_last_seq(
    fake: FakeGenstream, waits: list[tuple[float, int, float | None]]
) -> None:
    e = fake.events
    repeats = (frame(e[0]), frame(e[1]), frame(e[1]), frame(e[0]), frame(e[2]))
    fake.script(Answer(chunks=(b"retry: 250\n\n", *repeats, frame(e[3])[:20]), cut=True))
    events = await follow_all(fake)
    assert seqs(events) == [1, 2, 3, 4, 5, 6]
    first, second = fake.streams()
    assert "last-event-id" not in first.headers
    assert second.headers["last-event-id"] == "3"
    assert waits == [(0.25, 0, None)], "one wait: the stream's retry hint, no failure before"


async def test_a_stream_that_ends_before_the_terminal_event_is_reopened(
    fake: FakeGenstream, waits: list[tuple[float, int, float | None]]
) -> None:
    fake.script(Answer(chunks=(frame(fake.events[0]),)), Answer(chunks=(b": keepalive\n\n",)))
    events = await follow_all(fake)
    assert seqs(events) == [1, 2, 3, 4, 5, 6]
    assert [r.headers.get("last-event-id") for r in fake.streams()] == [None, "1", "1"]
    # The first wait follows an event (none failed in a row); the second, an empty stream.
    assert [failures for _, failures, _ in waits] == [0, 1]
    assert {retry_s for retry_s, _, _ in waits} == {following.DEFAULT_RETRY_S}


async def test_503_and_429_wait_their_retry_after_and_failures_in_a_row_back_off(
    fake: FakeGenstream, waits: list[tuple[float, int, float | None]]
) -> None:
    fake.script(
        Answer(503, detail="the database is unavailable", headers=(("Retry-After", "7"),)),
        Answer(429, detail="over the stream quota", headers=(("Retry-After", "3"),)),
        Answer(502, detail="bad gateway"),
    )
    events = await follow_all(fake)
    assert seqs(events) == [1, 2, 3, 4, 5, 6]
    assert waits == [(2.0, 0, 7.0), (2.0, 1, 3.0), (2.0, 2, None)]


async def test_a_refused_token_is_replaced_at_once_even_a_fresh_one(
    fake: FakeGenstream, waits: list[tuple[float, int, float | None]]
) -> None:
    fake.script(*[Answer(401, detail="stream token expired")] * following.TOKEN_REFUSALS_MAX)
    events = await follow_all(fake)
    assert seqs(events) == [1, 2, 3, 4, 5, 6]
    tokens = [f"token-{n}" for n in range(1, following.TOKEN_REFUSALS_MAX + 2)]
    assert [r.query["token"] for r in fake.streams()] == tokens
    assert waits == []


async def test_fresh_tokens_refused_again_and_again_raise_the_servers_401(
    fake: FakeGenstream,
) -> None:
    fake.script(
        *[Answer(401, detail="stream token expired")] * following.TOKEN_REFUSALS_MAX,
        Answer(401, detail="stream token is not valid for this generation"),
    )
    with pytest.raises(Unauthorized, match="not valid for this generation") as raised:
        await follow_all(fake)
    assert raised.value.status == 401
    assert raised.value.detail == "stream token is not valid for this generation"


async def test_a_key_refused_when_asking_for_a_token_raises_unauthorized(
    fake: FakeGenstream,
) -> None:
    async with AsyncGenstream(fake.base_url, "gsk_wrong") as client:
        with pytest.raises(Unauthorized, match="unknown API key"):
            await anext(client.follow(GENERATION_ID))
    assert fake.streams() == []


async def test_unknown_event_types_and_keys_are_yielded_not_refused(fake: FakeGenstream) -> None:
    newer = json.loads(event_json(2, "generation.paused", why="a newer server"))
    newer["region"] = "eu"  # a key of the envelope this client does not know
    fake.events[1] = json.dumps(newer, separators=(",", ":"))
    events = await follow_all(fake)
    assert seqs(events) == [1, 2, 3, 4, 5, 6]
    assert events[1].type == "generation.paused"
    assert events[1].data == {"why": "a newer server"}
    assert not events[1].is_terminal
    assert events[1].raw == fake.events[1]


async def test_after_the_last_event_the_204_ends_it_at_once_with_nothing(
    fake: FakeGenstream,
) -> None:
    assert await follow_all(fake, after=6) == []
    (stream,) = fake.streams()
    assert stream.headers["last-event-id"] == "6"


async def test_after_resumes_with_the_next_seq(fake: FakeGenstream) -> None:
    assert seqs(await follow_all(fake, after=4)) == [5, 6]


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (Answer(404, detail="no generation 3f0e"), NotFound, "no generation 3f0e"),
        (Answer(400, detail="Last-Event-ID must be..."), InvalidRequest, "Last-Event-ID must"),
    ],
)
async def test_fatal_answers_raise_their_typed_error_with_the_servers_detail(
    fake: FakeGenstream, answer: Answer, error: type[Exception], message: str
) -> None:
    fake.script(answer)
    with pytest.raises(error, match=message):
        await follow_all(fake)


async def test_a_malformed_event_is_a_protocol_error(fake: FakeGenstream) -> None:
    fake.script(Answer(chunks=(frame(fake.events[0]), b"id: 2\ndata: {not json\n\n")))
    with pytest.raises(ProtocolError, match="not an event"):
        await follow_all(fake)


async def test_a_hole_the_log_cannot_fill_is_a_protocol_error(fake: FakeGenstream) -> None:
    e = fake.events
    fake.script(Answer(chunks=(frame(e[0]), frame(e[3]))))
    del fake.events[1:3]  # the log itself lacks seq 2 and 3
    with pytest.raises(ProtocolError, match="cannot fill seq 2"):
        await follow_all(fake)


async def test_breaking_out_of_the_loop_closes_the_stream(fake: FakeGenstream) -> None:
    async with AsyncGenstream(fake.base_url, KEY) as client:
        events = client.follow(GENERATION_ID)
        async for event in events:
            assert event.seq == 1
            break
        await events.aclose()


def test_the_wait_is_the_hint_doubled_per_failure_capped_and_jittered_up_to_half() -> None:
    def delay(
        retry_s: float, failures: int, retry_after: float | None = None, *, rng: float
    ) -> float:
        return following.reconnect_delay(retry_s, failures, retry_after, rng=lambda: rng)

    assert delay(2.0, 0, rng=0.0) == 2.0
    assert delay(2.0, 0, rng=1.0) == 3.0
    assert delay(2.0, 2, rng=0.0) == 8.0
    assert delay(2.0, 40, rng=0.0) == following.BACKOFF_CAP_S
    assert delay(60.0, 3, rng=0.0) == 60.0, "never shorter than the server's hint"
    assert delay(2.0, 0, 30.0, rng=0.0) == 30.0, "at least Retry-After"
    assert delay(2.0, 0, 30.0, rng=1.0) == pytest.approx(33.0)
