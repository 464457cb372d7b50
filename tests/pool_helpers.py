"""The machinery of the WorkerPool suite (tests/test_pool.py): backends, consumption styles, probes.

**Job bodies.** A test describes a job once, as a *body*: a plain function of the job's
arguments that returns its value, or a generator that yields *waits* (:class:`Sleep`,
:class:`WaitEvent`, :class:`WaitCancelled`) and returns its value. Each backend's adapter
turns a body into the kind of function that backend runs: a blocking function for threads
and processes, a coroutine function that awaits for asyncio. An exception a wait ends
with (a CancelledError, say) is thrown into the body at its ``yield``, so its
``finally`` and ``except`` clauses observe it. Adding a backend is one entry in
:data:`BACKENDS`.

**Probes.** What a body tells the test (it started, it saw a cancel) goes through
probes the backend makes (``backend.log()``, ``backend.event()``, ``backend.meter()``,
``backend.rendezvous(n)``, see tests/probes.py): plain objects where jobs run in the
test's process, manager proxies where they run in worker processes.

**Consumption styles.** A :class:`Session` is one pool, entered and consumed the way user
code would: :class:`SyncSession` with ``with`` and ``map``/``results`` on the test's thread,
:class:`AsyncSession` with ``async with`` and ``amap``/``aresults`` on an event loop of its
own (a plain thread named ``test-consumer-loop``, which the test drives synchronously). The
async session also watches that loop's responsiveness and checks, when the pool has been
left, that no asyncio task outlives it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import itertools
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, cast

import chanflow as cf
from probes import LOCAL, SHARED, Flag, Log, Meter, Probes

__all__ = [
    "BACKENDS",
    "DASK_THREADS_PER_WORKER",
    "DASK_WORKERS",
    "DEFAULT_WORKERS",
    "STOP",
    "STYLES",
    "AsyncSession",
    "Backend",
    "Body",
    "Outcome",
    "Pause",
    "Rendezvous",
    "Session",
    "Sleep",
    "Source",
    "Steps",
    "Style",
    "SyncSession",
    "WaitCancelled",
    "WaitEvent",
    "async_job",
    "thread_job",
]

Body = Callable[..., Any]
DEFAULT_WORKERS = 4
# The Dask test cluster (conftest.dask_client): 2 worker processes of 2 threads each, so
# that the suite's DEFAULT_WORKERS can all run at once.
DASK_WORKERS = 2
DASK_THREADS_PER_WORKER = 2

# -- waits a body can yield -----------------------------------------------------------------


class Wait(ABC):
    """Something a job body waits for: blocking on a thread, awaiting on a loop."""

    @abstractmethod
    def block(self) -> Any: ...

    @abstractmethod
    async def await_(self) -> Any: ...


@dataclass(frozen=True)
class Sleep(Wait):
    seconds: float

    def block(self) -> None:
        time.sleep(self.seconds)

    async def await_(self) -> None:
        await asyncio.sleep(self.seconds)


@dataclass(frozen=True)
class WaitEvent(Wait):
    """Wait until ``event`` is set (True) or ``timeout`` seconds pass (False)."""

    event: Flag
    timeout: float

    def block(self) -> bool:
        return self.event.wait(self.timeout)

    async def await_(self) -> bool:
        deadline = time.monotonic() + self.timeout
        while not self.event.is_set():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.001)
        return True


@dataclass(frozen=True)
class WaitCancelled(Wait):
    """Wait until the job's ``cf.current_context()`` is cancelled (True) or ``timeout`` passes."""

    timeout: float

    def block(self) -> bool:
        return cf.current_context().wait(self.timeout)

    async def await_(self) -> bool:
        context = cf.current_context()
        try:
            await asyncio.wait_for(context, self.timeout)
        except asyncio.TimeoutError:
            return context.cancelled
        return True


Steps = Generator[Wait, Any, Any]


