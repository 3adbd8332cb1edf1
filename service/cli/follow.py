"""``follow``: a generation's events, live, from a running server, through the Python client
(``clients/python``), which resumes by itself across dropped connections and restarts.

A line per event for a person (``llm.delta`` text folded into one line per run of deltas),
or with ``--json`` each event's JSON exactly as the stream carried it. The outcome is the
exit code: 0 succeeded; 1 failed, cancelled, or not found; 2 the key is missing or refused
(a bad environment value, like every other command's).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from service.cli.commands import EXIT_FAILED, EXIT_OK, UsageError
from service.errors import GenstreamError, NotFound
from service.settings import ClientSettings, Settings

if TYPE_CHECKING:
    import genstream_client

DEFAULT_URL: Final = "http://127.0.0.1:8000"


class Lines:
    """Each event as one line; a run of ``llm.delta`` events as one line, written when the
    run ends (its text is the model's raw answer: the files it becomes are listed anyway)."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.deltas = 0
        self.characters = 0

    def event(self, event: genstream_client.Event) -> None:
        if event.type == "llm.delta":
            self.deltas += 1
            self.characters += len(str(event.data.get("text", "")))
            return
        self.flush()
        message = event.message
        if event.type == "file.saved" and "size" in event.data:
            message += f" ({event.data['size']} bytes)"
        if event.type == "generation.failed" and event.data.get("error"):
            message += f": {event.data['error']}"
        self.write(f"{event.seq:>5} {event.progress:>4.0%}  {event.type:<21} {message}")

    def flush(self) -> None:
        if self.deltas:
            deltas = "1 delta" if self.deltas == 1 else f"{self.deltas} deltas"
            text = f"{deltas}, {self.characters:,} characters"
            self.write(f"{'':>5} {'':>4}  {'llm.delta':<21} {text}")
            self.deltas = self.characters = 0


def cmd_follow(_settings: Settings, args: argparse.Namespace) -> int:
    import genstream_client
    import httpx

    environment = ClientSettings()
    url = args.url or environment.url or DEFAULT_URL
    if environment.api_key is None or not environment.api_key.get_secret_value().strip():
        raise UsageError(
            "GENSTREAM_API_KEY is not set: export the key to follow with "
            "(`python -m service keys create --owner NAME` makes one)"
        )
    # Each request at INFO would bury the events; the client's reconnects are warnings.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    def write(line: str) -> None:
        print(line, flush=True)

    lines = Lines(write)
    outcome: str | None = None
    try:
        with genstream_client.Genstream(
            url, environment.api_key.get_secret_value().strip()
        ) as client:
            client.get(str(args.generation_id))  # a wrong key, id or URL: said at once
            for event in client.follow(str(args.generation_id), args.after):
                if args.json:
                    write(event.raw)
                else:
                    lines.event(event)
                if event.is_terminal:
                    outcome = event.type
            lines.flush()
            if outcome is None:  # resumed at or after the terminal event: nothing came
                outcome = f"generation.{client.get(str(args.generation_id)).status}"
    except httpx.TransportError as exc:
        raise GenstreamError(f"cannot reach genstream at {url}: {exc}") from None
    # The client's errors as the command line's: a refused key is a bad environment value.
    except genstream_client.Unauthorized as exc:
        raise UsageError(f"{url} refused GENSTREAM_API_KEY: {exc.detail}") from None
    except genstream_client.NotFound as exc:
        raise NotFound(f"{exc.detail} (at {url})") from None
    except genstream_client.GenstreamError as exc:
        raise GenstreamError(str(exc)) from None
    return EXIT_OK if outcome == "generation.succeeded" else EXIT_FAILED
