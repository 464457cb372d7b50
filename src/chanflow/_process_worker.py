"""The code a process-backend worker runs: receive chunks, run them, send outcomes back.

This module is what a worker process imports (the forkserver preloads it), so it
imports as little as it can. Every message is a cloudpickled tuple sent with
``Connection.send_bytes``:

parent -> worker: ``("fn", key, fn_bytes)`` registers a call's function;
``("run", key, items)`` runs it over ``items``; ``("stop",)`` ends the worker.
worker -> parent: ``("ready",)`` once the initializer ran, or
``("init-failed", error_text)``; ``("done", outcomes, seconds)`` per chunk, where each
outcome is ``(True, value)`` or ``(False, (error, type_name, message, traceback))``.

A worker ignores SIGINT (the parent decides what Ctrl-C means) and exits by itself
when the parent process dies: a thread waits on the *lifeline* pipe, whose other
end only the parent holds, and ends the process when it reads end-of-file.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any

import cloudpickle

__all__ = ["KNOWN_FUNCTIONS", "worker_main", "worker_state_dict"]

# A worker keeps the functions of this many calls, forgetting the oldest first; the
# parent mirrors the same bookkeeping, so it always knows which ones to send again.
KNOWN_FUNCTIONS = 16

_state: dict[str, Any] | None = None


def worker_state_dict() -> dict[str, Any] | None:
    """The per-worker dict of this process, or None outside a process-backend worker."""
    return _state


def _watch_parent(lifeline: Connection) -> None:
    wait([lifeline])  # readable only at end-of-file: the parent is gone
    os._exit(70)


def _error_outcome(error: BaseException) -> tuple[bool, Any]:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return False, (error, type(error).__qualname__, str(error), text)


def _run(fn: Any, items: list[Any], progress: Any) -> list[tuple[bool, Any]]:
    outcomes: list[tuple[bool, Any]] = []
    append = outcomes.append
    for position, item in enumerate(items):
        progress.value = position  # if this job kills the process, the parent knows it
        try:
            append((True, fn(item)))
        except BaseException as error:  # a job's failure, whatever it is, is its outcome
            append(_error_outcome(error))
    return outcomes


def _portable(outcome: tuple[bool, Any]) -> tuple[bool, Any]:
    """The outcome, or a failure explaining why it cannot travel to the parent."""
    ok, payload = outcome
    try:
        cloudpickle.dumps(payload[0] if not ok else payload)
        return outcome
    except Exception as error:
        if ok:
            message = f"the job's result {payload!r:.200} cannot be sent back: {error}"
            return False, (None, "PicklingError", message, "")
        return False, (None, payload[1], payload[2], payload[3])  # keep the text at least


def _encode_done(outcomes: list[tuple[bool, Any]], seconds: float) -> bytes:
    try:
        return bytes(cloudpickle.dumps(("done", outcomes, seconds)))
    except Exception:
        return bytes(cloudpickle.dumps(("done", [_portable(o) for o in outcomes], seconds)))


def worker_main(conn: Connection, lifeline: Connection, progress: Any, initializer: bytes) -> None:
    """Serve chunks on ``conn`` until told to stop or the parent goes away.

    ``progress`` is a shared integer: the position in the current chunk of the job
    running now, so that the parent can tell which job a crash belongs to.
    """
    global _state
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(lifeline,), daemon=True).start()
    _state = {}
    try:
        init, initargs = cloudpickle.loads(initializer)
        if init is not None:
            init(*initargs)
    except BaseException as error:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        conn.send_bytes(cloudpickle.dumps(("init-failed", text)))
        return
    conn.send_bytes(cloudpickle.dumps(("ready",)))
    functions: dict[int, Any] = {}  # insertion-ordered: the oldest first
    while True:
        try:
            message = cloudpickle.loads(conn.recv_bytes())
        except EOFError:
            return
        kind = message[0]
        if kind == "run":
            started = time.perf_counter()
            outcomes = _run(functions[message[1]], message[2], progress)
            conn.send_bytes(_encode_done(outcomes, time.perf_counter() - started))
        elif kind == "fn":
            if len(functions) >= KNOWN_FUNCTIONS:
                del functions[next(iter(functions))]
            functions[message[1]] = cloudpickle.loads(message[2])
        else:
            return
