"""A Server-Sent Events parser, written here so that the client depends on httpx only.

It follows the WHATWG HTML standard's "Parsing an event stream" (section 9.2.6) for what a
client of genstream needs: lines end in CRLF, LF or CR (a CR at the end of one chunk and an
LF at the start of the next are one line break); a leading byte order mark is dropped; a line
starting with ``:`` is a comment (``: keepalive``); ``field: value`` loses one space after the
colon, and a line with no colon is a field with an empty value; ``data`` lines join with LF;
``id`` sets the last event id unless it holds NUL, and it outlives the event that carried it;
``retry`` with ASCII digits only sets the reconnection time; other fields are ignored; a blank
line dispatches the event, unless it has no data; whatever is pending when the stream ends is
discarded. It is fed bytes as they arrive and decodes UTF-8 itself, invalid sequences
replaced, as the standard says.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event. ``id`` is the last event id as of this event ("" if none yet)."""

    event: str
    data: str
    id: str


class SSEParser:
    """Feed it the body's chunks; it returns the events each chunk completes.

    ``retry`` is the newest reconnection time the stream asked for, in milliseconds (None
    until it asks); ``last_event_id`` the newest id it set.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._line = ""  # the line not yet ended
        self._after_cr = False  # the last chunk ended in CR: an LF first is not a new line
        self._started = False  # the BOM is looked for once, in the first text
        self._data: list[str] = []
        self._event = ""
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        text = self._decoder.decode(chunk)
        if not text:
            return []  # a partial UTF-8 sequence: nothing to say yet, not even about a CR
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across chunks
        self._after_cr = text.endswith("\r")
        *lines, self._line = _LINE_BREAK.split(self._line + text)
        events = []
        for line in lines:
            event = self._process(line)
            if event is not None:
                events.append(event)
        return events

    def _process(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerSentEvent(event or "message", "\n".join(data), self.last_event_id)
