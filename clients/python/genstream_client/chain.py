"""Keeping a generation's chain as its events arrive: the proof that none was altered, left
out or slipped in (docs/CONTRACT.md, "The event").

Each event's ``chain`` is SHA-256 of the previous event's chain (32 zero bytes before seq 1)
and the event's JSON text without its ``chain`` member, which is its last: the text is cut at
the last ``,"chain":`` and closed with ``}``. The text is ``Event.raw``, exactly as the server
sent it, so nothing is re-encoded. A follower that starts after seq N > 0 has no chain to
start from and takes its first event's on trust.
"""

from __future__ import annotations

import hashlib

from genstream_client.errors import ChainBroken
from genstream_client.models import Event

ZERO = "0" * 64
MEMBER = ',"chain":'


def chain_of(previous: str, raw: str) -> str:
    """The chain an event with this JSON text has when ``previous`` comes before it."""
    cut = raw.rfind(MEMBER)
    body = raw[:cut] + "}" if cut >= 0 else raw
    return hashlib.sha256(bytes.fromhex(previous) + body.encode()).hexdigest()


class ChainKeeper:
    """The chain of the events seen so far; ``check`` raises ChainBroken at the first event
    that does not follow. Events of a server that sends no chain pass unchecked."""

    def __init__(self, after: int = 0) -> None:
        self.value: str | None = ZERO if after == 0 else None

    def check(self, event: Event) -> None:
        if event.chain is None:
            return
        previous, self.value = self.value, event.chain
        if previous is None:
            return  # the first event after a resume point: nothing to check it against
        if chain_of(previous, event.raw) != event.chain:
            raise ChainBroken(
                f"incomplete or altered: generation {event.generation_id}'s seq {event.seq} "
                "does not follow the events before it (its chain hash does not match)"
            )
        data = event.data
        says = (data.get("count"), data.get("chain_hash"))
        if event.is_terminal and "chain_hash" in data and says != (event.seq, previous):
            raise ChainBroken(
                f"incomplete or altered: generation {event.generation_id}'s terminal event "
                f"says {says[0]} events ending in {says[1]}, but {event.seq} arrived ending in "
                f"{previous}"
            )
