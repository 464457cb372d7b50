"""Handoff throughput of chanflow channels against the usual Python queues and Go.

Every contestant moves ``n`` ints from one producer to one consumer and reports the
cost per item in microseconds. All scenarios are measured in one run and
interleaved: each round runs every contestant of every scenario once (a scenario
with ``repeats`` runs that many sub-rounds), in an order that rotates from round to
round, with ``gc.collect()`` before each measurement, so a slow patch of the machine
(another process, a CPU frequency change) hits all contestants alike. ``run.py``
prints the table; this module measures.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue, SimpleQueue
from typing import Any

import chanflow as cf

try:
    import janus
except ImportError:  # the bench extras are optional: their rows are skipped with a note
    janus = None
try:
    import culsans
except ImportError:
    culsans = None

__all__ = [
    "GO_SOURCE",
    "Contestant",
    "GoBench",
    "Results",
    "Scenario",
    "Target",
    "build_scenarios",
    "measure_all",
    "median",
    "targets",
    "timed",
]

GO_SOURCE = Path(__file__).with_name("go") / "chanbench.go"
BATCH = 256
CAPACITY = 1024

Measure = Callable[[int], float]  # n items -> microseconds per item


@dataclass(frozen=True)
class Contestant:
    """One way of moving items; ``measure(n)`` returns microseconds per item."""

    name: str
    measure: Measure
    items: int | None = None  # overrides the scenario's item count (Go needs more)


@dataclass
class Scenario:
    """Contestants doing the same job; ratios are against ``baseline``."""

    key: str
    title: str
    items: int
    contestants: list[Contestant]
    baseline: tuple[str, str] | None  # (scenario key, contestant name)
    notes: list[str] = field(default_factory=list)
    # Sub-rounds per round, each of ``items``: for scenarios whose cost drifts between
    # regimes lasting seconds, so that both contestants sample each regime alike.
    repeats: int = 1


@dataclass(frozen=True)
class Target:
    """``contestant`` must cost at most ``1 / factor`` of ``baseline`` per item."""

    label: str
    contestant: tuple[str, str]
    baseline: tuple[str, str]
    factor: float


Results = dict[tuple[str, str], list[float]]


# -- thread handoffs ---------------------------------------------------------------


def _threads(produce: Callable[[], None], consume: Callable[[], None], n: int) -> float:
    """Time ``produce`` in this thread against ``consume`` in another; us per item."""
    ready = threading.Event()

    def consumer_main() -> None:
        ready.set()
        consume()

    consumer = threading.Thread(target=consumer_main, name="bench-consumer", daemon=True)
    consumer.start()
    ready.wait()  # the consumer thread is up before the clock starts
    start = time.perf_counter()
    produce()
    consumer.join()
    return _per_item(start, n)


def _thread_handoff(put: Callable[[int], Any], get: Callable[[], Any], n: int) -> float:
    """This thread puts n items one by one, a consumer thread gets them."""

    def produce() -> None:
        for i in range(n):
            put(i)

    def consume() -> None:
        for _ in range(n):
            get()

    return _threads(produce, consume, n)


def _per_item(start: float, n: int) -> float:
    return (time.perf_counter() - start) / n * 1e6


def _channel_threads(capacity: int) -> Measure:
    def measure(n: int) -> float:
        ch: cf.Channel[int] = cf.Channel(capacity)
        return _thread_handoff(ch.send, ch.recv, n)

    return measure


def _queue_threads(maxsize: int) -> Measure:
    def measure(n: int) -> float:
        q: Queue[int] = Queue(maxsize)
        return _thread_handoff(q.put, q.get, n)

    return measure


def _simple_queue_threads(n: int) -> float:
    q: SimpleQueue[int] = SimpleQueue()
    return _thread_handoff(q.put, q.get, n)


def _channel_batches(n: int) -> float:
    """send_many of lists of BATCH items, recv_many(BATCH); n is a multiple of BATCH."""
    ch: cf.Channel[int] = cf.Channel(CAPACITY)
    batches = [list(range(i, i + BATCH)) for i in range(0, n, BATCH)]

    def produce() -> None:
        for batch in batches:
            ch.send_many(batch)

    def consume() -> None:
        received = 0
        while received < n:
            received += len(ch.recv_many(BATCH))

    return _threads(produce, consume, n)


def _select_threads(n: int) -> float:
    """This thread alternates two channels; the consumer thread selects over both."""
    first: cf.Channel[int] = cf.Channel(CAPACITY)
    second: cf.Channel[int] = cf.Channel(CAPACITY)
    cases = (cf.Recv(first), cf.Recv(second))

    def produce() -> None:
        for i in range(0, n, 2):
            first.send(i)
            second.send(i)

    def consume() -> None:
        for _ in range(n):
            cf.select(*cases)

    return _threads(produce, consume, n)


# -- coroutine handoffs (one event loop) ---------------------------------------------


async def _task_handoff(
    put: Callable[[int], Awaitable[Any]], get: Callable[[], Awaitable[Any]], n: int
) -> float:
    """A producer task puts n items, a consumer task gets them; us per item."""

    async def produce() -> None:
        for i in range(n):
            await put(i)

    async def consume() -> None:
        for _ in range(n):
            await get()

    start = time.perf_counter()
    await asyncio.gather(produce(), consume())
    return _per_item(start, n)


def _channel_tasks(n: int) -> float:
    ch: cf.Channel[int] = cf.Channel(CAPACITY)
    return asyncio.run(_task_handoff(ch.asend, ch.arecv, n))


def _asyncio_queue_tasks(n: int) -> float:
    async def main() -> float:
        q: asyncio.Queue[int] = asyncio.Queue(CAPACITY)
        return await _task_handoff(q.put, q.get, n)

    return asyncio.run(main())


# -- mixed: a producer thread, a consumer coroutine ------------------------------------


async def _thread_to_task(
    put: Callable[[int], Any], get: Callable[[], Awaitable[Any]], n: int
) -> float:
    """A producer thread puts n items, this coroutine gets them; us per item."""

    def produce() -> None:
        for i in range(n):
            put(i)

    producer = threading.Thread(target=produce, name="bench-producer", daemon=True)
    start = time.perf_counter()
    producer.start()
    for _ in range(n):
        await get()
    elapsed = _per_item(start, n)
    producer.join()
    return elapsed


def _channel_mixed(n: int) -> float:
    ch: cf.Channel[int] = cf.Channel(CAPACITY)
    return asyncio.run(_thread_to_task(ch.send, ch.arecv, n))


# -- janus and culsans: one queue with a sync side and an async side ---------------------

QueueFactory = Callable[[int], Any]  # maxsize -> a janus.Queue or culsans.Queue


def _sync_sides(make_queue: QueueFactory) -> Measure:
    def measure(n: int) -> float:
        q = make_queue(CAPACITY)
        return _thread_handoff(q.sync_q.put, q.sync_q.get, n)

    return measure


def _async_sides(make_queue: QueueFactory) -> Measure:
    def measure(n: int) -> float:
        return asyncio.run(_in_loop(make_queue, n, thread_producer=False))

    return measure


def _sync_put_async_get(make_queue: QueueFactory) -> Measure:
    def measure(n: int) -> float:
        return asyncio.run(_in_loop(make_queue, n, thread_producer=True))

    return measure


async def _in_loop(make_queue: QueueFactory, n: int, *, thread_producer: bool) -> float:
    q = make_queue(CAPACITY)  # created in the running loop, as janus recommends
    try:
        if thread_producer:
            return await _thread_to_task(q.sync_q.put, q.async_q.get, n)
        return await _task_handoff(q.async_q.put, q.async_q.get, n)
    finally:
        await q.aclose()


# -- Go --------------------------------------------------------------------------------


class GoBench:
    """Builds ``source`` (default go/chanbench.go) into a temporary directory, if Go is there.

    ``note`` says why there is no Go when ``available`` is False. The build uses its
    own GOCACHE and GOPATH inside the temporary directory and ignores the user's
    GOFLAGS, so it works on a clean machine and leaves nothing behind.
    """

    def __init__(self, source: Path = GO_SOURCE) -> None:
        self.source = source
        self._tmp = tempfile.TemporaryDirectory(prefix="chanflow-bench-go-")
        self.binary = Path(self._tmp.name) / source.stem
        self.version = ""
        self.note = ""
        self.available = self._build()

    def _env(self) -> dict[str, str]:
        root = Path(self._tmp.name)
        env = dict(os.environ)
        env.update(
            GOCACHE=str(root / "gocache"),
            GOPATH=str(root / "gopath"),
            GOFLAGS="",
            GOTOOLCHAIN="local",  # never download another toolchain
            GO111MODULE="on",
        )
        return env

    def _build(self) -> bool:
        go = shutil.which("go")
        if go is None:
            self.note = "Go rows skipped: `go` is not on PATH"
            return False
        try:
            self.version = subprocess.run(
                [go, "version"], capture_output=True, text=True, check=True, timeout=30
            ).stdout.strip()
            subprocess.run(
                [go, "build", "-o", str(self.binary), str(self.source)],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
                env=self._env(),
                cwd=self._tmp.name,
            )
        except subprocess.CalledProcessError as error:
            reason = " / ".join(error.stderr.strip().splitlines())[:300]
            self.note = f"Go rows skipped: go build failed: {reason}"
            return False
        except (OSError, subprocess.TimeoutExpired) as error:
            self.note = f"Go rows skipped: {error}"
            return False
        return True

    def measure(self, capacity: int | None = None) -> Measure:
        """Run the binary on n items (with ``-capacity`` unless None); it prints ns per item."""
        flags = [] if capacity is None else ["-capacity", str(capacity)]

        def measure(n: int) -> float:
            done = subprocess.run(
                [str(self.binary), *flags, "-n", str(n)],
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            )
            return float(done.stdout) / 1000.0  # ns -> us

        return measure

    def close(self) -> None:
        self._tmp.cleanup()


# -- the scenarios -----------------------------------------------------------------------


def build_scenarios(scale: float, go: GoBench | None) -> list[Scenario]:
    """The scenarios with item counts multiplied by ``scale`` (1.0 for a full run)."""

    def count(items: int) -> int:
        return max(BATCH, int(items * scale) // BATCH * BATCH)

    buffered = Scenario(
        "1",
        "threads, cap 1024",
        count(400_000),
        [
            Contestant("chanflow.Channel(1024)", _channel_threads(CAPACITY)),
            Contestant("queue.Queue(1024)", _queue_threads(CAPACITY)),
            Contestant("queue.SimpleQueue (unbounded)", _simple_queue_threads),
        ],
        ("1", "queue.Queue(1024)"),
    )
    rendezvous_items = count(12_500)
    rendezvous = Scenario(
        "2",
        "threads, cap 0",
        rendezvous_items,
        [
            Contestant("chanflow.Channel(0)", _channel_threads(0)),
            Contestant("queue.Queue(1)", _queue_threads(1)),
        ],
        ("2", "queue.Queue(1)"),
        [f"4 samples of {rendezvous_items} items per round: thread wake-up cost drifts"],
        repeats=4,
    )
    batched = Scenario(
        "3",
        f"threads, batch {BATCH}",
        count(400_000),
        [Contestant(f"Channel(1024) send_many/recv_many({BATCH})", _channel_batches)],
        ("1", "queue.Queue(1024)"),
        ["baseline: queue.Queue(1024) item by item, the measurement of scenario 1"],
    )
    tasks = Scenario(
        "4",
        "asyncio tasks, cap 1024",
        count(400_000),
        [
            Contestant("chanflow.Channel(1024) asend/arecv", _channel_tasks),
            Contestant("asyncio.Queue(1024)", _asyncio_queue_tasks),
        ],
        ("4", "asyncio.Queue(1024)"),
    )
    mixed = Scenario(
        "5",
        "thread -> task, cap 1024",
        count(200_000),
        [Contestant("chanflow.Channel(1024) send/arecv", _channel_mixed)],
        None,
    )
    selecting = Scenario(
        "6",
        "threads, select, cap 1024",
        count(100_000),
        [Contestant("chanflow.select(Recv(a), Recv(b))", _select_threads)],
        ("1", "queue.Queue(1024)"),
        ["baseline: queue.Queue(1024) of scenario 1 (one queue, no select)"],
    )
    _add_janus_culsans(buffered, tasks, mixed)
    _add_go(buffered, rendezvous, go, scale)
    return [buffered, rendezvous, batched, tasks, mixed, selecting]


def _add_janus_culsans(buffered: Scenario, tasks: Scenario, mixed: Scenario) -> None:
    for name, module in (("janus", janus), ("culsans", culsans)):
        if module is None:
            for scenario in (buffered, tasks, mixed):
                scenario.notes.append(f"{name} rows skipped: {name} is not installed")
            continue
        make_queue = module.Queue
        buffered.contestants.append(
            Contestant(f"{name}.Queue(1024) sync sides", _sync_sides(make_queue))
        )
        tasks.contestants.append(
            Contestant(f"{name}.Queue(1024) async sides", _async_sides(make_queue))
        )
        mixed.contestants.append(
            Contestant(f"{name}.Queue(1024) sync put/async get", _sync_put_async_get(make_queue))
        )
    if janus is not None:
        mixed.baseline = ("5", "janus.Queue(1024) sync put/async get")


def _add_go(buffered: Scenario, rendezvous: Scenario, go: GoBench | None, scale: float) -> None:
    if go is None:
        return
    if not go.available:
        buffered.notes.append(go.note)
        rendezvous.notes.append(go.note)
        return
    buffered.contestants.append(
        Contestant("Go chan int (1024), 2 goroutines", go.measure(CAPACITY), int(2e6 * scale))
    )
    rendezvous.contestants.append(
        Contestant("Go chan int (unbuffered), 2 goroutines", go.measure(0), int(5e5 * scale))
    )


def targets() -> list[Target]:
    """The performance targets, each read off the same run's medians."""
    coroutine = ("4", "chanflow.Channel(1024) asend/arecv")
    return [
        Target(
            "buffered thread handoff >= 2x faster than queue.Queue(1024)",
            ("1", "chanflow.Channel(1024)"),
            ("1", "queue.Queue(1024)"),
            2.0,
        ),
        Target(
            "unbuffered Channel(0) >= 2x faster than queue.Queue(1)",
            ("2", "chanflow.Channel(0)"),
            ("2", "queue.Queue(1)"),
            2.0,
        ),
        Target(
            f"send_many/recv_many({BATCH}) >= 10x faster than queue.Queue(1024) item by item",
            ("3", f"Channel(1024) send_many/recv_many({BATCH})"),
            ("1", "queue.Queue(1024)"),
            10.0,
        ),
        Target(
            "coroutine handoff >= 1x asyncio.Queue(1024)",
            coroutine,
            ("4", "asyncio.Queue(1024)"),
            1.0,
        ),
        Target(
            "coroutine handoff >= 4x janus async sides",
            coroutine,
            ("4", "janus.Queue(1024) async sides"),
            4.0,
        ),
        Target(
            "coroutine handoff >= 4x culsans async sides",
            coroutine,
            ("4", "culsans.Queue(1024) async sides"),
            4.0,
        ),
    ]


