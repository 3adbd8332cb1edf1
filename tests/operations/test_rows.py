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
    parse_line,
)
from service.store import tables


def test_the_checked_columns_are_exactly_the_tables_columns() -> None:
    # A new column needs a decision about what an import may put in it.
    assert set(GENERATION_COLUMNS) == set(tables.generations.c.keys())
    assert set(EVENT_COLUMNS) == set(tables.generation_events.c.keys()) - {"tx_id"}
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