def _advance(steps: Steps, reply: Any, error: BaseException | None) -> tuple[bool, Any]:
    """Resume a body: (True, its value) once it returned, else (False, its next wait)."""
    try:
        return False, steps.send(reply) if error is None else steps.throw(error)
    except StopIteration as stop:
        return True, stop.value


def _run_blocking(steps: Steps) -> Any:
    reply: Any = None
    error: BaseException | None = None
    while True:
        returned, wait = _advance(steps, reply, error)
        if returned:
            return wait
        try:
            reply, error = wait.block(), None
        except BaseException as caught:
            reply, error = None, caught


async def _run_awaiting(steps: Steps) -> Any:
    reply: Any = None
    error: BaseException | None = None
    while True:
        returned, wait = _advance(steps, reply, error)
        if returned:
            return wait
        try:
            reply, error = await wait.await_(), None
        except BaseException as caught:
            reply, error = None, caught


# -- backends -------------------------------------------------------------------------------


def thread_job(body: Body) -> Callable[..., Any]:
    """The body as a plain function: waits block the thread."""

    def job(*args: Any, **kwargs: Any) -> Any:
        outcome = body(*args, **kwargs)
        return _run_blocking(cast(Steps, outcome)) if inspect.isgenerator(outcome) else outcome

    return job


def async_job(body: Body) -> Callable[..., Coroutine[Any, Any, Any]]:
    """The body as a coroutine function: waits are awaited."""

    async def job(*args: Any, **kwargs: Any) -> Any:
        outcome = body(*args, **kwargs)
        if inspect.isgenerator(outcome):
            return await _run_awaiting(cast(Steps, outcome))
        return outcome

    return job


@dataclass(frozen=True)
class Backend:
    """One WorkerPool backend and how to express a job body for it."""

    name: str  # the WorkerPool(backend=...) argument
    job: Callable[[Body], Callable[..., Any]]
    # What becomes of an attempt that timed out: it "runs on" (a thread cannot be
    # stopped), is "cancelled" (an asyncio task), or is "killed" with its process.
    timed_out_jobs: str
    # Where job bodies can report to the test: in memory, or through a manager process.
    probes: Probes
    # The documented bound of the default window (docs/worker-pool.md, "The default
    # window"): 1024 jobs (threads, asyncio) or two chunks per worker of up to 2048
    # jobs (processes) or 512 (Dask), never below two jobs per worker.
    window_cap_per_worker: int = 0
    window_cap: int = 1024

    def __str__(self) -> str:
        return self.name

    def default_window_bound(self, workers: int) -> int:
        """The most jobs a pool with no ``buffer=`` takes ahead of its consumer."""
        return max(2 * workers, self.window_cap, self.window_cap_per_worker * workers)

    def log(self) -> Log[Any]:
        return self.probes.log()

    def event(self) -> Flag:
        return self.probes.event()

    def meter(self) -> Meter:
        return Meter(self.probes)

    def rendezvous(self, parties: int, timeout: float = 3.0) -> Rendezvous:
        return Rendezvous(self.probes, parties, timeout)


BACKENDS = (
    Backend("thread", thread_job, timed_out_jobs="runs on", probes=LOCAL),
    Backend("async", async_job, timed_out_jobs="cancelled", probes=LOCAL),
    Backend(
        "process", thread_job, timed_out_jobs="killed", probes=SHARED, window_cap_per_worker=4096
    ),
)
# On Dask (the session's LocalCluster, see conftest.dask_client: the current client, which
# backend="dask" uses) a timed-out job is abandoned on its worker and runs on, like a thread.
if importlib.util.find_spec("distributed") is not None:
    BACKENDS += (
        Backend(
            "dask", thread_job, timed_out_jobs="runs on", probes=SHARED, window_cap_per_worker=1024
        ),
    )

# -- probes ---------------------------------------------------------------------------------


