"""Test probes that job bodies can share with the test, whichever process the job runs in.

A job body reports what it did (it started, it saw its context cancelled) through a
probe the test made before the run. On the thread and async backends a probe is a
plain in-memory object. A process-backend job runs in another process and gets a
*copy* of everything its function closes over, so there the probes live in a
``multiprocessing`` manager process and the copies are proxies that talk to it (about
30 us a call): what a job appends in a worker, the test reads here.

Each factory is a :class:`Probes`; a backend of pool_helpers names the one it needs.

A test that *times* what a job does cannot use a manager proxy: the first call through
one in a fresh worker process connects to the manager (hundreds of ms under load), and
that cost would land in what is measured. :class:`Stamps` are for that: clock readings
appended to a file, the same few microseconds from any process, first call or not.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterator, MutableMapping, MutableSequence
from multiprocessing.managers import SyncManager
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["LOCAL", "SHARED", "Flag", "Log", "Meter", "Probes", "Stamps", "Tally"]

T = TypeVar("T")


class Flag(Protocol):
    """What tests use of an Event: ``threading.Event`` and a manager's Event both are one."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Lock(Protocol):
    def __enter__(self) -> Any: ...

    def __exit__(self, *exc_info: Any) -> Any: ...


class Probes(ABC):
    """Makes the containers behind the probes: local objects or manager proxies."""

    @abstractmethod
    def list(self) -> MutableSequence[Any]: ...

    @abstractmethod
    def dict(self) -> MutableMapping[Any, Any]: ...

    @abstractmethod
    def event(self) -> Flag: ...

    @abstractmethod
    def lock(self) -> Lock: ...

    def log(self) -> Log[Any]:
        return Log(self.list())

    def tally(self) -> Tally:
        return Tally(self.dict())


class _LocalProbes(Probes):
    def list(self) -> MutableSequence[Any]:
        return []

    def dict(self) -> MutableMapping[Any, Any]:
        return {}

    def event(self) -> Flag:
        return threading.Event()

    def lock(self) -> Lock:
        return threading.Lock()


class _SharedProbes(Probes):
    """Probes in one manager process, started the first time a test asks for one."""

    def __init__(self) -> None:
        self._manager: SyncManager | None = None
        self._starting = threading.Lock()

    @property
    def manager(self) -> SyncManager:
        with self._starting:
            if self._manager is None:
                # forkserver, not fork: the test process has threads (see _backend_process).
                self._manager = multiprocessing.get_context("forkserver").Manager()
            return self._manager

    def list(self) -> MutableSequence[Any]:
        return self.manager.list()

    def dict(self) -> MutableMapping[Any, Any]:
        return self.manager.dict()

    def event(self) -> Flag:
        return self.manager.Event()

    def lock(self) -> Lock:
        return self.manager.Lock()


LOCAL: Probes = _LocalProbes()
SHARED: Probes = _SharedProbes()


class Log(Generic[T]):
    """An append-only list a job appends to; the test reads it like a list (a snapshot)."""

    def __init__(self, items: MutableSequence[T]) -> None:
        self._items = items

    def append(self, item: T) -> None:
        self._items.append(item)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> T:
        return self._items[index]

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items[:]))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Log):
            other = list(other)
        return list(self) == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Log({list(self)!r})"


class Tally:
    """Counts per key. ``add(key)`` is not atomic: calls for one key must not overlap."""

    def __init__(self, counts: MutableMapping[Hashable, int]) -> None:
        self._counts = counts

    def add(self, key: Hashable) -> int:
        """Count one more ``key``; return its new count."""
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return count

    def __getitem__(self, key: Hashable) -> int:
        return self._counts.get(key, 0)


class Meter:
    """Counts how many jobs are inside at once, and the most there ever were."""

    def __init__(self, probes: Probes) -> None:
        self._lock = probes.lock()
        self._counts = probes.dict()
        self._counts.update(inside=0, most=0)

    def enter(self) -> None:
        with self._lock:
            inside = self._counts["inside"] + 1
            self._counts["inside"] = inside
            self._counts["most"] = max(self._counts["most"], inside)

    def leave(self) -> None:
        with self._lock:
            self._counts["inside"] -= 1

    @property
    def most(self) -> int:
        return int(self._counts["most"])


class Stamps:
    """``time.monotonic()`` stamps a job appends to a file, in whatever process it runs.

    CLOCK_MONOTONIC is one clock for the whole machine on Linux, so stamps taken in
    worker processes (process and Dask backends) compare with each other and with the
    test's. A stamp is one ``os.open(O_APPEND)``, one ``os.write`` of a short line and
    one ``close`` (a few microseconds): no connection to set up, nothing to warm up,
    so a fresh worker pays what a warm one does. Appends of one short line by one
    ``write`` do not interleave. A Stamps pickles as its path: cheap to send and load.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def stamp(self, what: str) -> float:
        """Append ``what`` and the time now (taken first thing); return that time."""
        now = time.monotonic()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{what} {now!r}\n".encode())
        finally:
            os.close(fd)
        return now

    def read(self) -> list[tuple[str, float]]:
        """Every stamp so far, ``(what, when)``, in the order they were written."""
        try:
            with open(self.path, encoding="utf-8") as file:
                lines = file.read().splitlines()
        except FileNotFoundError:
            return []
        return [(what, float(when)) for what, when in (line.rsplit(" ", 1) for line in lines)]

    def times(self, what: str) -> list[float]:
        """When each ``what`` stamp was taken, in the order written."""
        return [when for label, when in self.read() if label == what]
