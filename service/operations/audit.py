"""Auditing the log: every event's chain hash recomputed from its stored text and the hash
before it (SQL in ``store/event_log.py``), and each break said in words.

What a chain that holds proves: no event was edited, removed or inserted since it was stored,
unless whoever changed it also recomputed every hash after it. An operator with write access
to the database can do exactly that, so the chain alone cannot convict them; a terminal
event's ``chain_hash`` copied elsewhere when the run ended (a client that followed it, an
export kept apart) can: a rewritten chain no longer ends in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from service.store import event_log
from service.store.db import Pool, connection
from service.store.event_log import ChainBreak, ChainCheck


async def verify_chains(pool: Pool, ids: Sequence[UUID] | None = None) -> ChainCheck:
    """The given generations' chains (every generation's when None); nothing is written."""
    async with connection(pool) as conn:
        return await event_log.check_chains(conn, ids)


def describe(found: ChainBreak) -> str:
    """A break in words, after its generation."""
    match found.kind:
        case "missing":
            return f"{_seqs(found.seq, (found.other_seq or found.seq + 1) - 1)} missing"
        case "truncated":
            return (
                f"the log ends at seq {found.seq - 1}, but its generation says it has "
                f"{found.other_seq}: {_seqs(found.seq, found.other_seq or found.seq)} missing"
            )
        case "altered":
            return (
                f"seq {found.seq} was altered: its chain hash does not match its content "
                "and the hash before it"
            )
    return f"seq {found.seq}: {found.kind}"


def _seqs(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seqs {first}..{last}"
