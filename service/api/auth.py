"""Who is calling: an API key in ``Authorization: Bearer``, or (stream only) a stream token."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from service.access import keys
from service.api.context import Services
from service.errors import Forbidden, Unauthorized
from service.store.keys import KeyOwner


def bearer_key(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("use 'Authorization: Bearer <api key>'")
    return key.strip()


async def provide_caller(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> KeyOwner:
    key = bearer_key(request)
    if key is None:
        raise Unauthorized("an API key is required: 'Authorization: Bearer <api key>'")
    return await keys.authenticate(services.pool, key)


async def require_admin(request: Request[Any, Any, Any], services: Services, what: str) -> KeyOwner:
    """The caller, who must hold an admin key (401 without a key, 403 with another)."""
    key = bearer_key(request)
    if key is None:
        raise Unauthorized("an admin API key is required: 'Authorization: Bearer <api key>'")
    caller = await keys.authenticate(services.pool, key)
    if not caller.is_admin:
        raise Forbidden(f"the {what} is for admin keys (python -m service keys create --admin)")
    return caller
