"""The code a process-backend worker runs: receive chunks, run them, send outcomes back.

This module is what a worker process imports (the forkserver preloads it), so it
imports as little as it can. Every message is a cloudpickled tuple sent with
``Connection.send_bytes``, except outcomes (``part``, ``done``), which carry a small
header first (see ``_OUTCOMES``) and are plainly pickled when they hold a failure
(see ``_dumps``):

parent -> worker: ``("fn", key, fn_bytes)`` registers a call's function;
``("run", key, items, chunk, timeout, flush, eager, starts)`` runs it over ``items``
(``chunk`` numbers the chunk, ``timeout`` is the per-attempt timeout or None,
``flush`` how often to send outcomes ahead, in seconds, ``eager`` whether to send
them ahead right after a failed job too, ``starts`` None or, for each item, the
``time.monotonic()`` before which it must not start: a retry sent ahead of its due
time); ``("stop",)`` ends the
worker. On the lifeline pipe, the parent writes the number of a chunk to cancel.
worker -> parent: ``("ready",)`` once the initializer ran, or
``("init-failed", error_text)``; ``("loaded", key)`` once a function is loaded (one
that cannot be, for example because a module it needs cannot be imported here,
fails each of its jobs saying so); ``("done", failures, values, seconds)`` per chunk:
``values`` in item order (None where a job failed), ``failures`` by position, each
``(error or None, type_name, message, traceback)``. A chunk that runs longer than
``flush`` seconds (or, with ``eager``, that has a job fail) sends its outcomes so far
ahead, as ``("part", failures, values, 0.0)`` messages (positions relative to each
message); ``done`` carries the rest.

A worker ignores SIGINT (the parent decides what Ctrl-C means) and exits by itself
when the parent process dies: a thread waits on the *lifeline* pipe, whose other
end only the parent holds, and ends the process when it reads end-of-file. The same
thread cancels the running job's Context when the parent asks (see JobScope).
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from ._context import Context, background
from ._exceptions import JobTimeout
from ._sync import is_async_callable

__all__ = [
    "KNOWN_FUNCTIONS",
    "JobScope",
    "decode_outcomes",
    "is_outcomes",
    "job_context",
    "worker_main",
    "worker_state_dict",
]

# A worker keeps the functions of this many calls, forgetting the oldest first; the
# parent mirrors the same bookkeeping, so it always knows which ones to send again.
KNOWN_FUNCTIONS = 16

_state: dict[str, Any] | None = None

# A worker sends the outcomes of a long chunk ahead at least this often, so that a
# crash loses at most this much finished work (the rest of its chunk runs again);
# more often for a call whose jobs have killed a worker (each message costs some
# 20-50 us, worth it only where crashes happen).
FLUSH_SECONDS = 0.004
FLUSH_SECONDS_AFTER_CRASH = 0.0005

# Given up after a failure sent ahead (``eager``), so that the parent's thread for
# this worker reads it now. The write of the chunk woke this process, and Linux often
# runs the woken process on the writer's CPU at once: the writer is left runnable but
# waiting for that CPU until this process blocks, at the chunk's end, so the failures
# sent ahead (for their retries to be scheduled at once) got there with ``done``
# anyway: measured, 2-4 ms late in a chunk of 18 failing jobs on 2 cores, even on an
# idle machine. A syscall, ~1 us when nothing else waits for the CPU.
_yield_cpu: Any = getattr(os, "sched_yield", lambda: None)
# At most once in this long, though: on a busy machine a yield may let another
# program run first. Yielding after every failure, a call of 5,000 tiny jobs, half of
# them failing twice, ran 25-40% slower (load 1.5-4 on 2 cores); this way 5-15%.
# Once the parent's thread has run, it waits for the next message, which wakes it.
YIELD_GAP = 0.001


# A job waits at most this long for its start time (``starts``): the parent sends it
# a few milliseconds ahead (``ProcessBackend.dispatch_lead``); a longer wait could
# only come from a clock this process does not share, and must not idle a worker.
MAX_EARLY = 0.05


def worker_state_dict() -> dict[str, Any] | None:
    """The per-worker dict of this process, or None outside a process-backend worker."""
    return _state


class JobScope:
    """The job a worker process is running, for ``cf.current_context()`` inside it.

    The job's Context is made only when the job asks for it. It is cancelled when
    the job ends, when its deadline (the pool's ``timeout``) passes, or when the
    parent cancels the chunk (a message on the lifeline pipe, naming the chunk by
    its sequence number so that a late message cannot cancel the next chunk).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.chunk = -1
        self._cancelled_chunk = -1
        self._timeout: float | None = None
        self._started = 0.0
        self.running = False
        self._context: Context | None = None

    def begin_chunk(self, chunk: int, timeout: float | None) -> None:
        with self._lock:
            self.chunk = chunk
            self._timeout = timeout
        self._started = time.monotonic()  # with a timeout, a chunk holds one job
        self.running = True

    def end_job(self) -> None:
        """The job that asked for its Context has ended: cancel and forget that Context."""
        context = self._context
        if context is not None:
            self._context = None
            context.cancel()

    def end_chunk(self) -> None:
        self.running = False

    def past_deadline(self) -> bool:
        """Whether the running job's attempt has reached its timeout.

        A job that watches its Context ends when the deadline passes, here, maybe
        before the parent's timer marks the attempt timed out; the attempt is a timeout
        all the same, as on the other backends, where the timer decides first.
        """
        timeout = self._timeout
        return timeout is not None and time.monotonic() >= self._started + timeout

    def timeout_error(self) -> JobTimeout:
        return JobTimeout(f"the job ran over {self._timeout} s in its worker process")

    def context(self) -> Context:
        with self._lock:
            context = self._context
            if context is not None:
                return context
            timeout = self._timeout
            root = background()
            if timeout is None:
                context = root.with_cancel()
            else:
                context = root.with_deadline(self._started + timeout)
            self._context = context
            cancelled = self._cancelled_chunk == self.chunk
        if cancelled:
            context.cancel()  # outside the lock: it runs the context's callbacks
        return context

    def cancel(self, chunk: int) -> None:
        with self._lock:
            self._cancelled_chunk = chunk
            context = self._context if chunk == self.chunk else None
        if context is not None:
            context.cancel()


_scope: JobScope | None = None


def job_context() -> Context | None:
    """The running job's Context in a worker process; None anywhere else."""
    scope = _scope
    if scope is None or not scope.running:
        return None
    return scope.context()


def _watch_parent(lifeline: Connection, scope: JobScope) -> None:
    while True:
        try:
            message = lifeline.recv_bytes()  # a chunk to cancel
        except (EOFError, OSError):
            os._exit(70)  # end-of-file: the parent is gone
        scope.cancel(int.from_bytes(message, "little", signed=True))


Failure = tuple[Any, str, str, str]  # (the error or None, its type name, message, traceback)


def _failure(error: BaseException) -> Failure:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return error, type(error).__qualname__, str(error), text


class _Unloadable:
    """Stands for a function that could not be loaded here: each job fails saying why."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __call__(self, item: Any) -> Any:
        message = f"the job function could not be loaded in the worker process: {self.error!r}"
        raise RuntimeError(message) from self.error


_loop: Any = None  # this worker's event loop, made for the first coroutine function


class _OnLoop:
    """A coroutine function, each job run to completion on the worker's event loop.

    A worker runs one job at a time, whatever its kind: concurrency comes from the
    number of workers (use ``backend="async"`` for many concurrent awaits).
    """

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, item: Any) -> Any:
        global _loop
        if _loop is None:
            import asyncio  # only workers that run coroutine functions pay for it

            _loop = asyncio.new_event_loop()
        return _loop.run_until_complete(self.fn(item))


def _load(fn_bytes: bytes) -> Any:
    try:
        fn = cloudpickle.loads(fn_bytes)
    except Exception as error:  # e.g. a module the worker cannot import
        return _Unloadable(error)
    return _OnLoop(fn) if is_async_callable(fn) else fn


def _run(
    fn: Any,
    items: list[Any],
    progress: Any,
    scope: JobScope,
    conn: Connection,
    flush: float,
    eager: bool = False,
    starts: list[float] | None = None,
) -> tuple[dict[int, Failure], list[Any], float]:
    """Run ``fn`` over ``items``: the failures by position, the values (None where failed),
    and the seconds spent waiting for start times.

    Outcomes are sent ahead as ``part`` messages whenever ``flush`` seconds of work
    have gone by, and with ``eager`` right after a job failed (the parent schedules
    its retry at once; the CPU is given up then, see ``_yield_cpu``); what is
    returned is the rest (positions relative to it). With ``starts``, no item starts
    before its start time (the wait is not the jobs' time: the parent sizes chunks by it).
    """
    failures: dict[int, Failure] = {}
    values: list[Any] = []
    append = values.append
    now = time.perf_counter
    flush_at = now() + flush
    yield_at = 0.0
    waited = 0.0
    try:
        for position, item in enumerate(items):
            progress.value = position  # if this job kills the process, the parent knows it
            if starts is not None:
                waited += _wait_until(starts[position])
            try:
                append(fn(item))
            except BaseException as error:  # a job's failure, whatever it is, is its outcome
                append(None)
                failures[len(values) - 1] = _failure(error)
                if eager and position < len(items) - 1:  # (the last one goes with done)
                    flush_at = 0.0
            if scope._context is not None:  # the job asked for its Context (rare: ~20 ns)
                if scope.past_deadline() and len(values) - 1 not in failures:
                    values[-1] = None
                    failures[len(values) - 1] = _failure(scope.timeout_error())
                scope.end_job()
            if now() >= flush_at:
                conn.send_bytes(_encode_outcomes("part", failures, values, 0.0))
                if flush_at == 0.0 and now() >= yield_at:  # a failure went ahead: see _yield_cpu
                    _yield_cpu()
                    yield_at = now() + YIELD_GAP
                failures, values = {}, []
                append = values.append
                flush_at = now() + flush
    finally:
        scope.end_chunk()
    return failures, values, waited


def _wait_until(when: float) -> float:
    """Sleep until ``time.monotonic()`` reaches ``when`` (at most MAX_EARLY): the seconds."""
    wait = min(when - time.monotonic(), MAX_EARLY)
    if wait <= 0:
        return 0.0
    time.sleep(wait)
    return wait


def _dumps(outcome: Any) -> bytes:
    """``outcome`` pickled: plainly if it can be (a failed job's exception and traceback
    text, a sixth of cloudpickle's ~30 us, which a retry waits for), else by cloudpickle
    (an exception class defined in the caller's ``__main__`` or a function)."""
    try:
        return pickle.dumps(outcome, pickle.HIGHEST_PROTOCOL)
    except Exception:
        return bytes(cloudpickle.dumps(outcome))


def _portable_failure(failure: Failure) -> Failure:
    """``failure``, or its text alone if its error would not come back to life elsewhere.

    A round trip, not just a dump: an exception whose ``__init__`` takes other
    arguments than its message pickles fine and fails to unpickle.
    """
    try:
        cloudpickle.loads(_dumps(failure[0]))
        return failure
    except Exception:
        return None, failure[1], failure[2], failure[3]  # keep the text at least


# A ``part`` or ``done`` message is this header, then the pickled ``(failures,
# values)``. The header alone says how many jobs the message covers, so that a parent
# that cannot unpickle what they returned (a class it cannot import, a __reduce__
# that fails there) fails exactly those jobs instead of losing track of the chunk.
# Other messages are plain pickles, which never start with the marker byte.
_OUTCOMES = struct.Struct("<c?Id")  # marker, done (else part), jobs covered, seconds
_MARKER = b"O"


def _encode_outcomes(
    kind: str, failures: dict[int, Failure], values: list[Any], seconds: float
) -> bytes:
    """A ``part`` or ``done`` message; what cannot be pickled becomes a failure saying so."""
    header = _OUTCOMES.pack(_MARKER, kind == "done", len(values), seconds)
    try:
        if failures:  # rare: check each error can come back before trusting the whole
            failures = {position: _portable_failure(f) for position, f in failures.items()}
            return header + _dumps((failures, values))
        return header + bytes(cloudpickle.dumps((failures, values)))
    except Exception:
        pass
    for position, value in enumerate(values):
        if position in failures:
            continue
        try:
            cloudpickle.dumps(value)
        except Exception as error:
            message = f"the job's result {value!r:.200} cannot be sent back: {error}"
            failures[position] = (TypeError(message), "TypeError", message, "")
            values[position] = None
    return header + bytes(cloudpickle.dumps((failures, values)))


def is_outcomes(data: bytes) -> bool:
    """Whether a worker's message is a ``part`` or ``done`` message (see decode_outcomes)."""
    return data[:1] == _MARKER


def decode_outcomes(data: bytes) -> tuple[str, dict[int, Failure], list[Any], float]:
    """``(kind, failures, values, seconds)`` of a ``part`` or ``done`` message.

    If the outcomes cannot be unpickled here, each job the message covers fails with
    a failure saying so (a RemoteError once it reaches its Result): one bad value
    costs the outcomes sent with it, at most a chunk's, never the pool.
    """
    _, done, count, seconds = _OUTCOMES.unpack_from(data)
    kind = "done" if done else "part"
    try:
        failures, values = cloudpickle.loads(memoryview(data)[_OUTCOMES.size :])
    except Exception as error:
        message = (
            f"the outcomes of {count} jobs came back from their worker process in one "
            f"message that cannot be unpickled in the parent process ({type(error).__name__}: "
            f"{error}); this job ran there, but what it returned or raised is lost"
        )
        failure: Failure = (None, "UnpicklingError", message, "")
        return kind, dict.fromkeys(range(count), failure), [None] * count, seconds
    for failed, *_ in failures.values():
        _drop_rebuilt_tracebacks(failed)
    return kind, failures, values, seconds


def _drop_rebuilt_tracebacks(error: BaseException | None) -> None:
    """Drop the tracebacks that unpickling gave ``error`` and the errors it chains to.

    An error travels without one, unless a library made tracebacks pickle (tblib, which
    distributed installs): then unpickling rebuilds one from frames whose callers are
    the frames decoding it, which hold the chunk (and its Dask future, whose task stays
    on the cluster) in a cycle until the garbage collector runs. The worker's
    traceback is kept as text, attached as the error's cause (``_RemoteTraceback``),
    as it is without tblib.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__cause__ or error.__context__


def worker_main(conn: Connection, lifeline: Connection, progress: Any, initializer: bytes) -> None:
    """Serve chunks on ``conn`` until told to stop or the parent goes away.

    ``progress`` is a shared integer: the position in the current chunk of the job
    running now, so that the parent can tell which job a crash belongs to.
    """
    global _state, _scope
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    scope = _scope = JobScope()
    threading.Thread(target=_watch_parent, args=(lifeline, scope), daemon=True).start()
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
        except (EOFError, OSError):  # the parent has gone (closed, or reset by its death)
            return
        kind = message[0]
        if kind == "run":
            _, key, items, chunk, timeout, flush, eager, starts = message
            scope.begin_chunk(chunk, timeout)
            started = time.perf_counter()
            fn = functions[key]
            failures, values, waited = _run(fn, items, progress, scope, conn, flush, eager, starts)
            seconds = time.perf_counter() - started - waited
            conn.send_bytes(_encode_outcomes("done", failures, values, seconds))
        elif kind == "fn":
            if len(functions) >= KNOWN_FUNCTIONS:
                del functions[next(iter(functions))]
            functions[message[1]] = _load(message[2])
            conn.send_bytes(cloudpickle.dumps(("loaded", message[1])))
        else:
            return
