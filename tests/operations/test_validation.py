"""What an import checks about one generation (``operations/validation.py``): each check
refuses with the line at fault and why. The sample is a real export of finished_generation():
line 1 the generation, lines 2-6 events seq 1..5 (queued, started, llm.delta, file.saved of
app/main.py, succeeded), line 7 the file."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from service.files import MAX_FILE_BYTES
from service.operations.rows import Line, Refused, parse_line
from service.operations.validation import check_generation
from service.store.db import Pool
from tests.helpers import exported, finished_generation

Records = list[dict[str, Any]]
GENERATION, QUEUED, STARTED, DELTA, FILE_SAVED, SUCCEEDED, FILE = range(7)


@pytest.fixture
async def sample(pool: Pool) -> Records:
    return await exported(pool, await finished_generation(pool))


def check(records: Records, owner: str | None = "carol") -> Any:
    lines = [parse_line(number, json.dumps(record)) for number, record in enumerate(records, 1)]
    events = [line for kind, line in lines if kind == "event"]
    files = [line for kind, line in lines if kind == "file"]
    generation: Line = lines[0][1]
    return check_generation(generation, events, files, owner)


async def test_a_sound_generation_comes_back_owned_as_named_and_unclaimed(
    sample: Records,
) -> None:
    sample[GENERATION]["generation"].update(claimed_by="w", lease_expires_at="2026-01-01T00:00Z")

    named, kept = check(sample), check(sample, owner=None)

    assert json.loads(named.row)["owner"] == "carol"
    assert json.loads(kept.row)["owner"] == "alice"
    assert json.loads(named.row)["claimed_by"] is None
    assert json.loads(named.row)["lease_expires_at"] is None
    assert [json.loads(event)["seq"] for event in named.events] == [1, 2, 3, 4, 5]
    assert [json.loads(file)["path"] for file in named.files] == ["app/main.py"]


def event(records: Records, index: int) -> dict[str, Any]:
    row: dict[str, Any] = records[index]["event"]
    return row


def file(records: Records) -> dict[str, Any]:
    row: dict[str, Any] = records[FILE]["file"]
    return row


def generation(records: Records) -> dict[str, Any]:
    row: dict[str, Any] = records[GENERATION]["generation"]
    return row


CASES: list[tuple[str, Callable[[Records], object], int, str]] = [
    # the columns
    ("unknown column", lambda r: event(r, DELTA).update(tx_id=1), DELTA, "unknown column 'tx_id'"),
    ("missing column", lambda r: event(r, DELTA).pop("payload"), DELTA, "has no 'payload'"),
    ("seq as text", lambda r: event(r, DELTA).update(seq="3"), DELTA, "'3' is not an integer"),
    ("progress above 1", lambda r: event(r, DELTA).update(progress=1.5), DELTA, "progress: 1.5"),
    ("progress a bool", lambda r: event(r, DELTA).update(progress=True), DELTA, "progress: True"),
    ("payload a list", lambda r: event(r, DELTA).update(payload=[]), DELTA, "not a JSON object"),
    ("naive time", lambda r: event(r, DELTA).update(created_at="2026-01-01T00:00:00"), DELTA,
     "has no UTC offset"),
    ("not a time", lambda r: generation(r).update(created_at="yesterday"), GENERATION,
     "created_at: 'yesterday' is not an ISO 8601 time"),
    ("owner not text", lambda r: generation(r).update(owner=7), GENERATION, "owner: 7 is not text"),
    ("status unknown", lambda r: generation(r).update(status="done"), GENERATION,
     "'done' is not a status"),
    ("attempt at int max", lambda r: generation(r).update(attempt=2**31 - 1), GENERATION,
     "attempt: 2147483647 is not an integer"),
    ("spec not an object", lambda r: generation(r).update(spec="x"), GENERATION,
     "spec: 'x' is not a JSON object"),
    ("idempotency key too long", lambda r: event(r, DELTA).update(idempotency_key="k" * 201),
     DELTA, "longer than 200 characters"),
    ("event of another generation",
     lambda r: event(r, DELTA).update(generation_id="00000000-0000-0000-0000-000000000001"),
     DELTA, "belongs to 00000000-0000-0000-0000-000000000001"),
    # the log
    ("status not the type's", lambda r: event(r, DELTA).update(status="queued"), DELTA,
     "status 'queued', but llm.delta means 'running'"),
    ("idempotency key twice", lambda r: [event(r, i).update(idempotency_key="1.1.1")
                                         for i in (DELTA, FILE_SAVED)], FILE_SAVED,
     "idempotency key '1.1.1' is seq 3's"),
    ("seqs out of order", lambda r: r.insert(DELTA, r.pop(FILE_SAVED)), DELTA,
     "event seq 4 where seq 3 was expected"),
    ("started_at missing", lambda r: generation(r).update(started_at=None), GENERATION,
     "started_at is no time but its log says it did start"),
    ("stage not the last event's", lambda r: generation(r).update(stage="core"), GENERATION,
     "stage is 'core' but its log says 'done'"),
    # the files
    ("file.saved of a bad path", lambda r: event(r, FILE_SAVED)["payload"].update(path="a/../b"),
     FILE_SAVED, "'..' segment"),
    ("sha256 not the content's", lambda r: file(r).update(sha256="0" * 64), FILE,
     "size or sha256 is not its content's"),
    ("size not the content's", lambda r: file(r).update(size=1), FILE,
     "size or sha256 is not its content's"),
    ("seq not its file.saved", lambda r: file(r).update(seq=3), FILE,
     "its seq is 3, but the last file.saved event naming it is seq 4"),
    ("no file.saved names it", lambda r: file(r).update(path="app/other.py"), FILE,
     "no file.saved event names it"),
    ("file.saved without its file", lambda r: r.pop(FILE), FILE_SAVED,
     "saved file 'app/main.py', which is not there"),
    ("a file twice", lambda r: r.append(r[FILE]), FILE + 1, "appears twice"),
    ("unknown language", lambda r: file(r).update(language="javascript"), FILE,
     "'javascript' is not a language"),
    ("too large", lambda r: file(r).update(content="x" * (MAX_FILE_BYTES + 1)), FILE,
     f"larger than {MAX_FILE_BYTES} bytes"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "index", "says"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_each_check_refuses_with_the_line_at_fault_and_why(
    sample: Records, change: Callable[[Records], object], index: int, says: str
) -> None:
    change(sample)

    with pytest.raises(Refused) as refused:
        check(sample)

    assert refused.value.line == index + 1, refused.value
    assert says in refused.value.reason


@pytest.mark.parametrize(
    ("owner", "says"), [(" ", "must not be blank"), ("o" * 201, "longer than 200 characters")]
)
async def test_an_owner_kept_from_the_export_must_be_a_short_name(
    sample: Records, owner: str, says: str
) -> None:
    generation(sample)["owner"] = owner

    replaced = check(sample, owner="carol")
    with pytest.raises(Refused) as refused:
        check(sample, owner=None)

    assert json.loads(replaced.row)["owner"] == "carol"
    assert refused.value.line == 1
    assert refused.value.reason.startswith("the generation's owner: ")
    assert says in refused.value.reason


async def test_a_failed_runs_error_must_be_text_as_the_row_holds_it(sample: Records) -> None:
    failed = event(sample, SUCCEEDED)
    failed.update(type="generation.failed", status="failed", payload={"error": {"code": 1}})
    generation(sample).update(status="failed", error='{"code": 1}')

    with pytest.raises(Refused, match=r"data\.error must be text"):
        check(sample)
    failed["payload"] = {"error": "the model broke off"}
    generation(sample)["error"] = "the model broke off"
    assert json.loads(check(sample).row)["error"] == "the model broke off"
