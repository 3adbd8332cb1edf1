from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from service.store.db import Pool
from tests.conftest import AppFactory, KeyFactory, RunningApp, free_socket
from tests.helpers import (
    SPEC,
    create_via_api,
    events_via_api,
    insert_running_generation,
    wait_for_status,
)


async def test_stats_count_the_callers_generations_only_with_their_timings_and_tokens(
    app_factory: AppFactory, make_key: KeyFactory
) -> None:
    alice, bob = await make_key("alice"), await make_key("bob")
    async with app_factory() as running:
        async with running.client(alice) as client:
            empty = (await client.get("/api/stats")).json()
            ids = [
                (await client.post("/api/generations", json={"spec": SPEC})).json()["id"]
                for _ in range(2)
            ]
            async with asyncio.timeout(30):
                for generation_id in ids:
                    while (await client.get(f"/api/generations/{generation_id}")).json()[
                        "status"
                    ] != "succeeded":
                        await asyncio.sleep(0.02)
            mine = await client.get("/api/stats")
        async with running.client(bob) as client:
            theirs = (await client.get("/api/stats")).json()
        async with running.client() as client:
            anonymous = await client.get("/api/stats")

    assert empty["generations"]["total"] == 0
    assert empty["duration_s"] == {"p50": None, "p95": None}
    assert empty["to_first_event_s"] == {"p50": None, "p95": None}
    assert empty["to_first_file_s"] == {"p50": None, "p95": None}
    assert empty["tokens_by_model"] == []
    assert len(empty["days"]) == 30
    assert all(day["total"] == 0 and day["p50_duration_s"] is None for day in empty["days"])
    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert body["generations"] == {
        "total": 2, "succeeded": 2, "failed": 0, "cancelled": 0, "in_progress": 0,
    }  # fmt: skip
    assert 0 < body["duration_s"]["p50"] <= body["duration_s"]["p95"]
    assert 0 <= body["to_first_event_s"]["p50"] <= body["to_first_file_s"]["p50"]
    assert body["to_first_event_s"]["p50"] <= body["to_first_event_s"]["p95"]
    assert body["to_first_file_s"]["p50"] <= body["to_first_file_s"]["p95"]
    assert body["to_first_file_s"]["p50"] <= body["duration_s"]["p95"]
    assert body["tokens"]["prompt"] > 0
    assert body["tokens"]["output"] > 0
    assert body["recoveries"] == {
        "resumed": 0,
        "phase_retry": 0,
        "repair": 0,
        "retried": 0,
        "failed": 0,
    }
    assert theirs["generations"]["total"] == 0
    assert anonymous.status_code == 401


# --- the last N days and the tokens per model ------------------------------------------------


def percentile_cont(values: list[float], fraction: float) -> float:
    """PostgreSQL's ``percentile_cont``: linear interpolation between the two nearest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


async def duration_s(client: httpx.AsyncClient, generation_id: str) -> float:
    """Seconds from a run's creation to its terminal event, as its state and log say."""
    state = (await client.get(f"/api/generations/{generation_id}")).json()
    last = (await events_via_api(client, generation_id))[-1]
    ended = datetime.fromisoformat(last["timestamp"]) - datetime.fromisoformat(state["created_at"])
    return ended.total_seconds()


async def stats(running: RunningApp, key: str, **params: Any) -> dict[str, Any]:
    async with running.client(key) as client:
        response = await client.get("/api/stats", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_each_day_of_the_last_n_counts_the_callers_runs_by_outcome(
    app_factory: AppFactory, make_key: KeyFactory, pool: Pool
) -> None:
    alice, bob = await make_key("alice"), await make_key("bob")
    closed = free_socket()  # a Gemini endpoint that refuses every connection: that run fails
    unreachable = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    before = datetime.now(UTC).date()
    async with app_factory(worker_concurrency=0) as running:
        async with running.client(alice) as client:
            cancelled = (await create_via_api(client))["id"]
            assert (await client.post(f"/api/generations/{cancelled}/cancel")).status_code < 300
        async with running.client(bob) as client:
            await create_via_api(client)
    async with app_factory(
        gemini_api_key=SecretStr("test-key"), gemini_base_url=unreachable, gemini_attempts=1
    ) as running:
        async with running.client(alice) as client:
            succeeded = [(await create_via_api(client))["id"] for _ in range(2)]
            failed = (await create_via_api(client, provider="gemini"))["id"]
            for generation_id in succeeded:
                await wait_for_status(client, generation_id, "succeeded")
            await wait_for_status(client, failed, "failed")
            await insert_running_generation(pool, "alice")
            durations = [await duration_s(client, id_) for id_ in (*succeeded, failed, cancelled)]
        week = await stats(running, alice, days=7)
        month = await stats(running, alice)
        year = await stats(running, alice, days=366)
        one = await stats(running, alice, days=1)
        theirs = await stats(running, bob, days=7)
    after = datetime.now(UTC).date()

    today = week["days"][-1]
    assert date.fromisoformat(today["day"]) in (before, after)
    for body, n in ((week, 7), (month, 30), (year, 366), (one, 1)):
        days = [date.fromisoformat(entry["day"]) for entry in body["days"]]
        assert days == [days[-1] - timedelta(days=n - 1 - i) for i in range(n)]
        assert body["days"][-1] == today
    assert today == {
        "day": today["day"], "total": 5, "succeeded": 2, "failed": 1, "cancelled": 1,
        "in_progress": 1,
        "p50_duration_s": pytest.approx(percentile_cont(durations, 0.5), abs=1e-6),
        "p95_duration_s": pytest.approx(percentile_cont(durations, 0.95), abs=1e-6),
    }  # fmt: skip
    for earlier in week["days"][:-1]:
        assert earlier == {
            "day": earlier["day"], "total": 0, "succeeded": 0, "failed": 0, "cancelled": 0,
            "in_progress": 0, "p50_duration_s": None, "p95_duration_s": None,
        }  # fmt: skip
    # Every run is today's: the all-time numbers are today's.
    assert week["generations"] == {key: today[key] for key in week["generations"]}
    assert week["duration_s"] == {"p50": today["p50_duration_s"], "p95": today["p95_duration_s"]}
    assert week["to_first_event_s"]["p50"] <= week["to_first_event_s"]["p95"]
    assert week["recoveries"]["failed"] == 1

    # Only the offline runs completed phases: one provider, no model named.
    (offline,) = week["tokens_by_model"]
    assert offline["provider"] == "offline"
    assert offline["phases"] > 0
    for kind in ("prompt", "output"):
        assert sum(row[kind] for row in week["tokens_by_model"]) == week["tokens"][kind] > 0

    assert theirs["generations"]["total"] == 1
    assert [entry["total"] for entry in theirs["days"]] == [0] * 6 + [1]


@pytest.mark.parametrize("days", ["0", "367", "-1", "ten", "1.5", "", "9" * 30])
async def test_days_out_of_range_or_not_an_integer_is_400(
    running: RunningApp, api_key: str, days: str
) -> None:
    async with running.client(api_key) as client:
        response = await client.get("/api/stats", params={"days": days})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/")
    body = response.json()
    assert body["status"] == 400
    assert "days" in body["detail"]
