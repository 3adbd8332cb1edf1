from __future__ import annotations

import re
from functools import cache

import pytest
from pydantic import AliasChoices, ValidationError
from pydantic.fields import FieldInfo

from service.settings import PROJECT_ROOT, Settings

FIELDS = sorted(Settings.model_fields.items())


def environment_names(name: str, field: FieldInfo) -> set[str]:
    """The environment variables pydantic-settings reads ``field`` from: its alias (or alias
    choices) when it has one, else the prefixed field name."""
    alias = field.validation_alias
    if isinstance(alias, str):
        return {alias}
    if isinstance(alias, AliasChoices):
        return {choice for choice in alias.choices if isinstance(choice, str)}
    return {(Settings.model_config.get("env_prefix", "") + name).upper()}


def expand(full: str, short: str) -> str:
    """The table abbreviates a second variable by the tail that differs from the first. The
    tail replaces the first name's from its own first word on when the first name has that
    word (``_BACKOFF_MAX_S`` after ``GENSTREAM_GEMINI_BACKOFF_S``), else as many words as it
    has (``_MAX_SIZE`` after ``GENSTREAM_POOL_MIN_SIZE``)."""
    words = full.split("_")
    tail = short.removeprefix("_").split("_")
    keep = words.index(tail[0]) if tail[0] in words else len(words) - len(tail)
    return "_".join(words[:keep] + tail)


@cache
def readme_names() -> frozenset[str]:
    """Every variable named in the first column of the README's configuration table."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    _, found, section = readme.partition("\n## Configuration\n")
    assert found, "README.md has no Configuration section"
    section = section.split("\n## ", 1)[0]
    names: set[str] = set()
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        first, *others = re.findall(r"`([A-Z0-9_]+)`", row.split("|")[1])
        names.add(first)
        names.update(expand(first, other) if other.startswith("_") else other for other in others)
    assert names, "the README's configuration table lists no variables"
    return frozenset(names)


@pytest.mark.parametrize(("name", "field"), FIELDS)
def test_every_field_is_described(name: str, field: FieldInfo) -> None:
    assert field.description, f"{name} has no description"
    assert field.description.strip(), f"{name} has a blank description"


@pytest.mark.parametrize(("name", "field"), FIELDS)
def test_every_field_is_in_the_readme_under_its_environment_name(
    name: str, field: FieldInfo
) -> None:
    missing = environment_names(name, field) - readme_names()
    assert not missing, f"{name} is read from {missing}, which the README does not list"


def test_the_readme_lists_no_variable_that_no_field_reads() -> None:
    read = set().union(*(environment_names(name, field) for name, field in FIELDS))
    assert readme_names() - read == set()


def test_abbreviated_names_expand_to_the_variables_they_stand_for() -> None:
    assert expand("GENSTREAM_POOL_MIN_SIZE", "_MAX_SIZE") == "GENSTREAM_POOL_MAX_SIZE"
    assert expand("GENSTREAM_GEMINI_BACKOFF_S", "_BACKOFF_MAX_S") == (
        "GENSTREAM_GEMINI_BACKOFF_MAX_S"
    )
    assert expand("GENSTREAM_DELTA_FLUSH_S", "_DELTA_FLUSH_BYTES") == (
        "GENSTREAM_DELTA_FLUSH_BYTES"
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GENSTREAM_METRICS_ADDRESS", "9464"),
        ("GENSTREAM_METRICS_ADDRESS", "127.0.0.1:port"),
        ("GENSTREAM_METRICS_ADDRESS", "127.0.0.1:70000"),
        ("GENSTREAM_LOG_FORMAT", "xml"),
        ("GENSTREAM_LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_logging_or_metrics_value_is_refused_by_its_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert [problem["loc"][0] for problem in refused.value.errors()] == [
        variable.removeprefix("GENSTREAM_").lower()
    ]


def test_logging_and_metrics_values_as_an_operator_writes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GENSTREAM_LOG_LEVEL", "warning")
    monkeypatch.setenv("GENSTREAM_METRICS_ADDRESS", "0.0.0.0:9464")
    settings = Settings()
    assert settings.log_level == "WARNING"
    assert settings.metrics_address == "0.0.0.0:9464"


def test_a_transaction_pooler_without_a_direct_url_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LISTEN through a transaction pooler is accepted, then never delivers: refused at start."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://genstream@pgbouncer:6432/genstream")
    monkeypatch.setenv("GENSTREAM_DATABASE_POOLER", "transaction")
    with pytest.raises(ValidationError, match="needs GENSTREAM_DIRECT_URL"):
        Settings()
    monkeypatch.setenv("GENSTREAM_DIRECT_URL", "postgresql://genstream@postgres:5432/genstream")
    settings = Settings()
    assert settings.direct_url == "postgresql://genstream@postgres:5432/genstream"
    assert settings.database_pooler == "transaction"
