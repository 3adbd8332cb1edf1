"""``service/snapshot.py``: the reduction of a run's events into the state a snapshot sends."""

from __future__ import annotations

from typing import Any

import pytest

from service.snapshot import MARKS_MAX, MODEL_TEXT_CHARS, Mark, Reduction, SnapshotData

GENERATION = "00000000-0000-0000-0000-00000000000a"


def event(seq: int, kind: str, stage: str = "core", **data: Any) -> dict[str, Any]:
    return {
        "generation_id": GENERATION, "seq": seq, "type": kind, "status": "running",
        "stage": stage, "progress": seq / 100, "message": kind,
        "timestamp": f"2026-11-30T10:00:{seq:02d}.000000Z", "data": data, "chain": f"{seq:064x}",
    }  # fmt: skip


def started(seq: int, phase: str, attempt: int = 1, **more: Any) -> dict[str, Any]:
    return event(
        seq, "phase.started", phase, phase=phase, number=5, of=5, attempt=attempt,
        provider="gemini", model="m", **more,
    )  # fmt: skip


def completed(seq: int, phase: str, **more: Any) -> dict[str, Any]:
    return event(
        seq, "phase.completed", phase, phase=phase, files=0, attempts=1, prompt_tokens=100,
        output_tokens=10, duration_ms=1000, provider="gemini", model="m", **more,
    )  # fmt: skip


def check(seq: int, step: str, ok: bool, round_: int) -> dict[str, Any]:
    return event(seq, "check.completed", "verify", step=step, ok=ok, reason="", round=round_)


def reduce(events: list[dict[str, Any]]) -> SnapshotData:
    reduction = Reduction()
    for item in events:
        reduction.apply(item)
    return reduction.snapshot()


def reduce_milestones(events: list[dict[str, Any]]) -> SnapshotData:
    """As ``streams/snapshots.py`` feeds it: the milestones, the deltas between them counted
    by their seqs, then the model text's tail, newest first."""
    reduction, previous = Reduction(), 0
    for item in events:
        if item["type"] != "llm.delta":
            reduction.skip_deltas(item["seq"] - previous - 1)
            reduction.apply(item)
            previous = item["seq"]
    reduction.skip_deltas(events[-1]["seq"] - previous)
    reduction.ends_with(events[-1])
    texts = [item["data"]["text"] for item in events if item["type"] == "llm.delta"]
    reduction.model_tail(texts[::-1], more_before=False)
    return reduction.snapshot()


def as_mark(item: dict[str, Any]) -> Mark:
    return Mark(
        seq=item["seq"], type=item["type"], timestamp=item["timestamp"], stage=item["stage"],
        data=item["data"],
    )  # fmt: skip


