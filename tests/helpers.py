"""Helpers shared by the tests (import as ``from helpers import ...``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def run_threads(*targets: Callable[[], object], timeout: float = 20.0) -> None:
    """Start one thread per target, join them all, and re-raise the first failure."""
    errors: list[BaseException] = []

    def guard(fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guard, args=(fn,), daemon=True) for fn in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [thread for thread in threads if thread.is_alive()]
    assert not alive, f"{len(alive)} test threads still running after {timeout} s: hang"
    if errors:
        raise errors[0]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail (never hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.001)
