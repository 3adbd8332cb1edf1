"""The client's SSE parser (``genstream_client/sse.py``) against the WHATWG rules it names."""

from __future__ import annotations

import pytest
from genstream_client.sse import ServerSentEvent, SSEParser


def parse(*chunks: bytes) -> tuple[list[ServerSentEvent], SSEParser]:
    parser = SSEParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events, parser


def test_fields_make_one_event_at_the_blank_line() -> None:
    events, parser = parse(b'id: 7\nevent: file.saved\ndata: {"seq": 7}\n\n')
    assert events == [ServerSentEvent("file.saved", '{"seq": 7}', "7")]
    assert parser.last_event_id == "7"


def test_data_lines_join_with_a_newline_and_only_one_leading_space_goes() -> None:
    events, _ = parse(b"data:  two spaces\ndata:none\ndata\n\n")
    assert events == [ServerSentEvent("message", " two spaces\nnone\n", "")]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_ends_a_line(newline: bytes) -> None:
    stream = newline.join([b"event: a", b"data: 1", b"", b"data: 2", b"", b""])
    events, _ = parse(stream)
    assert [(e.event, e.data) for e in events] == [("a", "1"), ("message", "2")]


def test_crlf_split_between_chunks_is_one_line_break() -> None:
    events, _ = parse(b"data: 1\r", b"\n\r", b"\n")
    assert [e.data for e in events] == ["1"]


def test_byte_by_byte_is_the_same_as_all_at_once() -> None:
    stream = "retry: 2000\n\n: keepalive\n\nid: 1\r\nevent: x\r\ndata: é ✓\r\n\r\n".encode()
    whole, _ = parse(stream)
    split, parser = parse(*(stream[i : i + 1] for i in range(len(stream))))
    assert split == whole == [ServerSentEvent("x", "é ✓", "1")]
    assert parser.retry == 2000


def test_comments_and_unknown_fields_dispatch_nothing() -> None:
    events, _ = parse(b": keepalive\n\n: another\nfoo: bar\n\n")
    assert events == []


def test_an_event_without_data_is_not_dispatched_but_its_id_stays() -> None:
    events, parser = parse(b"id: 3\nevent: x\n\ndata: after\n\n")
    assert events == [ServerSentEvent("message", "after", "3")]
    assert parser.last_event_id == "3"


def test_retry_takes_digits_only() -> None:
    _, parser = parse(b"retry: 1500\n\nretry: 12x\n\nretry: -1\n\nretry:\n\n")
    assert parser.retry == 1500


def test_an_id_with_nul_is_ignored() -> None:
    events, parser = parse(b"id: 1\n\nid: 2\x003\ndata: x\n\n")
    assert events[0].id == "1"
    assert parser.last_event_id == "1"


def test_a_field_without_a_colon_has_an_empty_value() -> None:
    events, _ = parse(b"data\ndata\n\n")
    assert events == [ServerSentEvent("message", "\n", "")]


def test_a_leading_byte_order_mark_is_dropped_and_a_later_one_kept() -> None:
    events, _ = parse(b"\xef\xbb", b"\xbfdata: a\n\ndata: \xef\xbb\xbfb\n\n")
    assert [e.data for e in events] == ["a", "\ufeffb"]


def test_a_utf8_character_split_across_chunks_decodes_whole() -> None:
    events, _ = parse(b"data: \xc3", b"\xa9\n\n")
    assert events[0].data == "é"


def test_invalid_utf8_is_replaced_not_raised() -> None:
    events, _ = parse(b"data: \xff\n\n")
    assert events[0].data == "\ufffd"


def test_what_is_pending_when_the_stream_ends_is_never_dispatched() -> None:
    events, _ = parse(b"data: complete\n\ndata: cut off\n")
    assert [e.data for e in events] == ["complete"]


def test_the_event_name_resets_after_each_dispatch() -> None:
    events, _ = parse(b"event: a\ndata: 1\n\ndata: 2\n\n")
    assert [e.event for e in events] == ["a", "message"]
