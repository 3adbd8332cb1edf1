from __future__ import annotations

import pytest

from service.store.sql import numbered


def test_names_become_their_place_in_the_record_counted_from_one() -> None:
    sql = "SELECT :b, :a, :b"
    assert numbered(sql, ("a", "b")) == "SELECT $2, $1, $2"


def test_casts_are_not_parameters() -> None:
    sql = "SELECT :ids::uuid[], now()::text, x::int"
    assert numbered(sql, ("ids",)) == "SELECT $1::uuid[], now()::text, x::int"


def test_literals_identifiers_and_comments_are_left_alone() -> None:
    sql = """
SELECT to_char(:at, 'HH24:MI:SS'), 'it''s :not', "col:umn", :at || ':' -- :nor this
"""
    expected = """
SELECT to_char($1, 'HH24:MI:SS'), 'it''s :not', "col:umn", $1 || ':' -- :nor this
"""
    assert numbered(sql, ("at",)) == expected


def test_an_unknown_name_fails_loudly() -> None:
    with pytest.raises(ValueError, match=r"unknown parameter :fenc\b"):
        numbered("SELECT :fenc", ("fence",))


def test_an_unused_name_fails_loudly() -> None:
    with pytest.raises(ValueError, match="never used in the SQL: fence"):
        numbered("SELECT :generation_id", ("generation_id", "fence"))
