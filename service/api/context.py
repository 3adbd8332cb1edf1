"""What request handlers get from the running process, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from litestar.datastructures import State

from service.access.quotas import StreamSlots
from service.settings import Settings
from service.store.db import Pool
from service.store.listener import Listener
from service.store.reads import Reads
from service.streams.follow import Streams
from service.streams.hub import Hub


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    pool: Pool
    reads: Reads  # what a standby may answer (store/reads.py); ``pool`` is the primary
    hub: Hub
    listener: Listener
    streams: Streams
    token_secret: str
    providers: frozenset[str]
    head_revisions: frozenset[str]
    stream_slots: StreamSlots = field(default_factory=StreamSlots)


def provide_services(state: State) -> Services:
    services: Services = state.services
    return services
