"""Pipeline: stages joined by bounded links, each stage concurrent, backpressure end to end.

A flow runs as one thread per stage plus one that reads the source; a ``.map``
stage's thread drives its own :class:`WorkerPool` (threads, asyncio, processes),
the others (``filter``, ``flat_map``, ``batch`` by default) run their function
in that thread. Stages hand each other *lists* of items through :class:`Link`\\ s
(``_link``), so the cost of a hand-off is shared by every item ready at that moment.

Bounds: each stage has a budget of ``buffer`` items, counted from the moment it
takes them from its input link until the next stage (or the consumer) takes them
from its output link, so a paused consumer stops the source after at most the sum
of the stages' buffers. Stopping: the first failure (``on_error="raise"``), a
consumer that leaves its loop, Ctrl-C or a cancelled Context halts the hub every
link shares; every wait wakes, the pools are closed, the source is closed by the
thread that reads it, and the consumer returns once every thread has ended.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
import time
import traceback
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any, Generic, TypeVar, overload

from ._channel import Channel
from ._context import Context
from ._deadletters import DeadLetterSink, make_dead_letter_sink
from ._exceptions import Cancelled, ChannelClosed
from ._flow_journal import (
    FlowJournal,
    check_flow_journal,
    flow_identity,
    tagged_job,
)
from ._link import Budget, Halted, Hub, Link
from ._pool import LiveInput, WorkerPool, _default_workers, resolve_kind
from ._report import PipelineReport, StageMeter, StageReport
from ._result import Result
from ._sync import is_async_callable

__all__ = ["Pipeline"]

T = TypeVar("T")
U = TypeVar("U")

ON_ERROR = ("raise", "skip", "dead_letter")
# WorkerPool settings a stage may give; those that are also per-call go to the call.
_POOL_ONLY = ("workers", "backend", "mp_context", "initializer", "initargs", "max_jobs_per_worker")
_POOL_AND_CALL = ("chunksize", "retries", "retry_on", "backoff", "timeout", "rate")
_STAGE_OPTIONS = frozenset((*_POOL_ONLY, *_POOL_AND_CALL, "ordered"))
# A stage with no buffer= holds at least this many items: enough for each hand-off
# (a thread wake-up, tens of us) to carry a long list: a 3-stage no-op thread flow
# costs about 0.45 us an item at 4096, 0.75 at 2048, 1.1 at 1024 (2-core VM).
_MIN_BUFFER = 4096
# How many items a thread stage (filter, flat_map) takes from its input at once.
_INLINE_CHUNK = 1024
# Closing a run waits this long for its threads; only one blocked in user code (a
# source whose next() never returns, an inline function that hangs) outlives it.
_JOIN_SECONDS = 10.0
# The source reader doubles its pull while the source keeps up, and halves it
# when a pull takes longer than this: a slow source is passed on item by item.
_SLOW_PULL_SECONDS = 0.002

logger = logging.getLogger("chanflow")


def _report_left_behind(threads: Iterable[threading.Thread]) -> None:
    """Log each thread still running after the close's wait, with where it is stuck.

    Such a thread (a daemon) is left behind: say which, as a user cannot see it.
    """
    current = threading.current_thread()
    stuck = [thread for thread in threads if thread.is_alive() and thread is not current]
    if not stuck:
        return  # the usual case: no frame snapshot taken
    frames = sys._current_frames()
    for thread in stuck:
        frame = frames.get(thread.ident or -1)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        logger.warning(
            "chanflow: the pipeline thread %r still runs %.0f s after its flow closed"
            " (blocked in a source or a function?); left behind. Its stack:\n%s",
            thread.name,
            _JOIN_SECONDS,
            stack,
        )


@dataclass(frozen=True)
class _Stage:
    """One stage as declared; a run makes its pool, budget and thread from it."""

    kind: str  # "map", "filter", "flat_map" or "batch"
    name: str
    fn: Callable[[Any], Any] | None
    buffer: int
    on_error: str | None
    dead_letters: object
    pool: dict[str, Any] | None  # WorkerPool(**pool); None: runs in the stage's thread
    call: dict[str, Any] = field(default_factory=dict)
    size: int = 0  # batch
    timeout: float | None = None  # batch
    workers: int = 1


class Pipeline(Generic[T]):
    """A multi-stage flow over ``source``: build it stage by stage, then iterate or run it.

    ``Pipeline(source, *, on_error="raise", dead_letters=None, progress=False,
    context=None)``. ``source`` is an iterable, an async iterable or a
    :class:`Channel` (read until closed). Each method returns a new Pipeline with
    one more stage; nothing runs until the flow is iterated (``for``/``async
    for``), ``run()`` or ``to_channel()``. Each of those runs the flow once, reading
    the source anew (a generator source can be run only once).

    Flow-wide settings: ``on_error`` is the default of every stage's;
    ``dead_letters`` (a Channel, callable or JSON Lines path) receives the failed
    items of stages with ``on_error="dead_letter"`` that have none of their own;
    ``progress=True`` draws one live table (rich) with a row per stage; ``context``:
    cancelling it stops the flow, which raises its error (``cf.Cancelled``).

    ``journal`` (a path or a :class:`Journal`) makes runs durable: each source
    item's final outcome (its outputs, or its dead letters) is committed when its
    last output reaches the consumer, and with ``resume=True`` a run killed at any
    moment is run again without passing the finished items through any stage: their
    stored outputs come first, then the flow's outputs for the others (see
    docs/durable-runs.md). The source must be an iterable or async iterable (read
    again on resume), and the flow may not have ``batch`` stages.
    """

    def __init__(
        self,
        source: Iterable[T] | AsyncIterable[T] | Channel[T],
        *,
        on_error: str = "raise",
        dead_letters: object = None,
        progress: bool = False,
        context: Context | None = None,
        journal: object = None,
        resume: bool = False,
    ) -> None:
        if not isinstance(source, (Iterable, AsyncIterable)):
            raise TypeError(
                f"Pipeline takes an iterable, an async iterable or a chanflow.Channel, "
                f"not {source!r}"
            )
        self._source = source
        self._on_error = _check_on_error(on_error)
        make_dead_letter_sink(dead_letters)  # checked now; each run makes its own
        self._dead_letters = dead_letters
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True or False, not {progress!r}")
        self._progress = progress
        if context is not None and not isinstance(context, Context):
            raise TypeError(f"context must be a chanflow.Context or None, not {context!r}")
        self._context = context
        check_flow_journal(journal, resume, source)
        self._journal = journal
        self._resume = resume
        self._stages: tuple[_Stage, ...] = ()
        self._last_run: _FlowRun | None = None

    def __repr__(self) -> str:
        stages = " -> ".join(stage.name for stage in self._stages) or "(no stages)"
        return f"<Pipeline {stages}>"

    def _with(self, stage: _Stage) -> Pipeline[Any]:
        names = [existing.name for existing in self._stages]
        if stage.name in names:
            stage = replace(stage, name=f"{stage.name}#{len(self._stages) + 1}")
        if (
            stage.on_error == "dead_letter"
            and stage.dead_letters is None
            and self._dead_letters is None
        ):
            raise ValueError(
                f"stage {stage.name!r}: on_error='dead_letter' needs dead_letters= "
                "on the stage or on the Pipeline"
            )
        flow: Pipeline[Any] = Pipeline.__new__(Pipeline)
        flow.__dict__.update(self.__dict__)
        flow._stages = (*self._stages, stage)
        flow._last_run = None
        return flow

    # -- stages -------------------------------------------------------------------------

    @overload
    def map(
        self,
        fn: Callable[[T], Awaitable[U]],
        *,
        name: str | None = None,
        buffer: int | None = None,
        on_error: str | None = None,
        dead_letters: object = None,
        **options: Any,
    ) -> Pipeline[U]: ...

    @overload
    def map(
        self,
        fn: Callable[[T], U],
        *,
        name: str | None = None,
        buffer: int | None = None,
        on_error: str | None = None,
        dead_letters: object = None,
        **options: Any,
    ) -> Pipeline[U]: ...

    def map(
        self,
        fn: Callable[[T], Any],
        *,
        name: str | None = None,
        buffer: int | None = None,
        on_error: str | None = None,
        dead_letters: object = None,
        **options: Any,
    ) -> Pipeline[U]:
        """Add a stage that runs ``fn(item)`` on a :class:`WorkerPool` of its own.

        ``options`` are the WorkerPool's: ``workers``, ``backend`` (``"auto"``,
        ``"thread"``, ``"async"``, ``"process"``, ``"dask"`` or a ``DaskBackend``),
        ``retries``, ``retry_on``, ``backoff``, ``timeout``, ``rate``, ``chunksize``,
        the process settings, and ``ordered`` (default True: items leave the stage in
        the order they came). ``buffer``: the most items the stage holds (its input
        link, its jobs, its output link); default ``max(4096, 2 * workers)`` (lower it
        for large items), or ``1024 * workers`` on processes and Dask (where
        ``workers`` defaults to this machine's CPU count: give a larger cluster's
        thread count, or a buffer).
        ``on_error``: ``"raise"`` (stop the flow, raise the error with the stage named
        in a note), ``"skip"`` or ``"dead_letter"``. Settings are checked here:
        TypeError/ValueError name the bad one.
        """
        return self._with(
            self._function_stage(
                "map", fn, name, buffer, on_error, dead_letters, options, pooled=True
            )
        )

    def filter(
        self,
        predicate: Callable[[T], object],
        *,
        name: str | None = None,
        buffer: int | None = None,
        on_error: str | None = None,
        dead_letters: object = None,
        **options: Any,
    ) -> Pipeline[T]:
        """Add a stage that keeps the items for which ``predicate(item)`` is true.

        The predicate runs in the stage's own thread unless pool ``options`` are
        given (then as in :meth:`map`). Order is kept.
        """
        stage = self._function_stage(
            "filter", predicate, name, buffer, on_error, dead_letters, options, pooled=bool(options)
        )
        return self._with(stage)

    @overload
    def flat_map(
        self,
        fn: Callable[[T], Awaitable[Iterable[U]]],
        *,
        name: str | None = None,
        buffer: int | None = None,
        on_error: str | None = None,
        dead_letters: object = None,
        **options: Any,
    ) -> Pipeline[U]: ...

    @overload
    def flat_map(
        self,
        fn: Callable[[T], Iterable[U]],
        *,
        name: str | None = None,
        buffer: int | None = None,
        on_error: str | None = None,
        dead_letters: object = None,
        **options: Any,
    ) -> Pipeline[U]: ...

    def flat_map(
        self,
        fn: Callable[[T], Any],
        *,
        name: str | None = None,
        buffer: int | None = None,
        on_error: str | None = None,
        dead_letters: object = None,
        **options: Any,
    ) -> Pipeline[U]:
        """Add a stage that passes on every item of the iterable ``fn(item)`` returns.

        Runs like :meth:`filter` (its thread, or a pool if ``options`` are given). The
        items one input yields are passed on together, so the stage may hold more
        than ``buffer`` items by that many.
        """
        stage = self._function_stage(
            "flat_map", fn, name, buffer, on_error, dead_letters, options, pooled=bool(options)
        )
        return self._with(stage)

    def batch(
        self,
        size: int,
        *,
        timeout: float | None = None,
        name: str | None = None,
        buffer: int | None = None,
    ) -> Pipeline[list[T]]:
        """Add a stage that passes on lists of up to ``size`` items.

        A list is passed on when full, when the input ends, or (with ``timeout``)
        at most ``timeout`` seconds after its first item arrived. ``buffer``
        (default ``2 * size``) must be at least ``size``.
        """
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"batch size must be an int >= 1, not {size!r}")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
        ):
            raise ValueError(
                f"batch timeout must be a number of seconds > 0 or None, not {timeout!r}"
            )
        bound = _check_buffer(buffer, 2 * size)
        if bound < size:
            raise ValueError(f"batch buffer ({bound}) must be at least its size ({size})")
        stage = _Stage(
            kind="batch",
            name=name or f"batch({size})",
            fn=None,
            buffer=bound,
            on_error=None,
            dead_letters=None,
            pool=None,
            size=size,
            timeout=None if timeout is None else float(timeout),
        )
        return self._with(stage)

    def _function_stage(
        self,
        kind: str,
        fn: object,
        name: str | None,
        buffer: int | None,
        on_error: str | None,
        dead_letters: object,
        options: dict[str, Any],
        *,
        pooled: bool,
    ) -> _Stage:
        if not callable(fn):
            raise TypeError(f"{kind}() takes a callable, not {fn!r}")
        unknown = sorted(options.keys() - _STAGE_OPTIONS)
        if unknown:
            raise TypeError(f"{kind}() got an unexpected keyword argument {unknown[0]!r}")
        if on_error is not None:
            _check_on_error(on_error)
        if dead_letters is not None:
            make_dead_letter_sink(dead_letters)
            on_error = on_error or "dead_letter"
        stage_name = name or f"{kind}({getattr(fn, '__name__', type(fn).__name__)})"
        if not isinstance(stage_name, str):
            raise TypeError(f"name must be a string, not {stage_name!r}")
        call = {"ordered": options.pop("ordered", True)}
        if not isinstance(call["ordered"], bool):
            raise TypeError(f"ordered must be True or False, not {call['ordered']!r}")
        if not pooled:
            if inspect.iscoroutinefunction(fn) or is_async_callable(fn):
                raise TypeError(
                    f"{kind}() runs {fn!r} in a thread; give it backend='async' to run a "
                    "coroutine function"
                )
            return _Stage(
                kind,
                stage_name,
                fn,
                _check_buffer(buffer, _MIN_BUFFER),
                on_error,
                dead_letters,
                None,
            )
        # Built once now so that every setting is checked here, not when the flow runs.
        probe = WorkerPool(**options)
        workers = probe._workers or _workers_of(probe, fn)
        probe.close()
        default = _default_buffer(probe._kind, fn, workers)
        pool = {key: options[key] for key in options if key in _POOL_ONLY}
        call.update({key: options[key] for key in options if key in _POOL_AND_CALL})
        return _Stage(
            kind,
            stage_name,
            fn,
            _check_buffer(buffer, default),
            on_error,
            dead_letters,
            pool,
            call=call,
            workers=workers,
        )

    # -- running ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[T]:
        """Run the flow; yield its outputs. Each ``next()`` blocks until one is ready.

        Raises the first failure of a stage with ``on_error="raise"`` (a note names the
        stage), or an exception raised by the source itself, after the outputs of the
        items read before it. Leaving the loop stops the flow and returns once every
        stage has ended.
        """
        run = self._start()
        return _consume(run)

    def __aiter__(self) -> AsyncIterator[T]:
        """Async twin of ``__iter__``: waiting never blocks the event loop."""
        run = self._start()
        return _aconsume(run)

    def run(self) -> PipelineReport:
        """Run the flow to its end, discarding the outputs; return its report.

        Blocks until the flow has ended. Raises like iterating it.
        """
        run = self._start()
        for _ in _consume(run):
            pass
        return run.report()

    def to_channel(self, capacity: float = 0) -> Channel[T]:
        """Start the flow in the background; its outputs arrive on the returned channel.

        The channel closes when the flow ends. Closing it (the receiver giving up)
        stops the flow. Call :meth:`join` for the report, or the flow's error.
        """
        channel: Channel[T] = Channel(capacity)
        run = self._start()
        thread = threading.Thread(
            target=_forward, args=(run, channel), name="chanflow-pipeline-out", daemon=True
        )
        run.forwarder = thread
        thread.start()
        return channel

    def join(self, timeout: float | None = None) -> PipelineReport:
        """Wait for a flow started by :meth:`to_channel`; return its report or raise its error.

        Raises TimeoutError if it has not ended within ``timeout`` seconds.
        """
        run = self._last_run
        if run is None or run.forwarder is None:
            raise RuntimeError("join() waits for a flow started by to_channel()")
        run.forwarder.join(timeout)
        if run.forwarder.is_alive():
            raise TimeoutError(f"the pipeline did not end within {timeout} s")
        if run.error is not None:
            raise run.error
        return run.report()

    def report(self) -> PipelineReport:
        """The report of the flow's latest run (a live snapshot while it runs)."""
        if self._last_run is None:
            raise RuntimeError("the pipeline has not run yet")
        return self._last_run.report()

    def _start(self) -> _FlowRun:
        """A new run of the flow; its threads start with the consumer's first step."""
        if not self._stages:
            raise ValueError("the pipeline has no stages: add .map(), .filter(), ...")
        run = _FlowRun(self)
        self._last_run = run
        return run


