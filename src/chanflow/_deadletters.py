"""Dead letters: where a worker pool puts the jobs that failed for good.

A pool's ``dead_letters=`` setting is a Channel, a callable or a file path;
``make_dead_letter_sink`` turns it into a ``DeadLetterSink`` with one ``put`` method,
so the pool never has to care which kind it was given.
"""

from __future__ import annotations

import inspect
import json
import os
import threading
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from ._channel import Channel
from ._result import Result
from ._select import Recv, Send, select

__all__ = ["DeadLetterSink", "make_dead_letter_sink"]

_ACCEPTED = (
    "None, a chanflow.Channel, a callable taking the failed chanflow.Result, "
    "or the path (str or os.PathLike) of a JSON Lines file"
)


class DeadLetterSink(ABC):
    """Receives each failed job's ``Result`` once, after its last attempt.

    ``put`` may block (a full channel applies backpressure to the pool) and raises
    ValueError if given a successful Result: only failures are dead letters.
    """

    __slots__ = ()

    def put(self, result: Result[Any]) -> None:
        """Deliver one failed job's Result; see the concrete sink for blocking and errors."""
        _check_failed(result)
        self._deliver(result)

    async def aput(self, result: Result[Any]) -> None:
        """Async twin of :meth:`put`, for an event loop: never blocks the loop on a channel."""
        _check_failed(result)
        await self._adeliver(result)

    def put_unless(self, result: Result[Any], stop: Channel[Any]) -> bool:
        """Like :meth:`put`, but give up if ``stop`` is closed first: False then.

        Only a channel sink waits for room, so only it can give up; the others
        deliver at once and return True.
        """
        self.put(result)
        return True

    @abstractmethod
    def _deliver(self, result: Result[Any]) -> None: ...

    async def _adeliver(self, result: Result[Any]) -> None:
        self._deliver(result)

    def close(self) -> None:  # noqa: B027 (a no-op unless the sink holds a resource)
        """Release what the sink holds (the file of a path sink); idempotent, never blocks."""


def _check_failed(result: Result[Any]) -> None:
    if not isinstance(result, Result):
        raise TypeError(f"a dead letter must be a chanflow.Result, not {result!r}")
    if result.error is None:
        raise ValueError(f"only failed results are dead letters, not {result!r}")


class ChannelSink(DeadLetterSink):
    """Sends each failed Result on a channel the caller owns (and closes, not the sink).

    ``put`` blocks while the channel is full (or, unbuffered, until a receiver takes
    the Result): a dead-letter channel nobody drains stalls the pool, which is the
    backpressure a channel is for. Raises ChannelClosed if the channel is closed.
    """

    __slots__ = ("channel",)

    def __init__(self, channel: Channel[Result[Any]]) -> None:
        self.channel = channel

    def _deliver(self, result: Result[Any]) -> None:
        self.channel.send(result)

    async def _adeliver(self, result: Result[Any]) -> None:
        await self.channel.asend(result)

    def put_unless(self, result: Result[Any], stop: Channel[Any]) -> bool:
        _check_failed(result)
        return select(Send(self.channel, result), Recv(stop)).index == 0

    def __repr__(self) -> str:
        return f"ChannelSink({self.channel!r})"


class CallableSink(DeadLetterSink):
    """Calls ``function(result)`` for each failed Result, in the thread (or task) that
    delivers results: the one running the pool's ``map``/``results`` loop, or a
    pipeline stage's thread.

    It blocks for as long as the function runs, and whatever the function raises
    propagates to the caller of ``put``. In ``aput``, a coroutine function's result
    is awaited; ``put`` refuses one (TypeError) rather than leave it unawaited.
    """

    __slots__ = ("function",)

    def __init__(self, function: Callable[[Result[Any]], object]) -> None:
        self.function = function

    def _deliver(self, result: Result[Any]) -> None:
        outcome = self.function(result)
        if inspect.isawaitable(outcome):
            if inspect.iscoroutine(outcome):
                outcome.close()  # never started: closing it avoids a "never awaited" warning
            raise TypeError(
                f"dead_letters callable {self.function!r} returned an awaitable; "
                "async callables work only with the async API (amap, aresults)"
            )

    async def _adeliver(self, result: Result[Any]) -> None:
        outcome = self.function(result)
        if inspect.isawaitable(outcome):
            await outcome

    def __repr__(self) -> str:
        return f"CallableSink({self.function!r})"


