"""``/schema``: Swagger UI over the completed document, with no internet needed.

Litestar's viewers load their scripts from public CDNs, so on a machine without internet
(or behind a strict proxy) ``/schema`` was a blank page. Swagger UI's own release files come
from the ``swagger-ui-py`` package (a maintained PyPI copy of them; its framework glue is not
used) and are served here under ``/static/swagger-ui``. The viewer embeds the document
itself, so it shows what ``/schema/openapi.json`` says, not Litestar's draft of it.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any, Final

from litestar import Request
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

from service.api.openapi import Document

ASSETS_PATH: Final = "/static/swagger-ui"
ASSETS_DIR: Final = Path(str(importlib.resources.files("swagger_ui") / "static"))
_NO_FAVICON: Final = "<link rel='icon' href='data:,'>"  # Litestar's default is on a CDN

assets = create_static_files_router(
    path=ASSETS_PATH,
    directories=[ASSETS_DIR],
    cache_control=CacheControlHeader(max_age=86_400),
    include_in_schema=False,
)


class Viewer(SwaggerRenderPlugin):
    def __init__(self, document: Document) -> None:
        super().__init__(
            path=("/", "/swagger"),
            js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            css_url=f"{ASSETS_PATH}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
            favicon=_NO_FAVICON,
        )
        self._document = document

    def render_json(  # type: ignore[override]  # Litestar's is a staticmethod
        self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]
    ) -> bytes:
        return self._document.render(request, openapi_schema)
