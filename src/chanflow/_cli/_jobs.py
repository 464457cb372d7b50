"""The jobs of ``chanflow run``: one per non-empty input line, read lazily.

A job keeps where it came from (file and line) for messages and dead letters, and a
digest of its text so that a resumed run can tell a changed input from the one its
journal was written for. Jobs are plain picklable records: the process backend sends
them to its workers as they are.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from .._journal import digest_of

__all__ = ["Job", "MalformedLine", "NotStarted", "Rejected", "open_inputs", "read_jobs"]

STDIN_NAME = "<stdin>"


class MalformedLine(ValueError):
    """A ``--jsonl`` line that is not JSON; it fails as this job, the run goes on."""


@dataclass(frozen=True)
class Job:
    """One line of input. ``index`` counts jobs from 0 (empty lines are not jobs)."""

    index: int
    text: str
    source: str
    line: int
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # why this line cannot run (malformed JSON), or None
    parsed: bool = False  # True when ``args``/``kwargs`` came from JSON
    value: Any = None  # the parsed JSON value, when ``parsed``

    @property
    def digest(self) -> int:
        """The journal's 64-bit digest of the line's text: what a resume matches on."""
        return digest_of(self.text)

    @property
    def where(self) -> str:
        return f"line {self.line} of {self.source}"

    @property
    def shown(self) -> Any:
        """The job as output records show it: the parsed JSON value, else the line."""
        return self.value if self.parsed else self.text


class Rejected:
    """What a job function returns for a line that cannot run (no attempt, no retry)."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


class NotStarted:
    """What a job function returns when a stop was asked for before the job started."""

    __slots__ = ()


def open_inputs(paths: Iterable[str]) -> list[tuple[str, IO[str]]]:
    """Open every input now, so that a missing file stops the run before any job.

    Raises OSError (with the file name) for a file that cannot be opened. No paths
    means standard input. Undecodable bytes survive as surrogate escapes, so that a
    file name read from input reaches a command unchanged.
    """
    paths = list(paths)
    if not paths or paths == ["-"]:
        stdin = open(sys.stdin.fileno(), encoding="utf-8", errors="surrogateescape", closefd=False)  # noqa: SIM115
        return [(STDIN_NAME, stdin)]
    opened: list[tuple[str, IO[str]]] = []
    try:
        for path in paths:
            opened.append((path, open(path, encoding="utf-8", errors="surrogateescape")))  # noqa: SIM115
    except OSError:
        for _, file in opened:
            file.close()
        raise
    return opened


def read_jobs(inputs: list[tuple[str, IO[str]]], *, jsonl: bool) -> Iterator[Job]:
    """The jobs of ``inputs`` in order, read as they are asked for; closes each input."""
    index = 0
    for source, file in inputs:
        with file:
            for number, raw in enumerate(file, start=1):
                text = raw.rstrip("\r\n")
                if not text:
                    continue
                yield (
                    _parse(index, text, source, number)
                    if jsonl
                    else Job(index, text, source, number, args=(text,))
                )
                index += 1


def _parse(index: int, text: str, source: str, number: int) -> Job:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        problem = f"malformed JSON on line {number} of {source}: {error.msg} (column {error.colno})"
        return Job(index, text, source, number, problem=problem)
    if isinstance(value, dict):
        return Job(index, text, source, number, kwargs=value, parsed=True, value=value)
    return Job(index, text, source, number, args=(value,), parsed=True, value=value)