class Source:
    """A lazy input that counts the items taken from it and notices being closed.

    Hand the pool ``source.sync()`` (a generator) or ``source.async_()`` (an async
    generator); sessions accept the Source itself and pick the right one.
    """

    def __init__(self, items: Iterable[Any], *, error: BaseException | None = None) -> None:
        self._items = items
        self._error = error
        self.pulled = 0
        self.closed = False

    def sync(self) -> Generator[Any, None, None]:
        try:
            for item in self._items:
                self.pulled += 1
                yield item
            if self._error is not None:
                raise self._error
        finally:
            self.closed = True

    async def async_(self) -> AsyncIterator[Any]:
        items = self.sync()
        try:
            for item in items:
                yield item
        finally:
            items.close()  # closing this async generator closes the input

    @classmethod
    def endless(cls) -> Source:
        return cls(itertools.count())


class Rendezvous:
    """``parties`` jobs meet: each yields ``arrive()`` and gets True once all are there."""

    def __init__(self, probes: Probes, parties: int, timeout: float = 3.0) -> None:
        self._parties = parties
        self._timeout = timeout
        self._lock = probes.lock()
        self._arrived = probes.tally()
        self.all_here = probes.event()

    def arrive(self) -> WaitEvent:
        with self._lock:
            if self._arrived.add("parties") >= self._parties:
                self.all_here.set()
        return WaitEvent(self.all_here, self._timeout)


# -- consumption styles ---------------------------------------------------------------------

STOP = object()  # returned by an on_item callback: break out of the loop


@dataclass(frozen=True)
class Pause:
    """Returned by an on_item callback: stop reading for ``seconds``, then call ``then``."""

    seconds: float
    then: Callable[[], object] = lambda: None


OnItem = Callable[[Any], object]


@dataclass
class Outcome:
    """What one consuming loop got: the items, the error that ended it (if any), its time."""

    items: list[Any] = field(default_factory=list)
    error: Exception | None = None
    seconds: float = 0.0


class Session(ABC):
    """One pool, entered on ``with session:`` and left on its exit, consumed in one style."""

    def __init__(self, backend: Backend, pool_kwargs: dict[str, Any]) -> None:
        self.backend = backend
        self.pool_kwargs = {"workers": DEFAULT_WORKERS, "backend": backend.name, **pool_kwargs}
        self.exit_seconds = 0.0
        # Called as soon as the pool has been left (for the async style: on its loop, before
        # that loop shuts down and would finalise leftover async generators by itself).
        self.after_exit: Callable[[], object] = lambda: None

    def job(self, body: Body) -> Callable[..., Any]:
        return self.backend.job(body)

    @abstractmethod
    def __enter__(self) -> Session: ...

    @abstractmethod
    def __exit__(self, *exc_info: Any) -> None: ...

    def consume(
        self,
        method: str,
        body: Body,
        jobs: Iterable[Any] | Source,
        *,
        on_item: OnItem | None = None,
        async_input: bool = False,
        **call_kwargs: Any,
    ) -> Outcome:
        """Loop over ``pool.<method>(job, jobs, **call_kwargs)`` ("map" or "results").

        The consumer's own exceptions (raised by ``on_item``) propagate; any other
        exception ends the loop and is returned in ``Outcome.error``.
        """
        jobs = self._input(jobs, async_input)
        return self._loop_over(method, self.job(body), jobs, _Consumer(on_item), call_kwargs)

    @abstractmethod
    def _input(self, jobs: Iterable[Any] | Source, async_input: bool) -> Any: ...

    @abstractmethod
    def _loop_over(
        self,
        method: str,
        fn: Callable[..., Any],
        jobs: Any,
        consumer: _Consumer,
        call_kwargs: dict[str, Any],
    ) -> Outcome: ...

    @abstractmethod
    def iterate(self, method: str, body: Body, jobs: Iterable[Any] | Source) -> Callable[[], Any]:
        """Start ``pool.<method>`` and return a function that takes its next item."""

    @abstractmethod
    def submit(self, body: Body, *args: Any, **kwargs: Any) -> Future[Any]: ...

    @abstractmethod
    def stats(self) -> Any: ...


