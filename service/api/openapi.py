"""The OpenAPI document, made to say exactly what the service does.

Litestar writes a document from the handlers' signatures, and where that is not what the
service does, this module corrects it, once, on the plain JSON form (Litestar's objects drop
every null on rendering, examples' included), by rules rather than per handler. ``Document``
serves the result at ``/schema/openapi.json`` (and ``.yaml``).

- **Bodies** are described by pydantic's own JSON Schema of the models that validate or
  produce them (``api/schemas.py``). Litestar's translation of the same models drifted from
  what pydantic accepts: a spec's ``fields`` (a dict) came out as an array, a ``NotRequired``
  key as required. The events, the feed and the stream send the stored JSON text untouched,
  so their handlers return bytes; their bodies are named here. Parameters that may be left out
  are never the text "null" (Litestar writes ``str | None`` as a choice with null).
- **Errors**: every operation gets each error answer it can give, as ``Problem``, by what it
  is: it needs a key (401), an admin key (403), names a generation (404; 410 once retention
  dropped it), has a body (413), reads the database (503). Litestar documents only a 400, in
  its own shape.
- **Media types** that are not JSON: the stream, the archive, a file.
- **Links** from a created generation to the operations that take its id, so that a client
  generator (and schemathesis' stateful phase) can follow create -> get -> events -> cancel.
"""

from __future__ import annotations

import copy
from typing import Any, Final

import yaml
from litestar import Request
from litestar.enums import OpenAPIMediaType
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.serialization import encode_json
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from service.api import examples
from service.api.schemas import (
    CancelAccepted,
    Created,
    CreateGeneration,
    EventsPage,
    FeedPage,
    FileList,
    GenerationPage,
    GenerationState,
    Problem,
    Readiness,
    RetryAccepted,
    Stats,
    StreamToken,
)

REF: Final = "#/components/schemas/{model}"
NO_NUL: Final = "^[^\\u0000]*$"
_PROBLEM: Final = {"$ref": REF.format(model="Problem")}
_HTTP_METHODS: Final = ("get", "put", "post", "delete", "patch")
_ADMIN_ONLY: Final = frozenset({"feed", "metrics"})
_NO_DATABASE: Final = frozenset({"healthz"})
_CONFLICTS: Final = frozenset({"cancelGeneration", "retryGeneration", "streamEvents"})

MODELS: Final[tuple[tuple[type[BaseModel], JsonSchemaMode], ...]] = (
    (CreateGeneration, "validation"),
    (Created, "serialization"),
    (StreamToken, "serialization"),
    (GenerationState, "serialization"),
    (GenerationPage, "serialization"),
    (CancelAccepted, "serialization"),
    (RetryAccepted, "serialization"),
    (FileList, "serialization"),
    (Stats, "serialization"),
    (EventsPage, "serialization"),
    (FeedPage, "serialization"),
    (Readiness, "serialization"),
    (Problem, "serialization"),
)
"""Every body of the document; pydantic's schema of each replaces Litestar's."""


def _sse_frames(id_pattern: str) -> dict[str, Any]:
    """A stream's schema: before OpenAPI 3.2 it describes each of its frames. The data is an
    event, or (the first frame of a `snapshot=1` stream) a run's snapshot."""
    return {
        "type": "object",
        "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": id_pattern},
            "event": {"type": "string"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {
                    "oneOf": [
                        {"$ref": REF.format(model="Event")},
                        {"$ref": REF.format(model="SnapshotData")},
                    ]
                },
            },
        },
    }


# Operations whose handler returns bytes or text that Litestar cannot see through.
_SUCCESS_BODIES: Final[dict[str, tuple[str, dict[str, Any]]]] = {
    "listEvents": ("application/json", {"$ref": REF.format(model="EventsPage")}),
    "feed": ("application/json", {"$ref": REF.format(model="FeedPage")}),
    "readyz": ("application/json", {"$ref": REF.format(model="Readiness")}),
    "getArchive": ("application/zip", {"type": "string", "contentMediaType": "application/zip"}),
    "getFile": ("text/plain", {"type": "string"}),
    "streamEvents": ("text/event-stream", _sse_frames("^[1-9][0-9]*$")),
    "streamAll": ("text/event-stream", _sse_frames("^[A-Za-z0-9_-]+$")),
}

