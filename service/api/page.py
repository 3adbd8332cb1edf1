"""``GET /``: the web page, and ``/static/*``: its script and style, served from ``service/web``.

No build step: plain HTML, CSS and ES modules on the browser's own EventSource and fetch:
``genstream.js`` follows a run (any frontend may import it), ``app.js`` renders the page,
``dashboard.js`` draws ``GET /api/stats`` with the hand-drawn SVG charts of ``charts.js``.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Final

from litestar import MediaType, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

WEB_DIR: Final = Path(__file__).resolve().parent.parent / "web"

# Scripts go out as text/javascript (RFC 9239), genstream.js for other pages too. Python 3.11's
# own table says application/javascript; only a system mime.types corrects it, and slim images
# have none.
mimetypes.add_type("text/javascript", ".js")

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
