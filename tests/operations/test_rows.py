"""One line of an export (``operations/rows.py``): one row of one table, each column of its
type, nothing PostgreSQL could not store. What lines make a generation: ``test_validation.py``;
a bad line among good ones, through the import: ``test_transfer.py``."""

from __future__ import annotations

import pytest

from service.operations.rows import (
    EVENT_COLUMNS,
    FILE_COLUMNS,
    GENERATION_COLUMNS,
    Line,
    Refused,
    columns,
    parse_line,
)
from service.store import tables


def test_the_checked_columns_are_exactly_the_tables_columns() -> None:
    # A new column needs a decision about what an import may put in it.
    assert set(GENERATION_COLUMNS) == set(tables.generations.c.keys())
    # tx_id and owner are the importing database's: its transaction, the generation's owner.
    assert set(EVENT_COLUMNS) == set(tables.generation_events.c.keys()) - {"tx_id", "owner"}
    assert set(FILE_COLUMNS) == set(tables.generated_files.c.keys())


def test_a_line_holds_one_row_of_a_known_kind() -> None:
    assert parse_line(3, b'{"event": {"seq": 1}}\r\n') == ("event", Line(3, {"seq": 1}))


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("", "not an export line: not JSON"),
        ("{", "not an export line: not JSON"),
        ("[" * 100_000, "JSON nested too deeply"),
        ('{"event": {"progress": NaN}}', "not JSON (NaN is not a JSON number)"),
        ('{"event": {"payload": {"n": 1e999}}}', "a number too large to store"),
        ('{"event": {"message": "a\\u0000b"}}', "the text 'a\\x00b' holds a NUL character"),
        ('{"event": {"payload": {"\\u0000": 1}}}', "holds a NUL character"),
        ('{"event": {"payload": ["\\udc80"]}}', "not valid Unicode (a lone surrogate)"),
        (b"\xc3\x28", "not UTF-8 text (invalid continuation byte)"),
        ("[]", 'expected {"generation" | "event" | "file": {...}}'),
        ('{"event": {}, "file": {}}', 'expected {"generation" | "event" | "file": {...}}'),
        ('{"\\u001b[2Jrow": {}}', "unknown kind '\\x1b[2Jrow'"),
        ('{"file": "x"}', "the file is not a JSON object"),
    ],
)
def test_a_line_that_is_not_a_storable_row_is_refused_in_words(
    line: str | bytes, says: str
) -> None:
    with pytest.raises(Refused) as refused:
        parse_line(7, line)

    assert refused.value.line == 7
    assert says in refused.value.reason


GENERATION_ROW = {
    "id": "0193a0c4-5f2e-7d61-9c1a-3b8e2f4d6a10",
    "owner": "alice",
    "status": "succeeded",
    "stage": "done",
    "message": "Generation finished",
    "progress": 1.0,
    "last_seq": 30,
    "spec": {"project": "p", "entities": []},
    "provider": "offline",
    "model": None,
    "error": None,
    "attempt": 1,
    "claimed_by": None,
    "lease_expires_at": None,
    "cancel_requested_at": None,
    "created_at": "2026-11-30T06:40:10+00:00",
    "started_at": "2026-11-30T06:40:10+00:00",
    "finished_at": "2026-11-30T06:40:16+00:00",
    "updated_at": "2026-11-30T06:40:16+00:00",
}


def test_a_generation_exported_before_later_columns_gets_what_their_migrations_gave() -> None:
    old = columns(Line(2, GENERATION_ROW), "the generation", GENERATION_COLUMNS)
    new = columns(
        Line(2, {**GENERATION_ROW, "trace_context": {"traceparent": "00-ab"}, "verify": "tests"}),
        "the generation",
        GENERATION_COLUMNS,
    )

    assert (old["trace_context"], old["verify"]) == (None, "off")
    assert (new["trace_context"], new["verify"]) == ({"traceparent": "00-ab"}, "tests")
    with pytest.raises(Refused, match="the generation's verify: 'always' is not a verify level"):
        columns(
            Line(2, {**GENERATION_ROW, "verify": "always"}), "the generation", GENERATION_COLUMNS
        )
    without_owner = {k: v for k, v in GENERATION_ROW.items() if k != "owner"}
    with pytest.raises(Refused, match="the generation has no 'owner'"):
        columns(Line(2, without_owner), "the generation", GENERATION_COLUMNS)
