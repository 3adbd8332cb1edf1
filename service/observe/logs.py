"""Log lines an on-call engineer can search: one structured line per thing worth knowing, each
naming the run or the request it concerns, none carrying a secret.

Every module logs through the standard library (``logging.getLogger``) or structlog
(``get_logger``, with key-value fields); both reach one handler whose formatter is structlog's
``ProcessorFormatter``, so uvicorn's and asyncpg's lines come out in the same shape as ours:
JSON lines (``GENSTREAM_LOG_FORMAT=json``) or aligned text for a terminal (``console``).

The context rides on ``contextvars``: ``bind_run`` in a run's task adds ``generation_id``,
``attempt`` and ``owner`` to every line logged inside it (a provider's retries
included); the request middleware binds ``request_id``. A task inherits the context it was
created in, so what a run or a request starts carries its identity too.

Secrets: every text a line holds is redacted just before it is rendered (``redact``): a
stream token in a URL, an API key anywhere, a bearer credential, a database password. The record
factory (``redact_records``) redacts records as they are made as well, for handlers that do
not go through our formatter (pytest's capture).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Final, Literal

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, clear_contextvars
from structlog.stdlib import BoundLogger, ProcessorFormatter

__all__ = [
    "bind_contextvars",
    "bind_run",
    "bound_contextvars",
    "clear_contextvars",
    "configure",
    "get_logger",
    "redact",
    "redact_records",
]

LogFormat = Literal["json", "console"]

_TIMESTAMP: Final = structlog.processors.TimeStamper(fmt="iso", utc=True)
_SHARED: Final[list[Any]] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    _TIMESTAMP,
]

structlog.configure(
    processors=[
        structlog.stdlib.filter_by_level,
        *_SHARED,
        structlog.processors.StackInfoRenderer(),
        ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)


def get_logger(name: str) -> BoundLogger:
    logger: BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def bind_run(generation_id: object, attempt: int, owner: str) -> None:
    """Name the run on every line logged from here on in this task (and tasks it starts)."""
    bind_contextvars(generation_id=str(generation_id), attempt=attempt, owner=owner)


def configure(log_format: LogFormat = "console", level: str = "INFO") -> None:
    """Send every record of the process, ours and the libraries', to stderr in one shape."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = ProcessorFormatter(
        processors=[
            ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_event,
            renderer,
        ],
        foreign_pre_chain=[
            *_SHARED,
            structlog.stdlib.ExtraAdder(),
            structlog.stdlib.PositionalArgumentsFormatter(),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # uvicorn installs its own handlers unless told not to; theirs would print twice.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
    redact_records()


def _redact_event(_logger: object, _name: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    """Every text in the line, the exception's included, redacted before it is rendered (the
    rendered JSON cannot be: a secret's pattern would eat its escapes)."""
    return {key: _redact_value(value) for key, value in event.items()}


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(item) for item in value]
    return redact(str(value))


# What must never reach a log line: a credential in a query string (a stream token is good
# for an hour), an API key or a stream token anywhere (a key put in a URL by mistake is
# refused, and would still be logged), a bearer credential, a password in a database URL.
# Each pattern with what a text must hold for it to match: most texts hold none, and a
# substring test says so 20-30 times faster than a pattern's scan (5-8 µs a text, 10 texts
# a line: it was half of a request's log line).
_TOKEN_LENGTH_MIN: Final = 1 + 1 + 43  # digits, a dot, the MAC
_SECRETS: Final[tuple[tuple[re.Pattern[str], str, Callable[[str], bool]], ...]] = (
    (
        re.compile(
            r"(?<![\w-])((?:token|stream_token|access_token|api_key|apikey|key|password|secret)=)"
            r"[^&\s\"']+",
            re.IGNORECASE,
        ),
        r"\1***",
        lambda text: "=" in text,
    ),
    (re.compile(r"\bgsk_[\w-]+"), "gsk_***", lambda text: "gsk_" in text),
    (
        re.compile(r"\b[0-9]+\.(?:[0-9a-f]{32}\.)?[\w-]{43}(?![\w-])"),  # stream tokens
        "***",
        lambda text: len(text) >= _TOKEN_LENGTH_MIN and "." in text,
    ),
    (
        re.compile(r"\b(Bearer\s+)[^\s\"']+", re.IGNORECASE),
        r"\1***",
        lambda text: "bearer" in text.lower(),
    ),
    (re.compile(r"(://[^/:@\s]*:)[^@/\s]+@"), r"\1***@", lambda text: "://" in text),
)


def redact(text: str) -> str:
    """``text`` with every secret it carries replaced by ``***``."""
    for secret, replacement, may_match in _SECRETS:
        if may_match(text):
            text = secret.sub(replacement, text)
    return text


def _redacted(value: Any) -> Any:
    if isinstance(value, (int, float, dict)) or value is None:
        # Never a secret, and a %d placeholder needs the number; a dict is structlog's
        # event, redacted whole when it is rendered.
        return value
    try:
        text = str(value)
    except Exception:
        return value  # logging reports it when it formats the line; never raise here
    clean = redact(text)
    return value if clean == text else clean


_FORMATTER: Final = logging.Formatter()


def redact_records() -> None:
    """Every log record of this process, whoever logs it and wherever it goes, is made with
    its secrets redacted: message, arguments and exception text. uvicorn's access log formats
    from the arguments, so each is redacted in place rather than the message rendered."""
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "redacts", False):
        return

    def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.msg = _redacted(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {name: _redacted(value) for name, value in record.args.items()}
        elif record.args:
            record.args = tuple(_redacted(value) for value in record.args)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(_FORMATTER.formatException(record.exc_info))
        return record

    redacted_record.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacted_record)