STREAM_GRAMMAR: Final = """Server-Sent Events (`text/event-stream`, UTF-8). The body is:

```
stream    = retry *( frame / keepalive )
retry     = "retry: " 1*DIGIT LF LF          ; milliseconds to wait before reconnecting
frame     = "id: " seq LF "event: " type LF "data: " event-json LF LF
keepalive = ": keepalive" LF LF              ; at least every 15 s while nothing else is sent
```

`seq` is the event's `seq`, `type` its `type`, and `event-json` the event on one line, exactly
as the events endpoint gives it (schema `Event`). With `?snapshot=1` and no resume point, the
first frame is `"id: " seq LF "event: snapshot" LF "data: " snapshot-json LF LF` (schema
`SnapshotData`): the run reduced up to `seq`; the frames after it are events from `seq` + 1,
and after a terminal snapshot the stream ends. Frames come in seq order, from the first
after the resume point (`Last-Event-ID` header, else `?after=`, else 0), stored ones first,
then live ones; none is sent twice. The stream ends after the terminal event
(`generation.succeeded`, `.failed` or `.cancelled`). A client that loses the connection
reconnects with `Last-Event-ID: <last seq it read>`; at or after the terminal event that is
a `204`, which tells EventSource to stop."""

ALL_RUNS_GRAMMAR: Final = """Server-Sent Events (`text/event-stream`, UTF-8), as one
generation's stream (`retry`, frames, keepalives) but never ending by itself:

```
frame = "id: " cursor LF "event: " type LF "data: " json LF LF
```

`json` is an event of one of the caller's runs (schema `Event`: its `generation_id` says which
run, its `seq` is that run's own) or, with `snapshot=1`, a run's snapshot (`event: snapshot`,
schema `SnapshotData`). Per run, frames come in seq order, each once; runs interleave in
commit order. `cursor` is opaque (URL-safe base64): reconnecting with it as `Last-Event-ID`
(or `?after=`) sends exactly the frames after that one, for every run."""

_WHY: Final[dict[int, str]] = {
    400: "Invalid input: the detail names the parameter or field (validation adds `errors`).",
    401: "No API key, or an unknown, expired or revoked one (`WWW-Authenticate: Bearer`).",
    403: "An API key that is not an admin key.",
    404: "No such generation for this caller (another owner's is 404 too, never 403).",
    410: "Retention removed it: the generation was dropped (or, for a file, its content "
    "redacted); `reason` and `at` say why and when.",
    409: "The generation's state forbids it: cancelling a finished one, retrying one that "
    "succeeded or has not ended, or replaying at the recorded pace one still running.",
    413: "The body is larger than GENSTREAM_MAX_BODY_BYTES.",
    503: "PostgreSQL is unavailable, or the process holds its limit of connections; the "
    "`Retry-After` header says when to ask again.",
}

_FOLLOWS_CREATE: Final = (
    "getGeneration",
    "listEvents",
    "listFiles",
    "getArchive",
    "cancelGeneration",
    "retryGeneration",
    "issueStreamToken",
)


class Document(OpenAPIRenderPlugin):
    """``/schema/openapi.json`` and ``.yaml``: Litestar's document, completed on first use
    (routes are all known by then) and kept."""

    def __init__(self, *, providers: frozenset[str], yaml_form: bool = False) -> None:
        super().__init__(
            path=("/openapi.yaml", "/openapi.yml") if yaml_form else "/openapi.json",
            media_type=OpenAPIMediaType.OPENAPI_YAML
            if yaml_form
            else OpenAPIMediaType.OPENAPI_JSON,
        )
        self._providers = providers
        self._yaml = yaml_form
        self._rendered: bytes | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._rendered is None:
            document = completed(openapi_schema, providers=self._providers)
            self._rendered = (
                yaml.safe_dump(document, sort_keys=False).encode()
                if self._yaml
                else encode_json(document)
            )
        return self._rendered


def completed(litestars: dict[str, Any], *, providers: frozenset[str]) -> dict[str, Any]:
    """Litestar's document (``to_schema()`` form) saying what the service does; ``providers``
    are those this deployment runs (asking for another is a 400)."""
    document = copy.deepcopy(litestars)
    bodies = body_schemas()
    provider = bodies["CreateGeneration"]["properties"]["provider"]
    provider["anyOf"] = [{"enum": sorted(providers)}, {"type": "null"}]
    provider["description"] = "A provider this server runs; none: offline."
    components = document.setdefault("components", {})
    components["schemas"] = {**components.get("schemas", {}), **bodies}
    for path, method, operation in operations(document):
        name = operation.get("operationId") or f"{method} {path}"
        for parameter in operation.get("parameters", []):
            parameter["schema"] = _never_null(parameter["schema"])
            _no_nul(parameter["schema"])
        responses = operation.setdefault("responses", {})
        _describe_success(name, operation, responses)
        _describe_errors(name, path, method, operation, responses)
        if name == "createGeneration":
            responses["201"]["links"] = {
                target: {
                    "operationId": target,
                    "parameters": {"generation_id": "$response.body#/id"},
                    "description": f"`{target}` of the generation just created.",
                }
                for target in _FOLLOWS_CREATE
            }
    return document


