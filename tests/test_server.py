"""``server.py``: what a serving process needs from the operating system. How ``serve`` and
``worker`` start, stop and hand over runs is tested on real processes in test_processes.py
and test_faults.py."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from service.server import raise_open_file_limit


@pytest.fixture
def file_limits() -> Iterator[tuple[int, int]]:
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield limits
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_the_open_file_limit_rises_to_the_hard_limit(file_limits: tuple[int, int]) -> None:
    _, hard = file_limits
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    soft = raise_open_file_limit()

    assert soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert soft == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
