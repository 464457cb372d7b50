"""Running the real ``chanflow`` command in a subprocess, and a module of job functions.

The job module is written into the test's directory, which is the command's working
directory, so ``--call clijobs:NAME`` finds it as a user's own module would be found.
Jobs that must be held (to interrupt a run mid-job) wait for a *gate* file, and leave
a *started* marker, so tests wait for conditions, never for sleeps to win a race.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "JOBS_MODULE",
    "chanflow",
    "lines_of",
    "records",
    "start_chanflow",
    "wait_for",
    "write_jobs_module",
]

JOBS_MODULE = """
import asyncio, os, pathlib, time

HERE = pathlib.Path(__file__).parent
NOT_CALLABLE = 42

def square(x):
    n = int(x)
    if n % 7 == 3:
        raise ValueError(f"{n} is unlucky")
    return n * n

async def asquare(x):
    await asyncio.sleep(0.001)
    n = int(x)
    if n % 7 == 3:
        raise ValueError(f"{n} is unlucky")
    return n * n

def add(a, b=0):
    return a + b

def work(x):
    time.sleep(0.005)
    return int(x) * 2

def gated(x):
    (HERE / "started" / x).touch()
    deadline = time.monotonic() + 60
    while not (HERE / "gate").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return x

def flaky(x):
    marker = HERE / "tried" / x
    if not marker.exists():
        marker.touch()
        raise ConnectionError(f"{x}: try again")
    return x

def started_at(x):
    return time.monotonic()

def unpicklable(x):
    return lambda: x
"""

BROKEN_MODULE = "raise RuntimeError('this module is broken')\n"


def write_jobs_module(directory: Path) -> None:
    (directory / "clijobs.py").write_text(JOBS_MODULE)
    (directory / "brokenjobs.py").write_text(BROKEN_MODULE)
    for name in ("started", "tried"):
        (directory / name).mkdir(exist_ok=True)


def _command(args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "chanflow", *args]


def _environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment.pop("PYTHONPATH", None)  # the command finds clijobs from its directory
    return environment


def chanflow(
    *args: str,
    cwd: Path,
    stdin: str | None = None,
    timeout: float = 60,
    max_file_size: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``chanflow ARGS`` to the end; its exit code, stdout and stderr.

    ``max_file_size``: no file it writes may grow past this many bytes (a full disk,
    as far as it can tell: a write past it fails with EFBIG, Python ignoring SIGXFSZ).
    """
    return subprocess.run(
        _command(args),
        cwd=cwd,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_environment(),
        preexec_fn=None if max_file_size is None else _limit_file_size(max_file_size),
    )


def _limit_file_size(size: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def start_chanflow(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """Start ``chanflow ARGS`` in the background (stdin empty, stdout and stderr piped)."""
    return subprocess.Popen(
        _command(args),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def lines_of(path: Path) -> int:
    """Complete lines in ``path`` so far (0 if it does not exist yet)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def records(text: str) -> list[dict[str, Any]]:
    """The JSON Lines records of an output."""
    return [json.loads(line) for line in text.splitlines() if line]