# -- running -------------------------------------------------------------------------------


def _rotated(items: list[Any], shift: int) -> Iterator[Any]:
    shift %= max(len(items), 1)
    yield from items[shift:]
    yield from items[:shift]


def measure_all(
    scenarios: list[Scenario], rounds: int, progress: Callable[[str], None] | None = None
) -> Results:
    """Run ``rounds`` rounds; each runs every contestant once, in a rotating order."""
    results: Results = {}
    for round_index in range(rounds):
        started = time.perf_counter()
        for scenario in _rotated(scenarios, round_index):
            for repeat in range(scenario.repeats):
                shift = round_index * scenario.repeats + repeat
                for contestant in _rotated(scenario.contestants, shift):
                    gc.collect()
                    per_item = contestant.measure(contestant.items or scenario.items)
                    results.setdefault((scenario.key, contestant.name), []).append(per_item)
        if progress is not None:
            elapsed = time.perf_counter() - started
            progress(f"round {round_index + 1}/{rounds} done in {elapsed:.1f} s")
    return results


def timed(run: Callable[[], object]) -> float:
    """Seconds ``run()`` takes, wall clock."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def loop(fn: Callable[[int], int], arg: Callable[[int], int]) -> Callable[[int], float]:
    """A contestant: seconds a plain loop takes to call ``fn(arg(job))`` for n jobs."""

    def seconds(n: int) -> float:
        return timed(lambda: [fn(arg(job)) for job in range(n)])

    return seconds


def median(results: Results, key: tuple[str, str]) -> float | None:
    """The median us/item of ``key`` in ``results``, None if it was not measured."""
    samples = results.get(key)
    return statistics.median(samples) if samples else None


if __name__ == "__main__":  # pragma: no cover - run benchmarks/run.py instead
    sys.exit("run benchmarks/run.py")
