"""Commands on generations: create, cancel, retry. Application logic over the store, no HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from service.errors import Conflict, InvalidRequest, TooManyRequests
from service.events import (
    TERMINAL_STATUSES,
    EventType,
    NewEvent,
    RetriedData,
    Status,
    VerifyLevel,
)
from service.generation.phases import PHASES
from service.generation.providers.registry import KNOWN, requirement
from service.ids import new_generation_id
from service.observe import metrics, traces
from service.spec import Spec
from service.store import event_log, generations
from service.store.db import Pool, connection

ACTIVE_RETRY_AFTER_S: Final = 5  # a hint: when one of the owner's runs may well have ended
VERIFYING_STAGES: Final = frozenset({"verify", "repair"})


@dataclass(frozen=True, slots=True)
class CreateLimits:
    """An owner's quotas on creating generations; None: unlimited."""

    max_active_runs: int | None = None
    runs_per_minute: int | None = None


def queued_event() -> NewEvent:
    return NewEvent(EventType.QUEUED, "queued", 0.0, "Queued, waiting for a worker")


async def create_generation(
    pool: Pool,
    owner: str,
    spec: Spec,
    *,
    provider: str | None,
    model: str | None,
    available_providers: frozenset[str],
    verify: VerifyLevel,
    limits: CreateLimits = CreateLimits(),
) -> UUID:
    """Queue a generation, within the owner's quotas (checked and applied in one step for
    that owner across every process: see ``generations.lock_owner``)."""
    provider = provider or "offline"
    if provider not in KNOWN:
        raise InvalidRequest(f"unknown provider {provider!r}: use one of {sorted(KNOWN)}")
    if provider not in available_providers:
        raise InvalidRequest(
            f"provider {provider!r} is not available on this server ({requirement(provider)})"
        )
    generation_id = new_generation_id()
    spec_json: dict[str, Any] = spec.model_dump(mode="json", exclude_none=True)
    async with connection(pool) as conn, conn.transaction():
        if limits.max_active_runs is not None or limits.runs_per_minute is not None:
            await generations.lock_owner(conn, owner)
            _check_limits(owner, await generations.select_owner_load(conn, owner), limits)
        await generations.insert_generation(
            conn,
            generation_id,
            owner,
            spec_json,
            provider,
            model,
            queued_event(),
            trace_context=traces.current_carrier(),
            verify=verify,
        )
    return generation_id


def _check_limits(owner: str, load: generations.OwnerLoad, limits: CreateLimits) -> None:
    if limits.max_active_runs is not None and load.active >= limits.max_active_runs:
        raise TooManyRequests(
            f"{owner} has {_generations(load.active)} queued or running, the most allowed at "
            "once: create more when one finishes (or cancel one)",
            retry_after_s=ACTIVE_RETRY_AFTER_S,
        )
    if limits.runs_per_minute is not None and load.recent >= limits.runs_per_minute:
        raise TooManyRequests(
            f"{owner} created {_generations(load.recent)} in the last minute, the most allowed: "
            f"try again in {max(1, load.window_clears_in_s)} s",
            retry_after_s=load.window_clears_in_s,
        )


async def cancel_generation(pool: Pool, owner: str, generation_id: UUID) -> Status:
    """Ask a run to stop. A run nobody holds is cancelled here and now; a held one is stopped
    by its worker at once (the NOTIFY sent on commit reaches it wherever it runs)."""
    async with connection(pool) as conn, conn.transaction():
        target = await generations.lock_for_cancel(conn, owner, generation_id)
        if target.status in TERMINAL_STATUSES:
            raise Conflict(f"generation {generation_id} already {target.status}")
        if not target.held:
            # Nobody runs it (never claimed, or its worker died): end it here and now. A
            # worker that claims it later finds it finished; a stale one is refused.
            await event_log.append(
                conn,
                generation_id,
                [NewEvent(EventType.CANCELLED, target.stage, target.progress, "Cancelled")],
            )
            return Status.CANCELLED
    return target.status


async def retry_generation(
    pool: Pool, owner: str, generation_id: UUID, limits: CreateLimits = CreateLimits()
) -> Status:
    """Another attempt at a failed or cancelled run, from the first building phase that did
    not complete (the files of those that did are kept; verification starts again): its log
    goes on with ``generation.retried``, so both attempts stay in it. Counts as an active run
    against the owner's quota."""
    async with connection(pool) as conn, conn.transaction():
        if limits.max_active_runs is not None:
            await generations.lock_owner(conn, owner)
        target = await generations.lock_for_retry(conn, owner, generation_id)
        if target.status not in (Status.FAILED, Status.CANCELLED):
            ended = target.status == Status.SUCCEEDED
            raise Conflict(
                f"generation {generation_id} "
                + ("succeeded: there is nothing to retry" if ended else f"is {target.status}")
                + ("" if ended else ": only a failed or cancelled run can be retried")
            )
        if target.redacted:
            raise Conflict(
                f"generation {generation_id} cannot be retried: retention redacted its files, "
                "which a retry would resume from"
            )
        if limits.max_active_runs is not None:
            load = await generations.select_owner_load(conn, owner)
            _check_limits(owner, load, CreateLimits(max_active_runs=limits.max_active_runs))
        state = await event_log.select_run_state(conn, generation_id)
        kept = [stage for stage in state.completed_stages if stage not in VERIFYING_STAGES]
        resumes_at = next((p.stage for p in PHASES if p.stage not in kept), "verify")
        attempt = await generations.reopen(conn, generation_id)
        retried = RetriedData(
            after="failed" if target.status == Status.FAILED else "cancelled",
            completed_phases=kept,
            attempt=attempt,
        )
        await event_log.append(
            conn,
            generation_id,
            [
                NewEvent(
                    EventType.RETRIED,
                    "queued",
                    target.progress,
                    f"Retried after it {target.status}: resumes at {resumes_at}",
                    retried,
                )
            ],
        )
    metrics.RUNS_RETRIED.inc()
    return Status.QUEUED


def _generations(count: int) -> str:
    return f"{count} generation{'' if count == 1 else 's'}"


OWNER_CLASSES: Final = ("admin", "standard")


async def observe_queue(pool: Pool) -> None:
    """Set the queue's gauges (depth and oldest age per owner class) from the database."""
    async with connection(pool) as conn:
        found = {queue.owner_class: queue for queue in await generations.select_queue(conn)}
    for owner_class in OWNER_CLASSES:
        queue = found.get(owner_class)
        metrics.QUEUE_DEPTH.set(queue.depth if queue else 0, owner_class)
        metrics.QUEUE_OLDEST_AGE.set(queue.oldest_age_s if queue else 0.0, owner_class)
