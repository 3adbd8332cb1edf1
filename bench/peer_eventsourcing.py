"""The peer of case 6, run INSIDE the bench's own venv (``.venv-bench-peer``), never genstream's.

The Python ``eventsourcing`` library's PostgreSQL application recorder, appending single
events (one ``insert_events`` call per event, as an application saving one new aggregate
event does) from N writer threads, each to its own aggregate, for a timed window. Its
recorder takes ``LOCK TABLE ... IN EXCLUSIVE MODE`` in every write transaction (to keep its
notification ids gap-free in commit order), so writers queue behind each other.

Prints one JSON object: ``{"events": n, "seconds": s, "events_per_s": r, "version": v}``.
Imports only the standard library and eventsourcing: this file runs under another interpreter.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import threading
import time
import uuid

from eventsourcing.persistence import StoredEvent  # type: ignore[import-not-found]
from eventsourcing.postgres import (  # type: ignore[import-not-found]
    PostgresApplicationRecorder,
    PostgresDatastore,
)

WARM_S = 0.3
TOPIC = "bench.peer:LlmDelta"
STATE = json.dumps(
    {
        "type": "llm.delta",
        "stage": "models",
        "progress": 0.5,
        "message": "Writing models",
        "data": {"text": "def create_user(email: str, age: int) -> User:\n    return User()\n"},
    }
).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("host", "user", "dbname"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--writers", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()

    datastore = PostgresDatastore(
        dbname=args.dbname,
        host=args.host,
        port=args.port,
        user=args.user,
        password=os.environ.get("PGPASSWORD", ""),
        pool_size=args.writers,
    )
    recorder = PostgresApplicationRecorder(datastore, events_table_name="bench_peer_events")
    recorder.create_table()

    start_barrier = threading.Barrier(args.writers)
    counts = [0] * args.writers
    timing: dict[str, float] = {}

    def writer(k: int) -> None:
        originator = uuid.uuid4()
        version = 1
        start_barrier.wait()
        if k == 0:
            timing["start"] = time.perf_counter() + WARM_S
        while "start" not in timing:
            time.sleep(0.001)
        start = timing["start"]
        end = start + args.seconds
        while True:
            recorder.insert_events([StoredEvent(originator, version, TOPIC, STATE)])
            version += 1
            now = time.perf_counter()
            if now > end:
                return
            if now >= start:
                counts[k] += 1

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(args.writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    datastore.close()
    total = sum(counts)
    print(
        json.dumps(
            {
                "events": total,
                "seconds": args.seconds,
                "events_per_s": total / args.seconds,
                "version": importlib.metadata.version("eventsourcing"),
            }
        )
    )


if __name__ == "__main__":
    main()
