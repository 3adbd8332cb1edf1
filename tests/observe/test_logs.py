"""``observe/logs.py``: one structured line per thing worth knowing, naming its run or its
request, with no secret in it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from service.observe import logs
from service.observe.logs import redact, redact_records


@pytest.mark.parametrize(
    ("line", "logged"),
    [
        (
            '127.0.0.1:5 - "GET /api/generations/1/stream?token=1767225600.'
            + "a" * 43
            + '&after=3 HTTP/1.1" 200',
            '127.0.0.1:5 - "GET /api/generations/1/stream?token=***&after=3 HTTP/1.1" 200',
        ),
        ("/stream?after=2&token=gsk_AbC-d_9", "/stream?after=2&token=***"),
        ("/api/generations?api_key=gsk_x&limit=5", "/api/generations?api_key=***&limit=5"),
        ("/api/generations/gsk_AbC-d_9/files", "/api/generations/gsk_***/files"),
        ("refused gsk_AbC-d_9, said so", "refused gsk_***, said so"),
        ("token 1767225600." + "Z" * 43 + ".", "token ***."),
        ("stream 1767225600." + "0f" * 16 + "." + "Z" * 43 + " open", "stream *** open"),
        ("Authorization: Bearer gsk_AbC", "Authorization: Bearer ***"),
        ("authorization: bEaReR opaque-credential", "authorization: bEaReR ***"),
        ("TOKEN=opaque", "TOKEN=***"),
        (
            "postgresql://genstream:pa55@127.0.0.1:5432/db",
            "postgresql://genstream:***@127.0.0.1:5432/db",
        ),
        ("Key (generation_id, seq)=(x, 1) already exists", None),
        ("?after=9223372036854775808&pace=recorded&speed=1.5", None),
    ],
)
def test_redact_hides_keys_and_tokens_and_nothing_else(line: str, logged: str | None) -> None:
    assert redact(line) == (line if logged is None else logged)


def test_redact_skips_the_patterns_only_for_texts_none_of_them_could_match() -> None:
    """The substring pre-check must never let a secret through: every fragment a pattern
    starts from, alone and in company, redacts exactly as the five patterns do."""
    fragments = [
        "",
        "x",
        "1.",
        "=",
        "token=",
        "gsk_",
        "Bearer ",
        "BEARER ",
        "postgresql://u:",
        "pw@",
        "1767225600.",
        "a" * 43,
        "0f" * 16 + ".",
        " ",
        "/",
    ]
    texts = [a + b + c for a in fragments for b in fragments for c in fragments]
    for text in texts:
        slow = text
        for secret, replacement, _ in logs._SECRETS:
            slow = secret.sub(replacement, slow)
        assert redact(text) == slow, text


@pytest.fixture
def record_factory() -> Iterator[None]:
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


def test_log_records_are_made_with_their_secrets_redacted(
    record_factory: None, caplog: pytest.LogCaptureFixture
) -> None:
    redact_records()
    redact_records()  # once is enough; twice changes nothing
    log = logging.getLogger("tests.redaction")

    with caplog.at_level(logging.INFO, logger="tests.redaction"):
        log.info('%s - "%s %s" %d', "127.0.0.1:1", "GET", "/s?token=gsk_secret", 401)
        log.info("key %(key)s", {"key": "gsk_secret"})
        try:
            raise ValueError("bad key gsk_secret")
        except ValueError:
            log.exception("failed with gsk_secret")

    first, mapping, failure = caplog.records
    assert first.args == ("127.0.0.1:1", "GET", "/s?token=***", 401)  # %d keeps its number
    assert mapping.getMessage() == "key gsk_***"
    assert "gsk_secret" not in caplog.text
    assert failure.exc_text is not None
    assert "bad key gsk_***" in failure.exc_text


@pytest.fixture
def captured(record_factory: None) -> Iterator[io.StringIO]:
    """The root logger configured as a process configures it, writing to a buffer."""
    root = logging.getLogger()
    handlers, level = root.handlers, root.level
    logs.configure("json", "INFO")
    output = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(output)
    yield output
    root.handlers, root.level = handlers, level
    logs.clear_contextvars()


def lines(output: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.getvalue().splitlines()]


def test_a_runs_lines_name_the_run_and_carry_their_fields(captured: io.StringIO) -> None:
    logs.bind_run("1c9f0d8e-0000-4000-8000-000000000001", 2, "alice")
    logs.get_logger("tests.run").info("phase.completed", phase="core", duration_s=1.5)
    logging.getLogger("tests.stdlib").warning("plain %s line", "stdlib")

    structured, plain = lines(captured)
    assert structured["event"] == "phase.completed"
    assert structured["generation_id"] == "1c9f0d8e-0000-4000-8000-000000000001"
    assert (structured["attempt"], structured["owner"]) == (2, "alice")
    assert (structured["phase"], structured["duration_s"]) == ("core", 1.5)
    assert structured["level"] == "info"
    assert structured["logger"] == "tests.run"
    assert str(structured["timestamp"]).endswith("Z")
    # A library's line through the standard library: the same shape, the same context.
    assert plain["event"] == "plain stdlib line"
    assert plain["level"] == "warning"
    assert plain["generation_id"] == structured["generation_id"]


def test_no_secret_reaches_a_json_line_in_any_field(captured: io.StringIO) -> None:
    log = logs.get_logger("tests.secrets")
    log.info("request", path="/s", query="after=1&token=1767225600." + "a" * 43)
    log.info("key.used", note="called with gsk_AbCdEf012", url="postgresql://u:pw@h/db")
    try:
        raise RuntimeError("Authorization: Bearer gsk_AbCdEf012")
    except RuntimeError:
        log.exception("request.crashed")

    text = captured.getvalue()
    assert "gsk_AbCdEf012" not in text
    assert "a" * 43 not in text
    assert ":pw@" not in text
    first, second, crashed = lines(captured)
    assert first["query"] == "after=1&token=***"
    assert second["note"] == "called with gsk_***"
    assert "Bearer ***" in str(crashed["exception"])


def test_the_console_format_is_one_line_per_event(captured: io.StringIO) -> None:
    logs.configure("console", "WARNING")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(captured)
    logs.get_logger("tests.console").info("hidden.by.level")
    logs.get_logger("tests.console").warning("model.retry", attempt=2, wait_s=0.5)

    (line,) = captured.getvalue().splitlines()
    assert "model.retry" in line
    assert "attempt=2" in line
    assert "wait_s=0.5" in line