def test_verify_and_repair_rounds_are_phases_of_their_own_with_their_checks() -> None:
    failed = {"level": "tests", "ok": False, "summary": "1 failed", "rounds": 1, "repairs": 0}
    passed = {"level": "tests", "ok": True, "summary": "all passed", "rounds": 2, "repairs": 1}
    events = [
        event(1, "generation.queued", "queued"),
        event(2, "generation.started", "starting", worker="w", attempt=1, provider="gemini",
              model="m"),
        started(3, "verify", round=1),
        check(4, "compile", True, 1),
        check(5, "tests", False, 1),
        completed(6, "verify", round=1, verification=failed),
        started(7, "repair", round=1),
        event(8, "llm.retrying", "repair", phase="repair", attempt=1, request=1, of=4, wait_s=1.0,
              reason="429"),
        event(9, "llm.waiting", "repair", phase="repair", attempt=1, waited_s=10.0),
        event(10, "llm.delta", "repair", phase="repair", attempt=1, text="fixed"),
        completed(11, "repair", round=1),
        started(12, "verify", round=2),
        check(13, "compile", True, 2),
        event(14, "generation.stalled", "verify", worker="w", attempt=1, silent_s=12.0),
        event(15, "generation.resumed", "verify", worker="v", attempt=2, completed_phases=[]),
        started(16, "verify", attempt=2, round=2),
        check(17, "compile", True, 2),
        check(18, "tests", True, 2),
        completed(19, "verify", round=2, verification=passed),
        event(20, "generation.succeeded", "done", verification=passed, count=20, chain_hash="00"),
    ]  # fmt: skip

    data = reduce(events)

    rounds = [(phase["phase"], phase.get("round")) for phase in data["phases"]]
    assert rounds == [("verify", 1), ("repair", 1), ("verify", 2)]
    first, repair, second = data["phases"]
    assert [c["step"] for c in first["checks"]] == ["compile", "tests"]
    assert first["verification"] == failed
    assert (repair["retries"], repair["waits"], repair["deltas"]) == (1, 1, 1)
    # The resumed round checks again from its start: only the second start's checks count.
    assert [c["step"] for c in second["checks"]] == ["compile", "tests"]
    assert (second["starts"], second["attempt"]) == (2, 2)
    assert second["started_at"] == events[15]["timestamp"]
    assert data["attempt"] == 2
    assert data["verification"] == passed
    assert data["tokens"] == {"prompt_tokens": 300, "output_tokens": 30}
    assert data["counts"]["check.completed"] == 5
    assert data["model_text"] == "fixed"
    assert not data["model_text_truncated"]
    assert (data["provider"], data["model"]) == ("gemini", "m")
    assert data["last_event"] == events[-1]
    assert data["chain"] == events[-1]["chain"]
    assert data["created_at"] == events[0]["timestamp"]


def timeline_run() -> list[dict[str, Any]]:
    """A run with a mark of every kind: a phase restarted, a stall and a resume, a failure
    retried, and a verify round after the retry (a new round: not a restart)."""
    verified = {"level": "tests", "ok": True, "summary": "all passed", "rounds": 1, "repairs": 0}
    return [
        event(1, "generation.queued", "queued"),
        event(2, "llm.waiting", "starting", phase="core", attempt=1, waited_s=5.0),
        event(3, "generation.started", "starting", worker="w", attempt=1, provider="gemini",
              model="m"),
        started(4, "core"),
        event(5, "llm.delta", phase="core", attempt=1, text="broken"),
        started(6, "core", attempt=2, reason="the stream broke"),
        event(7, "llm.retrying", phase="core", attempt=2, request=1, of=4, wait_s=1.0,
              reason="429"),
        event(8, "llm.delta", phase="core", attempt=2, text="whole"),
        completed(9, "core"),
        started(10, "verify", round=1),
        event(11, "generation.stalled", "verify", worker="w", attempt=1, silent_s=12.0),
        event(12, "generation.resumed", "verify", worker="v", attempt=2,
              completed_phases=["core"], gap_s=12.5),
        started(13, "verify", attempt=2, round=1),
        event(14, "generation.failed", "done", error="boom", count=14, chain_hash="00"),
        event(15, "generation.retried", "queued", after="failed", completed_phases=["core"],
              attempt=3),
        event(16, "generation.resumed", "starting", worker="v", attempt=3,
              completed_phases=["core"]),
        started(17, "verify", round=1),
        event(18, "llm.delta", "verify", phase="verify", attempt=1, text=""),
        completed(19, "verify", round=1, verification=verified),
        event(20, "generation.succeeded", "done", verification=verified, count=20,
              chain_hash="00"),
    ]  # fmt: skip


def test_marks_are_the_restarts_retries_waits_stalls_resumes_and_retries_in_seq_order() -> None:
    events = timeline_run()

    data = reduce(events)

    marked = [2, 6, 7, 11, 12, 13, 15, 16]
    assert data["marks"] == [as_mark(events[seq - 1]) for seq in marked]
    assert data["marks_dropped"] == 0
    restarts = [mark["seq"] for mark in data["marks"] if mark["type"] == "phase.started"]
    assert restarts == [6, 13], "a verify round after a retry is a new round, not a restart"