class JsonLinesSink(DeadLetterSink):
    """Appends one JSON object a line to a file, opened on the first dead letter.

    Keys: ``job`` (repr of the job), ``index``, ``error_type`` (qualified class name,
    e.g. ``builtins.ValueError``), ``message`` (``str(error)``), ``traceback`` (text,
    or ""), ``attempts``, ``elapsed`` (seconds), ``timestamp`` (ISO 8601, UTC), and ``stage`` (the
    pipeline stage's name, for a pipeline's dead letters).

    Safe to share between threads: one lock serialises the lines, and each line is
    flushed as it is written. ``put`` blocks for one small write; it raises OSError if
    the file cannot be opened or written, ValueError once the sink is closed.
    """

    __slots__ = ("_file", "_lock", "closed", "path")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        _check_writable_location(self.path)
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self.closed = False

    def _deliver(self, result: Result[Any]) -> None:
        line = json.dumps(dead_letter_record(result)) + "\n"
        with self._lock:
            if self.closed:
                raise ValueError(f"dead-letter file sink for {str(self.path)!r} is closed")
            if self._file is None:
                self._file = open(self.path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        """Close the file if it was opened; idempotent. Later ``put`` calls raise ValueError."""
        with self._lock:
            self.closed = True
            file, self._file = self._file, None
        if file is not None:
            file.close()

    def __repr__(self) -> str:
        return f"JsonLinesSink({str(self.path)!r})"


def _check_writable_location(path: Path) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"dead_letters path {str(path)!r} is a directory, not a file")
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"dead_letters path {str(path)!r}: directory {str(path.parent)!r} does not exist"
        )


def _safe_text(function: Callable[[object], str], value: object) -> str:
    try:
        return function(value)
    except Exception as error:  # a broken __repr__/__str__ must not lose the dead letter
        kind = type(value).__name__
        return f"<{kind} object: {function.__name__}() raised {type(error).__qualname__}>"


def _traceback_text(result: Result[Any], error: BaseException) -> str:
    if result.traceback is not None:
        return result.traceback
    if error.__traceback__ is None:
        return ""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def dead_letter_record(result: Result[Any]) -> dict[str, object]:
    """The JSON-ready dict a JSON Lines sink writes for one failed Result."""
    error = result.error
    assert error is not None  # put() checked it
    kind = type(error)
    record: dict[str, object] = {
        "job": _safe_text(repr, result.job),
        "index": result.index,
        "error_type": f"{kind.__module__}.{kind.__qualname__}",
        "message": _safe_text(str, error),
        "traceback": _traceback_text(result, error),
        "attempts": result.attempts,
        "elapsed": result.elapsed,
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }
    if result.stage is not None:
        record["stage"] = result.stage
    return record


def make_dead_letter_sink(spec: object) -> DeadLetterSink | None:
    """Turn a pool's ``dead_letters=`` argument into a sink (None for None).

    A Channel gives a :class:`ChannelSink`, a ``str``/``os.PathLike`` path a
    :class:`JsonLinesSink`, any other callable a :class:`CallableSink`; a
    DeadLetterSink is returned as is. Never blocks and opens no file. Raises
    FileNotFoundError for a path whose directory does not exist, IsADirectoryError
    for a path that is a directory, TypeError for anything else.
    """
    if spec is None or isinstance(spec, DeadLetterSink):
        return spec
    if isinstance(spec, Channel):
        return ChannelSink(spec)
    if isinstance(spec, (str, os.PathLike)):
        return JsonLinesSink(spec)
    if callable(spec):
        return CallableSink(spec)
    raise TypeError(f"dead_letters must be {_ACCEPTED}, not {spec!r}")
