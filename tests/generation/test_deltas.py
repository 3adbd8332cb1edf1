"""DeltaBuffer: coalescing a model's many small chunks into few ``llm.delta`` texts."""

from __future__ import annotations

from collections.abc import Callable

from service.generation.deltas import DeltaBuffer


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_clock(start: float = 100.0) -> tuple[Callable[[], float], Callable[[float], None]]:
    """A clock reading a mutable float in a closure, and a function setting it."""
    now = [start]

    def clock() -> float:
        return now[0]

    def set_to(value: float) -> None:
        now[0] = value

    return clock, set_to


def test_text_is_held_until_the_byte_threshold_then_released_whole() -> None:
    clock = FakeClock()
    buffer = DeltaBuffer(flush_s=10.0, flush_bytes=10, clock=clock)

    assert buffer.add("abc") is None
    assert buffer.add("defg") is None
    assert buffer.add("hij") == "abcdefghij"  # exactly 10 bytes
    assert buffer.drain() is None


def test_the_byte_threshold_counts_bytes_not_characters() -> None:
    clock = FakeClock()
    buffer = DeltaBuffer(flush_s=10.0, flush_bytes=8, clock=clock)

    # 'é' is 2 bytes, '☕' 3 bytes: 4 characters but 9 bytes reach the 8-byte threshold.
    assert buffer.add("éé") is None  # 4 bytes
    assert buffer.add("a☕") == "ééa☕"


def test_multibyte_text_below_the_byte_threshold_is_held() -> None:
    clock = FakeClock()
    buffer = DeltaBuffer(flush_s=10.0, flush_bytes=8, clock=clock)

    # 7 characters would reach 8 if characters were counted; 7 single bytes do not.
    assert buffer.add("abcdefg") is None
    assert buffer.add("é") == "abcdefgé"


def test_a_single_chunk_over_the_threshold_is_released_at_once() -> None:
    clock = FakeClock()
    buffer = DeltaBuffer(flush_s=10.0, flush_bytes=4, clock=clock)

    assert buffer.add("a long chunk") == "a long chunk"
    assert buffer.drain() is None


def test_text_is_released_once_flush_s_passed_since_the_last_flush() -> None:
    clock = FakeClock(100.0)
    buffer = DeltaBuffer(flush_s=0.5, flush_bytes=1_000_000, clock=clock)

    clock.now = 100.2
    assert buffer.add("a") is None
    clock.now = 100.49
    assert buffer.add("b") is None
    clock.now = 100.5
    assert buffer.add("c") == "abc"

    # The interval restarts at that flush, not at the buffer's creation.
    clock.now = 100.9
    assert buffer.add("d") is None
    clock.now = 101.0
    assert buffer.add("e") == "de"


def test_the_interval_is_measured_from_a_drain_too() -> None:
    clock, set_to = make_clock(0.0)
    buffer = DeltaBuffer(flush_s=1.0, flush_bytes=1_000_000, clock=clock)

    set_to(5.0)
    assert buffer.add("x") == "x"  # long since creation
    set_to(5.5)
    assert buffer.add("y") is None
    assert buffer.drain() == "y"
    set_to(6.2)  # 1.2 s after the first flush, 0.7 s after the drain
    assert buffer.add("z") is None
    set_to(6.5)
    assert buffer.add("w") == "zw"


def test_the_byte_count_restarts_after_a_flush() -> None:
    clock = FakeClock()
    buffer = DeltaBuffer(flush_s=10.0, flush_bytes=5, clock=clock)

    assert buffer.add("abcde") == "abcde"
    assert buffer.add("fg") is None  # 2 bytes, not 7
    assert buffer.add("hij") == "fghij"


def test_drain_returns_the_rest_then_none() -> None:
    clock = FakeClock()
    buffer = DeltaBuffer(flush_s=10.0, flush_bytes=100, clock=clock)

    assert buffer.drain() is None
    assert buffer.add("held ") is None
    assert buffer.add("text") is None
    assert buffer.drain() == "held text"
    assert buffer.drain() is None


def test_empty_chunks_never_become_an_empty_text() -> None:
    # drain promises None when nothing is buffered; an empty chunk buffers nothing, and an
    # empty string returned here would be emitted as an empty llm.delta event.
    clock = FakeClock(0.0)
    buffer = DeltaBuffer(flush_s=0.1, flush_bytes=1, clock=clock)

    assert buffer.add("") is None
    assert buffer.drain() is None
    clock.now = 5.0
    assert buffer.add("") is None


def test_everything_returned_concatenates_to_everything_added() -> None:
    clock, set_to = make_clock(0.0)
    buffer = DeltaBuffer(flush_s=0.05, flush_bytes=64, clock=clock)
    pieces = ["a", "é", "東京", "\n", "x" * 70, "🚀🚀", "tail  ", "\r\n", "z"] * 30

    added: list[str] = []
    returned: list[str] = []
    for i, piece in enumerate(pieces):
        set_to(i * 0.013)
        added.append(piece)
        if (ready := buffer.add(piece)) is not None:
            returned.append(ready)
    if (rest := buffer.drain()) is not None:
        returned.append(rest)

    assert "".join(returned) == "".join(added)
    assert all(returned)  # never an empty event
    assert 1 < len(returned) < len(pieces)


def test_a_fast_stream_of_small_chunks_becomes_a_few_flushes() -> None:
    clock, set_to = make_clock(0.0)
    buffer = DeltaBuffer(flush_s=0.1, flush_bytes=2048, clock=clock)
    chunk = "0123456789abcdefghi\n"
    assert len(chunk.encode()) == 20

    flushes: list[str] = []
    for i in range(1, 1001):
        set_to(i / 1000)  # 1 ms apart
        if (ready := buffer.add(chunk)) is not None:
            flushes.append(ready)
    if (rest := buffer.drain()) is not None:
        flushes.append(rest)

    assert 10 <= len(flushes) <= 20
    assert "".join(flushes) == chunk * 1000
    assert all(len(text.encode()) <= 2048 + 20 for text in flushes)