class _Consumer:
    """Collects one loop's Outcome; tells the consumer's own errors from the pool's."""

    def __init__(self, on_item: OnItem | None) -> None:
        self.on_item = on_item
        self.outcome = Outcome()
        self._running = False
        self._start = time.monotonic()

    def take(self, item: Any) -> object:
        """Keep ``item``; return what on_item asks for (None, STOP or a Pause)."""
        self.outcome.items.append(item)
        if self.on_item is None:
            return None
        self._running = True
        action = self.on_item(item)
        self._running = False
        return action

    def ended(self, error: Exception | None = None) -> Outcome:
        """The loop is over: re-raise the consumer's own error, or return the Outcome."""
        if error is not None:
            if self._running:
                raise error
            self.outcome.error = error
        self.outcome.seconds = time.monotonic() - self._start
        return self.outcome


class SyncSession(Session):
    """``with cf.WorkerPool(...) as pool: for x in pool.map(...)`` on the test's thread."""

    def __enter__(self) -> SyncSession:
        self.pool = cf.WorkerPool(**self.pool_kwargs)
        entered = self.pool.__enter__()
        assert entered is self.pool, "WorkerPool.__enter__ must return the pool"
        return self

    def __exit__(self, *exc_info: Any) -> None:
        start = time.monotonic()
        try:
            self.pool.__exit__(*exc_info)
        finally:
            self.exit_seconds = time.monotonic() - start
        self.after_exit()

    def _input(self, jobs: Iterable[Any] | Source, async_input: bool) -> Iterable[Any]:
        assert not async_input, "sync code cannot hand the pool an async iterable"
        return jobs.sync() if isinstance(jobs, Source) else jobs

    def _loop_over(
        self,
        method: str,
        fn: Callable[..., Any],
        jobs: Any,
        consumer: _Consumer,
        call_kwargs: dict[str, Any],
    ) -> Outcome:
        try:
            # A plain for loop, so a break or an exception drops the iterator as user code would.
            for item in getattr(self.pool, method)(fn, jobs, **call_kwargs):
                action = consumer.take(item)
                if action is STOP:
                    break
                if isinstance(action, Pause):
                    time.sleep(action.seconds)
                    action.then()
        except Exception as error:
            return consumer.ended(error)
        return consumer.ended()

    def iterate(self, method: str, body: Body, jobs: Iterable[Any] | Source) -> Callable[[], Any]:
        iterator = iter(getattr(self.pool, method)(self.job(body), self._input(jobs, False)))
        return lambda: next(iterator)

    def submit(self, body: Body, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = self.pool.submit(self.job(body), *args, **kwargs)
        return future

    def stats(self) -> Any:
        return self.pool.stats()


class AsyncSession(Session):
    """``async with cf.WorkerPool(...) as pool: async for x in pool.amap(...)``.

    The async code runs on a private event loop thread; every method blocks the test's
    thread until that code is done (at most ``CALL_TIMEOUT`` seconds, so a hang fails).
    """

    CALL_TIMEOUT = 30.0
    TASK_GRACE = 1.0  # how long tasks may take to finish once the pool has been left

    def __enter__(self) -> AsyncSession:
        self.max_stall = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="test-consumer-loop", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._enter())
        except BaseException:
            self._close_loop()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._call(self._exit(exc_info))
        finally:
            self._close_loop()

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(self.CALL_TIMEOUT)

    def _close_loop(self) -> None:
        if self._loop.is_running():
            try:
                self._call(self._loop.shutdown_asyncgens())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()

    async def _enter(self) -> None:
        self.pool = cf.WorkerPool(**self.pool_kwargs)
        entered = await self.pool.__aenter__()
        assert entered is self.pool, "WorkerPool.__aenter__ must return the pool"
        self._heartbeat = asyncio.create_task(self._beat())

    async def _beat(self) -> None:
        """Measure the longest time the loop did not get to run this task."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            self.max_stall = max(self.max_stall, now - last)
            last = now

    async def _exit(self, exc_info: tuple[Any, ...]) -> None:
        start = time.monotonic()
        try:
            await self.pool.__aexit__(*exc_info)
        finally:
            self.exit_seconds = time.monotonic() - start
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        self.after_exit()
        await self._no_task_outlives_the_pool()

    async def _no_task_outlives_the_pool(self) -> None:
        deadline = time.monotonic() + self.TASK_GRACE
        while True:
            others = asyncio.all_tasks() - {asyncio.current_task()}
            if not others:
                return
            assert time.monotonic() < deadline, f"tasks outlived the pool: {others}"
            await asyncio.sleep(0.005)

    def _input(self, jobs: Iterable[Any] | Source, async_input: bool) -> Any:
        if not isinstance(jobs, Source):
            assert not async_input, "wrap the input in a Source to feed it asynchronously"
            return jobs
        return jobs.async_() if async_input else jobs.sync()

    def _loop_over(
        self,
        method: str,
        fn: Callable[..., Any],
        jobs: Any,
        consumer: _Consumer,
        call_kwargs: dict[str, Any],
    ) -> Outcome:
        return cast(Outcome, self._call(self._aloop_over(method, fn, jobs, consumer, call_kwargs)))

    async def _aloop_over(
        self,
        method: str,
        fn: Callable[..., Any],
        jobs: Any,
        consumer: _Consumer,
        call_kwargs: dict[str, Any],
    ) -> Outcome:
        try:
            async for item in getattr(self.pool, "a" + method)(fn, jobs, **call_kwargs):
                action = consumer.take(item)
                if action is STOP:
                    break
                if isinstance(action, Pause):
                    await asyncio.sleep(action.seconds)
                    action.then()
        except Exception as error:
            return consumer.ended(error)
        return consumer.ended()

    def iterate(self, method: str, body: Body, jobs: Iterable[Any] | Source) -> Callable[[], Any]:
        iterator = self._call(self._start_iterating(method, body, self._input(jobs, False)))

        async def take() -> Any:
            return await iterator.__anext__()

        return lambda: self._call(take())

    async def _start_iterating(self, method: str, body: Body, jobs: Any) -> Any:
        return getattr(self.pool, "a" + method)(self.job(body), jobs).__aiter__()

    def submit(self, body: Body, *args: Any, **kwargs: Any) -> Future[Any]:
        async def submit() -> Future[Any]:
            future: Future[Any] = self.pool.submit(self.job(body), *args, **kwargs)
            return future

        future: Future[Any] = self._call(submit())
        return future

    def stats(self) -> Any:
        async def stats() -> Any:
            return self.pool.stats()

        return self._call(stats())


@dataclass(frozen=True)
class Style:
    """A way of consuming a pool: sync (``with`` + ``map``) or async (``async with`` + ``amap``)."""

    name: str
    session_class: type[SyncSession] | type[AsyncSession]

    def __str__(self) -> str:
        return self.name

    def session(self, backend: Backend, **pool_kwargs: Any) -> Session:
        return self.session_class(backend, pool_kwargs)

    def run(
        self,
        backend: Backend,
        method: str,
        body: Body,
        jobs: Iterable[Any] | Source,
        *,
        pool: dict[str, Any] | None = None,
        **consume_kwargs: Any,
    ) -> Outcome:
        """One pool, one consuming loop: the common case."""
        with self.session(backend, **(pool or {})) as session:
            return session.consume(method, body, jobs, **consume_kwargs)


STYLES = (Style("sync", SyncSession), Style("async", AsyncSession))
