"""``server.py``: what a serving process needs from the operating system, and logs with no
secret in them (the redaction itself: tests/observe/test_logs.py). How ``serve`` and
``worker`` start, stop and hand over runs is tested on real processes in test_processes.py and
test_faults.py; what a connection may cost, in test_connections.py."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import httpx
import pytest

from service.server import raise_open_file_limit
from tests.conftest import SpawnServe
from tests.helpers import API, SMALL_SPEC, create_via_api, wait_until
from tests.processes import terminate


@pytest.fixture
def file_limits() -> Iterator[tuple[int, int]]:
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield limits
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_the_open_file_limit_rises_to_the_hard_limit(file_limits: tuple[int, int]) -> None:
    _, hard = file_limits
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    soft = raise_open_file_limit()

    assert soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert soft == (hard if hard != resource.RLIM_INFINITY else 1 << 20)


async def test_serve_logs_no_stream_token_and_no_api_key(
    spawn_serve: SpawnServe, api_key: str
) -> None:
    process = await spawn_serve()
    async with process.client(api_key) as client:
        created = await create_via_api(client, SMALL_SPEC)
        stream = f"{API}/{created['id']}/stream"
        token = created["stream_token"]
        async with client.stream("GET", stream, params={"token": token}) as response:
            assert response.status_code == 200
        async with httpx.AsyncClient(base_url=process.base_url) as anonymous:
            refused = await anonymous.get(stream, params={"token": api_key})
            assert refused.status_code == 401
            assert (await anonymous.get(API, params={"api_key": api_key})).status_code == 401
        assert (await client.get(f"{API}/{api_key}")).status_code == 404

    def access_lines() -> list[str] | None:
        lines = [line for line in process.log().splitlines() if f"{API}" in line]
        return lines if len(lines) >= 5 else None

    lines = await wait_until(access_lines, "the access log of the five requests")
    await terminate(process.proc)

    log = process.log()
    assert token not in log
    assert token.split(".")[1] not in log
    assert api_key not in log
    assert api_key.removeprefix("gsk_") not in log
    assert sum("token=***" in line for line in lines) == 2
    assert any("api_key=***" in line for line in lines)
    assert any(f"{API}/gsk_***" in line for line in lines)
