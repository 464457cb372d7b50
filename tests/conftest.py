"""Shared fixtures: every test is checked for library threads it left behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

# Threads that may legitimately outlive a test: go()/wg.go() threads may still be
# running the caller's own function, and the shared timer thread exits when idle.
ALLOWED_SURVIVORS = ("chanflow-go", "chanflow-timer")


def library_threads(allowed: tuple[str, ...] = ALLOWED_SURVIVORS) -> list[threading.Thread]:
    return [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith("chanflow-") and not thread.name.startswith(allowed)
    ]


@pytest.fixture(autouse=True)
def no_leaked_library_threads() -> Iterator[None]:
    """Fail a test that leaves a library thread running (beyond the allowed kinds)."""
    before = set(library_threads())
    yield
    # A thread that has finished its work may take a moment to be reaped by the OS.
    deadline = time.monotonic() + 2.0
    leaked = [t for t in library_threads() if t not in before]
    while leaked and time.monotonic() < deadline:
        time.sleep(0.01)
        leaked = [t for t in library_threads() if t not in before and t.is_alive()]
    assert not leaked, f"library threads outlived the test: {leaked}"
