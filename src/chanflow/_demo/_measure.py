"""Measure a piece of work in a child process: wall time, CPU time, peak memory.

:func:`measure` forks; the child does the work and exits, and this process waits
for it and for every process it started, sampling their memory meanwhile. Forking
(rather than starting a new interpreter) means every run starts from the same state,
imports done, and costs no start-up; so the caller must have no other threads.

* **CPU** is user + system seconds of the child and all its descendants, read from
  ``RUSAGE_CHILDREN`` before and after. It is exact on Linux: this process makes
  itself a *subreaper*, so processes the child leaves behind (a forkserver and its
  workers) become its children when the child exits, and it waits for them too.
* **Peak memory** is the highest total, over samples every ``SAMPLE_SECONDS``, of the
  PSS of this process and all its descendants. PSS counts a page shared by n
  processes as 1/n in each, so the sum counts the interpreter the child was forked
  from once, and a worker forked from a server is not counted twice. Without
  ``/proc`` (not Linux), it is the largest RSS of a single process instead.

SIGINT or SIGTERM stops the child gently (SIGINT: its work sees KeyboardInterrupt
and cleans up), and kills whatever is left ``GRACE_SECONDS`` later; so does running
past ``limit``.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

__all__ = ["Usage", "become_subreaper", "measure"]

SAMPLE_SECONDS = 0.02
GRACE_SECONDS = 2.0
_PR_SET_CHILD_SUBREAPER = 36
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class Usage:
    """One measured run: the child's exit code and what its work returned, and the numbers."""

    status: int
    result: dict[str, Any]
    cpu: float
    peak_kib: int


def become_subreaper() -> bool:
    """Adopt the orphans of our descendants (Linux); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def _children(pid: int) -> list[int]:
    children: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as file:
                children.extend(int(child) for child in file.read().split())
    except OSError:  # the process (or thread) ended while we looked
        pass
    return children


def _descendants(pid: int) -> list[int]:
    found, pending = [], _children(pid)
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(_children(child))
    return found


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as file:
            for line in file:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree_kib() -> int | None:
    """Total PSS of this process and its descendants; None without ``/proc``."""
    me = os.getpid()
    if not os.path.isdir(f"/proc/{me}/task"):
        return None
    return sum(_pss_kib(pid) for pid in [me, *_descendants(me)])


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _largest_child_kib() -> int:
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss  # bytes on macOS, KiB elsewhere


class _Stopper:
    """Turns SIGINT/SIGTERM (or the limit) into SIGINT to the child, SIGKILL to all later."""

    def __init__(self, limit: float) -> None:
        self.pid = 0  # the child's, once forked
        self.deadline = time.monotonic() + limit
        self.terminated_at: float | None = None
        self.asked = False
        self.previous = {number: signal.signal(number, self._requested) for number in _STOP_SIGNALS}

    def _requested(self, number: int, frame: FrameType | None) -> None:
        self.asked = True
        self.deadline = min(self.deadline, time.monotonic())

    def check(self, child_alive: bool) -> None:
        now = time.monotonic()
        if now < self.deadline:
            return
        if self.terminated_at is None:
            self.terminated_at = now
            if child_alive:
                os.kill(self.pid, signal.SIGINT)
        elif now - self.terminated_at > GRACE_SECONDS:
            for pid in _descendants(os.getpid()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def restore(self) -> bool:
        """Put the previous handlers back; True if a stop was asked for (not the limit)."""
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        return self.asked


def _reap(pid: int) -> tuple[bool, int | None]:
    """Wait for whatever ended: (any child left?, the child's exit code if it ended now)."""
    status = None
    while True:
        try:
            reaped, wait_status, _ = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return False, status
        if reaped == 0:
            return True, status
        if reaped == pid:
            status = os.waitstatus_to_exitcode(wait_status)


def _child(work: Callable[[], dict[str, Any]], output: int) -> None:
    """The forked child: do the work, send its result as JSON, exit; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with os.fdopen(output, "w") as pipe:
            pipe.write(json.dumps(work()))
        code = 0
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def measure(work: Callable[[], dict[str, Any]], limit: float) -> Usage:
    """Run ``work()`` in a forked child and wait for it and all it started; see the module.

    ``work`` returns a JSON-ready dict (small: it travels through a pipe read at the
    end). Raises KeyboardInterrupt if SIGINT or SIGTERM stopped the run.
    """
    read_end, write_end = os.pipe()
    cpu_before = _cpu_of_children()
    stopper = _Stopper(limit)  # before the fork: no signal may slip between
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(work, write_end)
    os.close(write_end)
    stopper.pid = pid
    status, peak, alive = None, 0, True
    try:
        while alive:
            peak = max(peak, _tree_kib() or 0)
            alive, ended = _reap(pid)
            status = ended if ended is not None else status
            stopper.check(child_alive=status is None)
            if alive:
                time.sleep(SAMPLE_SECONDS)
    finally:
        asked = stopper.restore()
        with os.fdopen(read_end) as pipe:
            text = "" if alive else pipe.read()  # every writer has exited: no wait
    if asked:
        raise KeyboardInterrupt
    assert status is not None, "the child was reaped"
    return Usage(
        status=status,
        result=json.loads(text) if status == 0 else {},
        cpu=_cpu_of_children() - cpu_before,
        peak_kib=peak if _tree_kib() is not None else _largest_child_kib(),
    )