def body_schemas() -> dict[str, Any]:
    """Pydantic's JSON Schema of every body, each named as its model (``Event`` and its
    types included), to be referenced as ``#/components/schemas/<Name>``."""
    _, top = models_json_schema(MODELS, ref_template=REF)
    schemas: dict[str, Any] = top["$defs"]
    for schema in schemas.values():
        for value in schema.get("properties", {}).values():
            _keys_are_names(value)
    request = CreateGeneration.model_json_schema(mode="validation", ref_template=REF)
    for name in (*request.get("$defs", {}), CreateGeneration.__name__):
        _no_nul(schemas[name])
    return schemas


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, item[method])
        for path, item in document.get("paths", {}).items()
        for method in _HTTP_METHODS
        if method in item
    ]


def _keys_are_names(schema: dict[str, Any]) -> None:
    """Pydantic writes a dict whose keys have a pattern (a spec's ``fields``) as
    ``patternProperties``, which lets any other key through: say instead that every key has
    the pattern and every value the type."""
    patterned = schema.pop("patternProperties", None)
    if patterned is None:
        return
    ((pattern, values),) = patterned.items()
    schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}
    schema["additionalProperties"] = values


def _never_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter is one left out (``required: false``), never the text "null":
    what was said of the choice (a pattern, a length) is said of its one real option."""
    choices = schema.get("oneOf")
    if not choices:
        return schema
    kept = [choice for choice in choices if choice.get("type") != "null"]
    if len(kept) != 1:
        return schema
    outer = {key: value for key, value in schema.items() if key != "oneOf"}
    return kept[0] if "$ref" in kept[0] else {**kept[0], **outer}


def _no_nul(schema: Any) -> None:
    """Every text a client sends without a pattern gets one refusing NUL (PostgreSQL stores
    none; the service answers 400, and the document says so)."""
    if isinstance(schema, list):
        for item in schema:
            _no_nul(item)
    elif isinstance(schema, dict):
        if schema.get("type") == "string" and "pattern" not in schema and "enum" not in schema:
            schema["pattern"] = NO_NUL
        for value in schema.values():
            _no_nul(value)


def _describe_success(name: str, operation: dict[str, Any], responses: dict[str, Any]) -> None:
    success = next(code for code in responses if code.startswith("2"))
    response = responses[success]
    if name in _SUCCESS_BODIES:
        media_type, schema = _SUCCESS_BODIES[name]
        response["content"] = {media_type: {"schema": schema}}
    if name == "streamAll":
        response["description"] = ALL_RUNS_GRAMMAR
    if name == "streamEvents":
        response["description"] = STREAM_GRAMMAR
        responses["204"] = {
            "description": "Nothing after the resume point: the generation has ended there. "
            "EventSource stops reconnecting on it."
        }
    if name in examples.SUCCESS:
        for media in response.get("content", {}).values():
            media["example"] = examples.SUCCESS[name]
    for media in operation.get("requestBody", {}).get("content", {}).values():
        if name in examples.REQUEST:
            media["example"] = examples.REQUEST[name]


def _describe_errors(
    name: str, path: str, method: str, operation: dict[str, Any], responses: dict[str, Any]
) -> None:
    for status in _error_answers(name, path, method, operation):
        if status != 400 and str(status) in responses:
            continue  # the handler's own words for it
        responses[str(status)] = {
            "description": _WHY[status],
            "content": {"application/json": {"schema": _PROBLEM}},
        }


def _error_answers(name: str, path: str, method: str, operation: dict[str, Any]) -> list[int]:
    statuses = [400]
    if operation.get("security") != [{}]:
        statuses.append(401)
    if name in _ADMIN_ONLY:
        statuses.append(403)
    if "{generation_id}" in path:
        statuses += [404, 410]
    if name in _CONFLICTS:
        statuses.append(409)
    if method in ("post", "put", "patch"):
        statuses.append(413)
    if name not in _NO_DATABASE:
        statuses.append(503)
    return statuses