def test_a_restarted_phase_keeps_its_first_start_and_moves_its_latest() -> None:
    events = timeline_run()

    data = reduce(events)

    core, verify, verify_after_retry = data["phases"]
    assert (core["starts"], core["first_started_at"], core["started_at"]) == (
        2, events[3]["timestamp"], events[5]["timestamp"]
    )  # fmt: skip
    assert (verify["starts"], verify["status"]) == (2, "stopped")
    assert verify["first_started_at"] == events[9]["timestamp"]
    assert verify["started_at"] == events[12]["timestamp"]
    assert verify_after_retry["starts"] == 1
    assert verify_after_retry["first_started_at"] == verify_after_retry["started_at"]
    assert verify_after_retry["started_at"] == events[16]["timestamp"]
    # The round's key: the same phase and round, the run retried once more.
    assert [(p["round"], p["retried"]) for p in (verify, verify_after_retry)] == [(1, 0), (1, 1)]


def test_marks_keep_the_last_ones_and_count_the_others() -> None:
    events = [event(1, "generation.queued", "queued"), started(2, "core")]
    events += [
        event(seq, "llm.waiting", phase="core", attempt=1, waited_s=float(seq))
        for seq in range(3, MARKS_MAX + 13)
    ]
    events.append(started(len(events) + 1, "core", attempt=2))

    data = reduce(events)

    assert len(data["marks"]) == MARKS_MAX
    assert data["marks_dropped"] == len(events) - 2 - MARKS_MAX == 11
    assert data["marks"] == [as_mark(item) for item in events[-MARKS_MAX:]]
    assert data["marks"][-1]["type"] == "phase.started"


def test_the_milestones_and_their_gaps_reduce_as_every_event_does() -> None:
    """The timeline run, cut after each event: fed every event, or only the milestones with
    the deltas between them counted, the same state, marks included."""
    events = timeline_run()
    events[4:4] = [event(5, "llm.delta", phase="core", attempt=1, text=f"{n} ") for n in range(9)]
    events = [{**item, "seq": seq} for seq, item in enumerate(events, start=1)]

    for end in range(1, len(events) + 1):
        assert reduce_milestones(events[:end]) == reduce(events[:end]), f"after seq {end}"
    assert len(reduce(events)["marks"]) == 8


@pytest.mark.parametrize(
    ("kind", "error"), [("generation.failed", "boom"), ("generation.cancelled", None)]
)
def test_a_phase_running_when_the_run_ends_is_stopped(kind: str, error: str | None) -> None:
    events = [
        event(1, "generation.queued", "queued"),
        started(2, "core"),
        event(3, kind, "done", **({"error": error} if error else {})),
    ]
    data = reduce(events)
    assert [phase["status"] for phase in data["phases"]] == ["stopped"]
    assert data["error"] == error
    assert data["status"] == "running"  # the last event's own status, as stored


def test_the_model_text_keeps_its_end_and_says_when_it_was_cut() -> None:
    reduction = Reduction()
    reduction.apply(event(1, "generation.queued", "queued"))
    reduction.apply(started(2, "core"))
    pieces = ["a" * 3000, "b" * 999, "c"]
    for seq, text in enumerate(pieces, start=3):
        reduction.apply(event(seq, "llm.delta", text=text))
    whole = reduction.snapshot()
    assert whole["model_text"] == "".join(pieces)[-MODEL_TEXT_CHARS:]
    assert len(whole["model_text"]) == MODEL_TEXT_CHARS
    assert not whole["model_text_truncated"]

    reduction.apply(event(6, "llm.delta", text="d"))
    assert reduction.snapshot()["model_text_truncated"]

    # The same from the tail, newest first, as the snapshot's read gives it.
    tail = Reduction()
    tail.apply(event(1, "generation.queued", "queued"))
    tail.model_tail(["d", "c", "b" * 999, "a" * 3000], more_before=False)
    assert tail.snapshot()["model_text"] == reduction.snapshot()["model_text"]
    assert tail.snapshot()["model_text_truncated"]


def test_a_snapshot_stands_for_at_least_one_event() -> None:
    with pytest.raises(ValueError, match="at least one event"):
        Reduction().snapshot()
