"""Helpers shared by the tests (import as ``from helpers import ...``)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chanflow as cf
from chanflow._backend import Backend, Call, Outcome, Returned
from chanflow._result import Result
from chanflow._retry import RetryPolicy
from chanflow._stats import StatsRecorder


def run_threads(*targets: Callable[[], object], timeout: float = 20.0) -> None:
    """Start one thread per target, join them all, and re-raise the first failure."""
    errors: list[BaseException] = []

    def guard(fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guard, args=(fn,), daemon=True) for fn in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [thread for thread in threads if thread.is_alive()]
    assert not alive, f"{len(alive)} test threads still running after {timeout} s: hang"
    if errors:
        raise errors[0]


def process_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie.

    A killed process whose parent exited first waits for init to reap it, and some
    containers' init (this CI machine's) never does: it stays a zombie, which
    ``os.kill(pid, 0)`` still finds, though it runs nothing and holds nothing.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:  # no /proc (not Linux): kill(pid, 0) is all there is
        return True
    return state not in ("Z", "X")


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail (never hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.001)


class HookCapture:
    """Capture what ``threading.excepthook`` reports during a with-block."""

    def __init__(self) -> None:
        self.reports: list[threading.ExceptHookArgs] = []
        self.reported = threading.Event()

    @property
    def errors(self) -> list[BaseException | None]:
        return [report.exc_value for report in self.reports]

    def hook(self, args: threading.ExceptHookArgs) -> None:
        self.reports.append(args)
        self.reported.set()

    def __enter__(self) -> HookCapture:
        self._old = threading.excepthook
        threading.excepthook = self.hook
        return self

    def __exit__(self, *exc_info: Any) -> None:
        threading.excepthook = self._old


class ConcurrencyMeter:
    """Counts how many callers are inside at once, and the most there ever were."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.inside = 0
        self.most = 0

    def enter(self) -> None:
        with self._lock:
            self.inside += 1
            self.most = max(self.most, self.inside)

    def leave(self) -> None:
        with self._lock:
            self.inside -= 1


def call_of(backend: Backend, fn: Callable[[Any], Any], deliver: Callable[[Outcome], None]) -> Call:
    """A call of ``fn`` on ``backend`` with no retries, timeout or rate; outcomes to ``deliver``."""
    return Call(
        fn,
        backend=backend,
        policy=RetryPolicy.build(),
        timeout=None,
        limiter=None,
        stats=StatsRecorder(),
        context=cf.background().with_cancel(),
        deliver=deliver,
    )


def results_into(delivered: list[Result[Any]]) -> Callable[[Outcome], None]:
    """A ``deliver`` that appends every outcome's Results to ``delivered``."""

    def deliver(outcome: Outcome) -> None:
        delivered.extend(outcome.results() if isinstance(outcome, Returned) else outcome)

    return deliver


def kill_and_resume(
    command: list[str],
    *,
    kills: int,
    seed: int,
    longest_delay: float,
    progress: Callable[[], object],
    committed: Callable[[], set[int]],
) -> tuple[list[int], list[set[int]], str]:
    """Run ``command`` (a journaled run that resumes) ``kills`` times, each killed with
    SIGKILL at a random moment, then once more to its end.

    Each run is killed ``uniform(0, longest_delay)`` seconds after ``progress()``
    changed (it has started work; or at once if it ended). Returns the killed runs'
    pids, what ``committed()`` said before each run and after the last kill, and the
    last run's stdout (it must exit 0).
    """
    rng = random.Random(seed)
    pids: list[int] = []
    before: list[set[int]] = []
    for _ in range(kills):
        before.append(committed())
        marker = progress()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        pids.append(child.pid)
        deadline = time.monotonic() + 60
        while child.poll() is None and progress() == marker and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, longest_delay))
        child.send_signal(signal.SIGKILL)
        child.wait(60)
    before.append(committed())
    final = subprocess.run(command, capture_output=True, text=True, timeout=200)
    assert final.returncode == 0, final.stderr
    return pids, before, final.stdout


def interrupt(child: subprocess.Popen[str], within: float) -> tuple[str, str]:
    """Send SIGINT to ``child``; its (stdout, stderr) once it has exited (see below)."""
    child.send_signal(signal.SIGINT)
    return exited_within(child, within, "SIGINT")


def exited_within(child: subprocess.Popen[str], within: float, after: str) -> tuple[str, str]:
    """``child``'s (stdout, stderr) once it has exited, which must be within ``within`` s.

    If it does not, it gets SIGABRT, which makes a child started with ``-X faulthandler``
    print every thread's stack, and the test fails with those stacks: a hang says where
    it hangs. The pipes are closed either way.
    """
    try:
        return child.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGABRT)
        try:
            _, stderr = child.communicate(timeout=10.0)
        except subprocess.TimeoutExpired:
            child.kill()
            _, stderr = child.communicate()
        raise AssertionError(
            f"still running {within} s after {after}; its stacks:\n{stderr[-8000:]}"
        ) from None
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()


_FORK_WHILE_HELD = """
import os, sys, threading, time
import __main__
import chanflow as cf
from chanflow import _backend_process, _journal

entered, release = threading.Event(), threading.Event()

def holding():
    with {held}:
        entered.set()
        release.wait(30)

thread = threading.Thread(target=holding)
thread.start()
assert entered.wait(10)
pid = os.fork()
if pid == 0:
    code = 1
    try:
{child}
        code = 0
    finally:
        os._exit(code)
release.set()
thread.join()
deadline = time.monotonic() + 20
while not os.waitpid(pid, os.WNOHANG)[0]:
    if time.monotonic() > deadline:
        print("child hung", flush=True)
        os.kill(pid, 9)
        break
    time.sleep(0.01)
"""


def fork_while_held(tmp_path: Path, held: str, child: str, *args: str) -> list[str]:
    """What a fork child printed, forked while a thread of its parent was inside ``with
    held:`` (a script run by a fresh interpreter, not by pytest's process, whose threads
    a fork would copy mid-flight). ``child`` is the child's code (indented 8 spaces);
    ``["child hung"]`` if it did not exit within 20 s."""
    script = tmp_path / "fork_while_held.py"
    script.write_text(_FORK_WHILE_HELD.format(held=held, child=child))
    ran = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=50
    )
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.splitlines()
