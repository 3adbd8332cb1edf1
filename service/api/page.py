"""``GET /``: the web page, and ``/static/*``: its script and style, served from ``service/web``.

No build step: plain HTML, CSS and a script that uses the browser's own EventSource and fetch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from litestar import MediaType, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

WEB_DIR: Final = Path(__file__).resolve().parent.parent / "web"

static_files = create_static_files_router(
    path="/static",
    directories=[WEB_DIR],
    cache_control=CacheControlHeader(no_cache=True),  # a deploy must reach open pages at once
)


@get("/", media_type=MediaType.HTML, include_in_schema=False)
async def index() -> Response[bytes]:
    return Response(
        (WEB_DIR / "index.html").read_bytes(),
        media_type=MediaType.HTML,
        headers={"Cache-Control": "no-cache"},
    )
