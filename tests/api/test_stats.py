from __future__ import annotations

import asyncio

from tests.conftest import AppFactory, KeyFactory
from tests.helpers import SPEC


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
    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert body["generations"] == {
        "total": 2, "succeeded": 2, "failed": 0, "cancelled": 0, "in_progress": 0,
    }  # fmt: skip
    assert 0 < body["duration_s"]["p50"] <= body["duration_s"]["p95"]
    assert 0 <= body["to_first_event_s"]["p50"] <= body["to_first_file_s"]["p50"]
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
