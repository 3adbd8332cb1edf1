"""A real run for the page's modules to show: an offline generation made through the API, and
its files as ``GET /api/generations/{id}/files/{path}`` serves them."""

from __future__ import annotations

from dataclasses import dataclass

from tests.conftest import RunningApp
from tests.helpers import API, create_via_api, wait_for_status


@dataclass(frozen=True)
class GeneratedFile:
    path: str
    language: str
    text: str


@dataclass(frozen=True)
class Generated:
    id: str
    files: dict[str, GeneratedFile]  # by path, in the order the files list gives


async def generate_via_api(running: RunningApp, key: str) -> Generated:
    """An offline generation of the default spec, run to success, and every file it saved."""
    async with running.client(key) as client:
        created = await create_via_api(client)
        state = await wait_for_status(client, created["id"])
        assert state["status"] == "succeeded", state
        listing = await client.get(f"{API}/{created['id']}/files")
        assert listing.status_code == 200, listing.text
        files = {}
        for entry in listing.json()["files"]:
            response = await client.get(f"{API}/{created['id']}/files/{entry['path']}")
            assert response.status_code == 200, response.text
            files[entry["path"]] = GeneratedFile(entry["path"], entry["language"], response.text)
    return Generated(created["id"], files)
