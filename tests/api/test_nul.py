"""What every request must satisfy before a handler (or the static files) sees it: no NUL in
its path, query or headers. PostgreSQL stores no NUL in text and the file system takes none in
a name, so a NUL reaching either was a 500; here it is a 400 that names where it was."""

from __future__ import annotations

from typing import Any

import pytest

from service.api.nul import check_request
from service.errors import InvalidRequest
from tests.conftest import RunningApp
from tests.helpers import API, create_via_api


@pytest.mark.parametrize("path", ["/static/app.js%00", "/static/%00", "/static/app.js%00.map"])
async def test_a_static_path_with_a_nul_is_400(running: RunningApp, path: str) -> None:
    async with running.client() as client:
        response = await client.get(path)
        served = await client.get("/static/app.js")
    assert response.status_code == 400, response.text
    assert response.json()["status"] == 400
    assert "path" in response.json()["detail"]
    assert served.status_code == 200


@pytest.mark.parametrize(
    ("suffix", "params", "field"),
    [
        ("", {"cursor": "abc\x00"}, "cursor"),
        ("", {"status": "queued\x00"}, "status"),
        ("/{id}/stream", {"token": "1.x\x00"}, "token"),
        ("/{id}/stream", {"after": "1\x00"}, "after"),
        ("/{id}/stream", {"pace": "recorded\x00"}, "pace"),
        ("/{id}/events", {"after\x00": "1"}, "after"),
    ],
    ids=["cursor", "status", "token", "after", "pace", "name"],
)
async def test_a_query_parameter_with_a_nul_is_400_naming_it(
    running: RunningApp, api_key: str, suffix: str, params: dict[str, str], field: str
) -> None:
    async with running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        response = await client.get(API + suffix.format(id=generation_id), params=params)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert field in detail
    assert "NUL" in detail


def test_a_header_with_a_nul_is_refused_naming_it() -> None:
    """uvicorn (httptools and h11 alike) answers such a request 400 itself; another server in
    front of the app might not."""
    scope: Any = {
        "type": "http",
        "path": "/api/generations",
        "query_string": b"",
        "headers": [(b"host", b"x"), (b"last-event-id", b"1\x002")],
    }
    with pytest.raises(InvalidRequest, match="'last-event-id' must not contain NUL"):
        check_request(scope)
    scope["headers"] = [(b"host", b"x")]
    check_request(scope)
