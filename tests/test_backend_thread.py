"""The thread backend's own edge cases (its behaviour in a pool is tests/test_pool.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import chanflow as cf
from chanflow._backend import Call, Done, Job, Outcome
from chanflow._backend_thread import ThreadBackend
from chanflow._result import Result
from chanflow._retry import RetryPolicy
from chanflow._stats import StatsRecorder


def make_call(backend: ThreadBackend, delivered: list[Result[Any]]) -> Call:
    def deliver(outcome: Outcome) -> None:
        delivered.extend(outcome.results() if isinstance(outcome, Done) else outcome)

    return Call(
        lambda job: job * 2,
        backend=backend,
        policy=RetryPolicy.build(),
        timeout=None,
        limiter=None,
        stats=StatsRecorder(),
        context=cf.background().with_cancel(),
        deliver=deliver,
    )


def test_close_joins_a_worker_registered_but_not_yet_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A worker is registered under the backend's lock and started just after; a
    # close() in between once raised "cannot join thread before it is started".
    real_start = threading.Thread.start
    registered = threading.Event()

    def slow_start(thread: threading.Thread) -> None:
        if thread.name.startswith("chanflow-worker"):
            registered.set()
            time.sleep(0.1)  # widen the window a busy machine opens by chance
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", slow_start)
    backend = ThreadBackend(workers=2)
    delivered: list[Result[Any]] = []
    call = make_call(backend, delivered)
    submitter = cf.go(backend.submit, call, [Job(call, 0, 21)])
    assert registered.wait(5.0)
    backend.close()
    submitter.result(timeout=5.0)
    assert [result.value for result in delivered] == [42]


def test_submit_after_close_is_refused() -> None:
    backend = ThreadBackend(workers=1)
    call = make_call(backend, [])
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.submit(call, [Job(call, 0, 1)])
