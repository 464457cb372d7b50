"""Graceful, then immediate, stopping of ``chanflow run`` on SIGINT and SIGTERM.

The first signal asks for a stop: no new job starts, running ones may finish within
the grace period. A second signal, or the end of the grace period, stops at once:
the handler raises :class:`HardStop` in the main thread, wherever it waits. Writing
one job's output and journal row is a critical section that such a stop waits for,
so that no job is ever half recorded.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = ["HardStop", "StopSwitch"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class HardStop(BaseException):
    """Raised in the main thread to stop a run at once (a BaseException: nothing may catch it)."""


class StopSwitch:
    """Turns SIGINT/SIGTERM into a graceful stop (``requested``), then a hard one.

    ``on_hard`` runs (in the main thread, from the signal handler) before HardStop is
    raised: it kills what must not outlive the run, such as running commands.
    ``notify`` tells the user that a graceful stop has begun.
    """

    def __init__(
        self, grace: float, on_hard: Callable[[], None], notify: Callable[[str], None]
    ) -> None:
        self.grace = grace
        self.on_hard = on_hard
        self.notify = notify
        self.requested = threading.Event()
        self.signal_name: str | None = None
        self.expired = False
        self._critical = 0
        self._pending = False
        self._timer: threading.Timer | None = None
        self._main = threading.main_thread().ident

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSwitch]:
        """Handle SIGINT and SIGTERM while the block runs; restores the old handlers."""
        previous = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if self._timer is not None:
                self._timer.cancel()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested.is_set():
            self.signal_name = signal.Signals(signum).name
            self.requested.set()
            self._start_grace_timer()
            self.notify(
                f"chanflow: {self.signal_name}: no new jobs; waiting up to {self.grace:g} s "
                "for running ones (send it again to stop at once)"
            )
            return
        self.signal_name = signal.Signals(signum).name
        self.on_hard()
        if self._critical:
            self._pending = True
            return
        raise HardStop

    def _start_grace_timer(self) -> None:
        self._timer = threading.Timer(self.grace, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        self.expired = True
        # A signal aimed at the main thread interrupts whatever it blocks in.
        assert self._main is not None
        signal.pthread_kill(self._main, signal.SIGTERM)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A block that a hard stop lets finish before it raises (main thread only)."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if self._pending and not self._critical:
            self._pending = False
            raise HardStop
