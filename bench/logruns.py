"""The runs case 11 fills the log with: made up whole, shaped like real ones.

What a run looks like (``Run``): ``generation.queued``, ``generation.started``, then four
phases (``phase.started``, mostly ``llm.delta`` of 40-200 characters, a few ``file.saved``
with their ``generated_files`` rows, ``phase.completed`` with tokens) and a terminal event;
1,000-3,000 events in all. Runs belong to many owners (a few heavy, most light), start at
times spread over months, and are written a few at a time interleaved, in transactions of 1-8
events, as concurrent workers would leave them on disk. A run's id is a UUIDv7 of its start
(``service/ids.py``'s ``v7_at``), so it lands in its month's partition, as in production.
Their ``generations`` rows agree with their logs (``last_seq``, status, times).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from service.ids import v7_at

PHASES = ("core", "models", "api", "tests")
MODEL = "gemini-2.5-flash"
SPAN = timedelta(days=180)  # the largest size's runs start over this many days, ending now
CONCURRENT_RUNS = 8  # runs being written at once: how a run's rows spread over the heap
OWNERS = 500


def _texts(rng: random.Random) -> list[str]:
    """A pool of ``llm.delta`` texts of 40-200 characters: lines of generated code."""
    words = [
        "def",
        "class",
        "return",
        "self",
        "async",
        "await",
        "import",
        "from",
        "field",
        "model",
        "route",
        "test",
        "id",
    ]
    pool = []
    for _ in range(512):
        length = rng.randint(40, 200)
        text = ""
        while len(text) < length:
            text += rng.choice(words) + rng.choice([" ", "_", "(", "): ", "\n    "])
        pool.append(text[:length])
    return pool


@dataclass(slots=True)
class Run:
    """A run made up whole: its ``generations`` row, then its appends as (events, files)."""

    id: UUID
    row: tuple[Any, ...] = ()
    events: int = 0
    appends: list[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]] = field(default_factory=list)


@dataclass(slots=True)
class Runs:
    """Makes up runs, and remembers them; one per database, kept across sizes (the fill is
    cumulative: each size adds runs after those before)."""

    max_events: int  # the largest size asked for: the time span is spread over it
    run_events: tuple[int, int] = (1_000, 3_000)
    seed: int = 18
    rng: random.Random = field(init=False)
    texts: list[str] = field(init=False)
    start: datetime = field(init=False)
    filled: int = 0  # events made up so far
    owners_seen: dict[str, int] = field(default_factory=dict)  # owner -> runs
    made: list[tuple[UUID, str, int]] = field(default_factory=list)  # (id, owner, last_seq)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.texts = [json.dumps(t) for t in _texts(self.rng)]
        self.start = datetime.now(UTC) - SPAN

    def _owner(self) -> str:
        # Skewed: owner k gets runs in proportion to 1/(k+1), so a few are heavy.
        k = int(OWNERS ** self.rng.random()) - 1
        return f"owner-{k:04d}"

    def _run(self, started_at: datetime) -> Run:
        """One whole run: its ``generations`` row and its appends, each (events, files)."""
        rng = self.rng
        owner = self._owner()
        generation_id = v7_at(started_at)
        per_phase = max(3, (rng.randint(*self.run_events) - 3) // len(PHASES))
        run = Run(generation_id)
        at = started_at
        seq = 0
        events: list[tuple[Any, ...]] = []
        files: list[tuple[Any, ...]] = []

        def append() -> None:
            run.appends.append((list(events), list(files)))
            events.clear()
            files.clear()

        def event(
            kind: str, status: str, stage: str, progress: float, message: str, payload: str
        ) -> None:
            nonlocal seq, at
            seq += 1
            at += timedelta(milliseconds=rng.randint(5, 60))
            key = f"1.{len(run.appends)}.{len(events)}"
            events.append(
                (
                    generation_id,
                    seq,
                    kind,
                    status,
                    stage,
                    progress,
                    message,
                    payload,
                    at,
                    key,
                    owner,
                )
            )

        event("generation.queued", "queued", "queued", 0.0, "Queued", "{}")
        append()
        at += timedelta(seconds=rng.uniform(0.05, 5.0))
        event(
            "generation.started",
            "running",
            "started",
            0.02,
            "Started",
            json.dumps({"worker": "w1", "attempt": 1, "provider": "gemini", "model": MODEL}),
        )
        for number, phase in enumerate(PHASES, start=1):
            progress = number / (len(PHASES) + 1)
            head = f'{{"phase":"{phase}","attempt":1,"text":'
            event(
                "phase.started",
                "running",
                phase,
                progress,
                f"Phase {phase}",
                json.dumps(
                    {
                        "phase": phase,
                        "number": number,
                        "of": len(PHASES),
                        "attempt": 1,
                        "provider": "gemini",
                        "model": MODEL,
                    }
                ),
            )
            saved = 0
            for i in range(per_phase):
                if i % 60 == 59:  # a file every 60 events: ~8 per phase of 500
                    saved += 1
                    path = f"app/{phase}/module_{saved}.py"
                    content = "".join(json.loads(rng.choice(self.texts)) for _ in range(12))
                    digest = hashlib.sha256(content.encode()).hexdigest()
                    data = {
                        "path": path,
                        "size": len(content),
                        "sha256": digest,
                        "language": "python",
                    }
                    event(
                        "file.saved", "running", phase, progress, f"Saved {path}", json.dumps(data)
                    )
                    files.append(
                        (generation_id, path, content, len(content), digest, "python", seq, at)
                    )
                else:
                    event(
                        "llm.delta",
                        "running",
                        phase,
                        progress,
                        f"Writing {phase}",
                        head + rng.choice(self.texts) + "}",
                    )
                if rng.random() < 0.25:  # appends of 1-8 events: ~4 on average
                    append()
            event(
                "phase.completed",
                "running",
                phase,
                progress,
                f"Phase {phase} done",
                json.dumps(
                    {
                        "phase": phase,
                        "files": saved,
                        "attempts": 1,
                        "prompt_tokens": rng.randint(500, 4000),
                        "output_tokens": rng.randint(1000, 9000),
                        "duration_ms": rng.randint(5000, 90000),
                        "provider": "gemini",
                        "model": MODEL,
                    }
                ),
            )
        outcome = rng.random()
        status = "succeeded" if outcome < 0.93 else "failed" if outcome < 0.98 else "cancelled"
        error = "the model stopped answering" if status == "failed" else None
        end: dict[str, Any] = {"count": seq + 1, "chain_hash": "00" * 32}
        if error:
            end["error"] = error
        event(f"generation.{status}", status, "done", 1.0, f"Generation {status}", json.dumps(end))
        append()
        run.events = seq
        run.row = (
            generation_id,
            owner,
            status,
            "done",
            f"Generation {status}",
            1.0,
            seq,
            '{"project":"bench"}',
            "gemini",
            MODEL,
            error,
            1,
            started_at,
            started_at + timedelta(seconds=1),
            at,
            at,
        )
        self.made.append((generation_id, owner, seq))
        self.owners_seen[owner] = self.owners_seen.get(owner, 0) + 1
        return run

    def starts(self, events: int) -> tuple[datetime, datetime]:
        """The times the runs of the next ``rows(events, ...)`` start between (a run starts
        while fewer than ``events`` are made: before the second)."""
        step = SPAN / self.max_events
        return self.start + step * self.filled, self.start + step * (self.filled + events)

    def rows(self, events: int, tx_base: int) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """("generation" | "event" | "file", row) until ``events`` more events are out (whole
        runs: a little more). CONCURRENT_RUNS runs at a time, their appends interleaved, each
        append one transaction (``tx_id`` growing from ``tx_base + 1``). A run's generations
        row comes before its first event (the foreign key)."""
        rng = self.rng
        tx = tx_base
        goal = self.filled + events
        step = SPAN / self.max_events  # the timeline per event: when the next run starts
        active: list[Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]] = []
        while active or self.filled < goal:
            while len(active) < CONCURRENT_RUNS and self.filled < goal:
                run = self._run(self.start + step * self.filled)
                self.filled += run.events
                yield "generation", run.row
                active.append(iter(run.appends))
            appends = rng.choice(active)
            batch = next(appends, None)
            if batch is None:
                active.remove(appends)
                continue
            tx += 1
            for row in batch[0]:
                yield "event", (*row, tx)
            for row in batch[1]:
                yield "file", row