def _check_on_error(on_error: object) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(
            f"on_error must be one of {', '.join(map(repr, ON_ERROR))}, not {on_error!r}"
        )
    return str(on_error)


def _check_buffer(buffer: object, default: int) -> int:
    if buffer is None:
        return default
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
        raise ValueError(f"buffer must be an int >= 1 or None, not {buffer!r}")
    return buffer


def _workers_of(pool: WorkerPool, fn: object) -> int:
    return _default_workers(resolve_kind(pool._kind, fn))


def _default_buffer(kind: str, fn: object, workers: int) -> int:
    if kind in ("process", "dask"):
        return 1024 * workers
    return max(_MIN_BUFFER, 2 * workers)


# -- one run of a flow ------------------------------------------------------------------


class _FlowRun:
    """The threads, links and pools of one run of a Pipeline."""

    def __init__(self, flow: Pipeline[Any]) -> None:
        self.flow = flow
        self.hub = Hub()
        self.error: BaseException | None = None
        self.forwarder: threading.Thread | None = None
        self.started_at = time.monotonic()
        self.ended_at: float | None = None
        self._closed = False
        self._lock = threading.Lock()
        budgets = [Budget(self.hub, stage.buffer) for stage in flow._stages]
        # Link k feeds stage k (link 0 from the source); its items count in stage k's
        # budget once taken, and link k+1 holds stage k's outputs in the same budget.
        self.source_link = Link(self.hub, budgets[0])
        inputs = [self.source_link]
        self.stages: list[_StageRun] = []
        dead_letters = make_dead_letter_sink(flow._dead_letters)
        self._sinks = [dead_letters] if dead_letters is not None else []
        for index, (stage, budget) in enumerate(zip(flow._stages, budgets, strict=True)):
            output = Link(self.hub, budget)
            sink = self._sink_for(stage, dead_letters)
            on_error = stage.on_error or flow._on_error
            self.stages.append(
                _StageRun(self, index, stage, inputs[-1], output, budget, on_error, sink)
            )
            inputs.append(output)
        self.output = inputs[-1]
        self._threads = [
            threading.Thread(target=self._feed, name="chanflow-pipeline-source", daemon=True)
        ] + [
            threading.Thread(target=stage.main, name=f"chanflow-pipeline-{index}", daemon=True)
            for index, stage in enumerate(self.stages)
        ]
        self._stop_watching: Callable[[], bool] | None = None
        self._progress: Any = None
        # Opened last: a refused journal raises here, before any thread exists.
        self.journal: FlowJournal | None = None
        if flow._journal is not None:
            self.journal = FlowJournal(
                flow._journal,
                resume=flow._resume,
                identity=flow_identity((stage.kind, stage.fn) for stage in flow._stages),
            )

    def _sink_for(self, stage: _Stage, shared: DeadLetterSink | None) -> DeadLetterSink | None:
        if stage.dead_letters is None:
            return shared
        sink = make_dead_letter_sink(stage.dead_letters)
        if sink is not None:
            self._sinks.append(sink)
        return sink

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        context = self.flow._context
        if context is not None:
            self._stop_watching = context.after_func(
                lambda: self.fail(
                    context.error or Cancelled("the pipeline's context was cancelled")
                )
            )
        if self.flow._progress:
            from ._pipeline_progress import PipelineProgress

            self._progress = PipelineProgress(self)

    def fail(self, error: BaseException) -> None:
        """Stop the flow because of ``error`` (the first one wins); any thread."""
        with self._lock:
            if self.error is None:
                self.error = error
        self.hub.halt()

    def close(self) -> None:
        """Stop whatever still runs and wait for every thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.hub.halt()
        if self._stop_watching is not None:
            self._stop_watching()
        for stage in self.stages:
            stage.close_pool()
        deadline = time.monotonic() + _JOIN_SECONDS
        for thread in self._threads:
            if thread.ident is not None and thread is not threading.current_thread():
                # Only a source or function blocked in user code outlives the wait.
                thread.join(max(0.0, deadline - time.monotonic()))
        _report_left_behind(self._threads)
        self.ended_at = time.monotonic()
        if self._progress is not None:
            self._progress.close()
        for sink in self._sinks:
            sink.close()
        if self.journal is not None:
            self.journal.close()

    def sink_of(self, stage_name: str | None) -> DeadLetterSink | None:
        """Where a replayed dead letter of ``stage_name`` goes: that stage's sink."""
        for stage in self.stages:
            if stage.stage.name == stage_name and stage.sink is not None:
                return stage.sink
        return self._sinks[0] if self._sinks else None

    # -- the source -----------------------------------------------------------------------

    def _feed(self) -> None:
        source, link = self.flow._source, self.source_link
        try:
            if isinstance(source, Channel):
                self._feed_channel(source, link)
            elif isinstance(source, Iterable):
                iterator = iter(source)
                if self.journal is not None:
                    iterator = self.journal.tagged(iterator)
                self._feed_iterator(iterator, link)
            elif self.journal is not None:
                asyncio.run(self._afeed(self.journal.atagged(source.__aiter__()), link))
            else:
                asyncio.run(self._afeed(source, link))
            link.close()
        except Halted:
            pass
        except Exception as error:  # the source's own error: after the items before it
            link.close(error)
        except BaseException as error:
            self.fail(error)
        finally:
            if inspect.isgenerator(source):
                source.close()

    @staticmethod
    def _feed_iterator(iterator: Iterator[Any], link: Link) -> None:
        size, cap = 1, link.budget.low_water
        while True:
            granted = link.reserve(size)
            items: list[Any] = []
            started = time.perf_counter()
            try:
                items.extend(islice(iterator, granted))
            finally:  # on an error too: the items read before it go on
                link.put(items, grown=len(items) - granted)
            if len(items) < granted:
                return
            if time.perf_counter() - started < _SLOW_PULL_SECONDS:
                size = min(2 * size, cap)
            else:
                size = max(1, size // 2)

    @staticmethod
    def _feed_channel(channel: Channel[Any], link: Link) -> None:
        while True:
            granted = link.reserve(link.budget.low_water)
            try:
                items = channel.recv_many(granted, timeout=0.1)
            except TimeoutError:
                items = []
            except ChannelClosed:
                link.release(granted)
                return
            link.put(items, grown=len(items) - granted)

    @staticmethod
    async def _afeed(source: AsyncIterable[Any], link: Link) -> None:
        iterator = source.__aiter__()
        try:
            while True:
                granted = await asyncio.to_thread(link.reserve, link.budget.low_water)
                for got in range(granted):
                    try:
                        item = await iterator.__anext__()
                    except StopAsyncIteration:
                        link.release(granted - got)
                        return
                    except BaseException:
                        link.release(granted - got)
                        raise
                    link.put([item])
        finally:
            if inspect.isasyncgen(iterator):
                await iterator.aclose()

    # -- reports --------------------------------------------------------------------------

    def report(self) -> PipelineReport:
        end = self.ended_at or time.monotonic()
        elapsed = end - self.started_at
        stages = tuple(stage.report(elapsed) for stage in self.stages)
        busiest = max(stages, key=lambda stage: stage.busy)
        bottleneck = busiest.name if busiest.busy > 0 else None
        return PipelineReport(stages=stages, elapsed=elapsed, bottleneck=bottleneck)


class _StageRun:
    """One stage of a run: its thread's work, its pool (for a pooled stage), its counts."""

    def __init__(
        self,
        run: _FlowRun,
        index: int,
        stage: _Stage,
        inbox: Link,
        outbox: Link,
        budget: Budget,
        on_error: str,
        sink: DeadLetterSink | None,
    ) -> None:
        self.run = run
        self.index = index
        self.stage = stage
        self.inbox = inbox
        self.outbox = outbox
        self.budget = budget
        self.on_error = on_error
        self.sink = sink
        self.meter = StageMeter()
        self.items_in = 0
        self.pool = WorkerPool(**stage.pool) if stage.pool is not None else None

    def main(self) -> None:
        """The stage's thread: do the work, then close the output (passing on an input error)."""
        try:
            if self.stage.kind == "batch":
                self._batch()
            elif self.pool is not None:
                self._pooled(self.pool)
            else:
                self._inline()
            self.outbox.close(self.inbox.error)
        except Halted:
            pass
        except _StageFailed as failure:
            # Raised to the consumer after the items passed on before it, like an
            # input error; the stages upstream fill their bounds and wait until the
            # consumer, having raised it, stops the flow.
            self.outbox.close(failure.error)
        except BaseException as error:
            if not (isinstance(error, Cancelled) and self.run.hub.halted):
                self.run.fail(error)

    def close_pool(self) -> None:
        if self.pool is not None:
            self.pool.close(cancel_futures=True)

    # -- failures -------------------------------------------------------------------------

    def failed(self, result: Result[Any]) -> None:
        """An item failed for good: skip it, dead-letter it, or stop the flow."""
        self.meter.failed += 1
        result.stage = self.stage.name
        journal = self.run.journal
        if journal is not None:
            journal.untag(result)
        if self.on_error == "raise":
            error = result.error
            assert error is not None
            raise _StageFailed(_named(error, self.stage.name))
        if self.on_error == "skip":
            self.meter.skipped += 1
            if journal is not None:
                journal.failed(result, dead=False)
            return
        assert self.sink is not None, "checked when the stage was added"
        if not self.sink.put_unless(result, self.run.hub.stopped):
            raise Halted("the pipeline was stopped")  # while the sink was full
        self.meter.dead_lettered += 1
        if journal is not None:
            journal.failed(result, dead=True)

    def _failed_in_pool(self, result: Result[Any]) -> None:
        self.failed(result)
        self.outbox.release(1)  # the item leaves the stage here, not through the outbox

    # -- the kinds of work ----------------------------------------------------------------

    def _pooled(self, pool: WorkerPool) -> None:
        stage, kind, journal = self.stage, self.stage.kind, self.run.journal
        # Journaled, the workers run the function on a tagged item's value.
        job_of = _job_of if journal is None else tagged_job
        fn = job_of(kind, stage.fn)  # type: ignore[arg-type]
        options = dict(stage.call, buffer=stage.buffer)
        if self.on_error != "raise":
            options["dead_letters"] = self._failed_in_pool
        batches = pool._map_batches(fn, _Inbox(self), **options)
        try:
            for batch in batches:
                outputs = _shaped(kind, batch) if journal is None else journal.shaped(kind, batch)
                self.meter.items_out += len(outputs)
                self.outbox.put(outputs, grown=len(outputs) - len(batch))
        except (Halted, Cancelled):
            raise
        except Exception as error:
            self.meter.failed += 1
            raise _StageFailed(_named(error, stage.name)) from None
        finally:
            batches.close()  # type: ignore[attr-defined]

    def _inline(self) -> None:
        stage, kind, inbox, outbox = self.stage, self.stage.kind, self.inbox, self.outbox
        fn: Callable[[Any], Any] = stage.fn  # type: ignore[assignment]
        meter = self.meter
        if self.run.journal is not None:
            self._inline_journaled(self.run.journal)
            return
        while (items := inbox.take(_INLINE_CHUNK, self.budget)) is not None:
            self.items_in += len(items)
            outputs: list[Any] = []
            with meter.timed():
                for item in items:
                    try:
                        if kind == "filter":
                            if fn(item):
                                outputs.append(item)
                        else:
                            outputs.extend(fn(item))
                    except Exception as error:
                        self.failed(_failure(item, self.items_in, error))
            meter.items_out += len(outputs)
            outbox.put(outputs, grown=len(outputs) - len(items))

    def _inline_journaled(self, journal: FlowJournal) -> None:
        """:meth:`_inline` on tagged items: the function sees values, the tags follow."""
        kind, meter = self.stage.kind, self.meter
        job = tagged_job(kind, self.stage.fn)  # type: ignore[arg-type]
        while (items := self.inbox.take(_INLINE_CHUNK, self.budget)) is not None:
            self.items_in += len(items)
            made: list[Any] = []
            with meter.timed():
                for item in items:
                    try:
                        made.append(job(item))
                    except Exception as error:
                        self.failed(_failure(item, self.items_in, error))
            outputs = journal.shaped(kind, made)
            meter.items_out += len(outputs)
            self.outbox.put(outputs, grown=len(outputs) - len(items))

    def _batch(self) -> None:
        stage, inbox, outbox = self.stage, self.inbox, self.outbox
        size, timeout = stage.size, stage.timeout
        pending: list[Any] = []
        deadline = 0.0
        while True:
            wait = None if not pending or timeout is None else max(0.0, deadline - time.monotonic())
            items = inbox.take(size - len(pending), self.budget, wait)
            if items is None:
                break
            if items and not pending and timeout is not None:
                deadline = time.monotonic() + timeout
            self.items_in += len(items)
            pending.extend(items)
            if len(pending) >= size or (not items and pending):
                self._pass_batch(pending, outbox)
                pending = []
        if pending:
            self._pass_batch(pending, outbox)

    def _pass_batch(self, pending: list[Any], outbox: Link) -> None:
        self.meter.items_out += 1
        journal = self.run.journal
        batch = pending if journal is None else journal.batched(pending)
        outbox.put([batch], grown=1 - len(pending))

    # -- reports --------------------------------------------------------------------------

    def report(self, elapsed: float) -> StageReport:
        meter, stage = self.meter, self.stage
        stats = self.pool.stats() if self.pool is not None else None
        if stats is not None:
            items_in, retried = stats.submitted, stats.retried
            busy_seconds, finished = stats.busy_seconds, stats.completed + stats.failed
        else:
            items_in, retried = self.items_in, 0
            busy_seconds, finished = meter.busy_seconds, self.items_in
        workers = stage.workers if self.pool is not None else 1
        busy = min(1.0, busy_seconds / (workers * elapsed)) if elapsed > 0 else 0.0
        return StageReport(
            name=stage.name,
            kind=stage.kind,
            workers=workers,
            items_in=items_in,
            items_out=meter.items_out,
            failed=meter.failed,
            retried=retried,
            skipped=meter.skipped,
            dead_lettered=meter.dead_lettered,
            busy=busy,
            mean_latency=busy_seconds / finished if finished and stage.kind != "batch" else None,
            queued=self.inbox.count,
            bound=stage.buffer,
        )


class _Inbox(LiveInput):
    """A pooled stage's input as its pool sees it: what the link has, without blocking."""

    def __init__(self, stage: _StageRun) -> None:
        self._stage = stage

    def take_ready(self, n: int, wake: Callable[[], None]) -> list[Any] | None:
        stage = self._stage
        return stage.inbox.take_ready(n, stage.budget, wake)


class _Keep:
    """``filter`` on a pool: the job returns the item and whether to keep it."""

    def __init__(self, predicate: Callable[[Any], object]) -> None:
        self.predicate = predicate

    def __call__(self, item: Any) -> tuple[Any, bool]:
        return item, bool(self.predicate(item))


class _AsyncKeep(_Keep):
    async def __call__(self, item: Any) -> tuple[Any, bool]:  # type: ignore[override]
        return item, bool(await self.predicate(item))  # type: ignore[misc]


class _Listed:
    """``flat_map`` on a pool: the job returns the items as a list (to travel back whole)."""

    def __init__(self, fn: Callable[[Any], Iterable[Any]]) -> None:
        self.fn = fn

    def __call__(self, item: Any) -> list[Any]:
        return list(self.fn(item))


class _AsyncListed(_Listed):
    async def __call__(self, item: Any) -> list[Any]:  # type: ignore[override]
        return list(await self.fn(item))  # type: ignore[misc]


def _job_of(kind: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The function a pooled stage's workers run for ``fn``."""
    is_async = is_async_callable(fn)
    if kind == "filter":
        return _AsyncKeep(fn) if is_async else _Keep(fn)
    if kind == "flat_map":
        return _AsyncListed(fn) if is_async else _Listed(fn)
    return fn


def _shaped(kind: str, batch: list[Any]) -> list[Any]:
    if kind == "filter":
        return [item for item, keep in batch if keep]
    if kind == "flat_map":
        return [item for items in batch for item in items]
    return batch


def _failure(item: Any, index: int, error: Exception) -> Result[Any]:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return Result(item, index, error=error, traceback=text)


class _StageFailed(Exception):
    """A stage with ``on_error="raise"`` saw ``error``: the flow ends with it."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


def _named(error: BaseException, stage: str) -> BaseException:
    """``error`` with a note naming the pipeline stage it came from (PEP 678)."""
    note = f"raised in pipeline stage {stage!r}"
    notes = getattr(error, "__notes__", [])
    if note not in notes:
        if hasattr(error, "add_note"):
            error.add_note(note)
        else:  # Python 3.10: the attribute PEP 678 reads, set by hand
            error.__notes__ = [*notes, note]  # type: ignore[attr-defined]
    return error


# -- consuming --------------------------------------------------------------------------


def _consume(run: _FlowRun) -> Iterator[Any]:
    output, journal = run.output, run.journal
    held = 0
    try:
        run.start()  # here, not before: an iterator never stepped must not leave threads
        if journal is not None:
            yield from _replayed(run, journal)
        while True:
            output.release(held)
            try:
                items = output.take(1 << 30, None)
            except Halted:
                raise _stopped(run) from None
            if items is None:
                break
            held = len(items)
            yield from (items if journal is None else journal.delivered(items))
        if journal is not None:
            journal.commit()  # items that ended in a stage after the last output
        if output.error is not None:
            raise output.error
    finally:
        run.close()


def _replayed(run: _FlowRun, journal: FlowJournal) -> Iterator[Any]:
    """A resumed run's finished source items: their stored outputs, in source order;
    their dead letters go to the sinks of the stages that made them."""
    journal.wait_ready(lambda: run.hub.halted)
    for outputs, dead_letters in journal.replays():
        for result in dead_letters:
            sink = run.sink_of(result.stage)
            if sink is not None:
                sink.put(result)
        yield from outputs


async def _aconsume(run: _FlowRun) -> AsyncIterator[Any]:
    output, journal = run.output, run.journal
    held = 0
    try:
        run.start()
        if journal is not None:
            # The journal's reads and commits block: they run off the event loop.
            replays = _replayed(run, journal)
            while page := await asyncio.to_thread(lambda: list(islice(replays, 1024))):
                for item in page:
                    yield item
        while True:
            output.release(held)
            try:
                items = await output.atake(1 << 30)
            except Halted:
                raise _stopped(run) from None
            if items is None:
                break
            held = len(items)
            if journal is not None:
                items = await asyncio.to_thread(journal.delivered, items)
            for item in items:
                yield item
        if journal is not None:
            await asyncio.to_thread(journal.commit)
        if output.error is not None:
            raise output.error
    finally:
        await asyncio.to_thread(run.close)


def _stopped(run: _FlowRun) -> BaseException:
    return run.error if run.error is not None else Cancelled("the pipeline was stopped")


def _forward(run: _FlowRun, channel: Channel[Any]) -> None:
    try:
        for item in _consume(run):
            channel.send(item)
    except ChannelClosed:
        pass  # the receiver closed the channel: the flow stops (_consume's finally)
    except BaseException as error:
        run.error = run.error or error
    finally:
        channel.close()
