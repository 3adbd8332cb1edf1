from __future__ import annotations

import hashlib
import math

import pytest

from service.events import EventType, NewEvent, NewFile, Status, status_after

EXPECTED_STATUS = {
    EventType.QUEUED: Status.QUEUED,
    EventType.STARTED: Status.RUNNING,
    EventType.PHASE_STARTED: Status.RUNNING,
    EventType.LLM_DELTA: Status.RUNNING,
    EventType.LLM_RETRYING: Status.RUNNING,
    EventType.LLM_WAITING: Status.RUNNING,
    EventType.FILE_SAVED: Status.RUNNING,
    EventType.PHASE_COMPLETED: Status.RUNNING,
    EventType.CHECK_COMPLETED: Status.RUNNING,
    EventType.RESUMED: Status.RUNNING,
    EventType.STALLED: Status.RUNNING,
    EventType.RETRIED: Status.QUEUED,
    EventType.SUCCEEDED: Status.SUCCEEDED,
    EventType.FAILED: Status.FAILED,
    EventType.CANCELLED: Status.CANCELLED,
}


def test_every_event_type_has_an_expected_status() -> None:
    assert set(EXPECTED_STATUS) == set(EventType)


@pytest.mark.parametrize(("event_type", "status"), EXPECTED_STATUS.items())
def test_status_after_each_event_type(event_type: EventType, status: Status) -> None:
    assert status_after(event_type) is status
    event = NewEvent(event_type, "stage", 0.5, "message")
    assert event.status is status
    assert event.is_terminal is (
        event_type in (EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED)
    )


@pytest.mark.parametrize("progress", [-0.01, 1.01, -1.0, 2.0, math.nan, math.inf])
def test_new_event_refuses_progress_outside_zero_to_one(progress: float) -> None:
    with pytest.raises(ValueError, match="progress must be within"):
        NewEvent(EventType.LLM_DELTA, "models", progress, "chunk")


@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_new_event_accepts_progress_at_and_within_the_bounds(progress: float) -> None:
    assert NewEvent(EventType.LLM_DELTA, "models", progress, "chunk").progress == progress


def test_file_saved_event_carries_size_and_sha256_of_the_utf8_content() -> None:
    content = 'NAME = "Zoë — café ✓ 日本"\n'
    encoded = content.encode("utf-8")
    assert len(encoded) != len(content)  # the test means something only with non-ASCII
    file = NewFile("app/models/café.py", content, "python")

    event = file.saved("models", 0.25)

    assert event.type is EventType.FILE_SAVED
    assert event.status is Status.RUNNING
    assert event.stage == "models"
    assert event.progress == 0.25
    assert "app/models/café.py" in event.message
    assert dict(event.data) == {
        "path": "app/models/café.py",
        "size": len(encoded),
        "sha256": hashlib.sha256(encoded).hexdigest(),
        "language": "python",
    }
    assert file.size == len(encoded)
    assert file.sha256 == hashlib.sha256(encoded).hexdigest()
