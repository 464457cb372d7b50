"""What ``chanflow run`` writes per finished job: an output line, maybe a dead letter.

Both files are this run's: a fresh run truncates them, a resumed one rebuilds them
from its journal first (in input order, or merged into the new lines with
``--keep-order``), so each job appears exactly once. Every line is flushed as written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .._deadletters import dead_letter_record
from .._result import Result
from ._jobs import Job
from ._journal import Journal

__all__ = ["OutputFailed", "Recorder", "dead_letter_line", "output_line"]


class OutputFailed(Exception):
    """Writing the output or dead-letter file failed (the message has the OSError)."""


def output_line(result: Result[Any], job: Job) -> str:
    """One JSON Lines record: index, job, ok, value or error, attempts, elapsed.

    A value that JSON cannot hold is written as its ``repr``.
    """
    record: dict[str, Any] = {"index": job.index, "job": job.shown, "ok": result.ok}
    if result.error is None:
        record["value"] = result.value
    else:
        kind = type(result.error)
        record["error"] = f"{kind.__name__}: {result.error}"
        record["error_type"] = f"{kind.__module__}.{kind.__qualname__}"
    record["attempts"] = result.attempts
    record["elapsed"] = round(result.elapsed, 6)
    return json.dumps(record, default=repr)


def dead_letter_line(result: Result[Any], job: Job) -> str:
    """The dead letter of a failed job: the library's record, plus where the line was."""
    record = dead_letter_record(result)
    record["job"] = job.shown
    record["source"] = job.source
    record["line"] = job.line
    return json.dumps(record, default=repr)


class Recorder:
    """Writes each finished job to the journal (first), the output and the dead letters.

    Opens (truncating) the output file, stdout for None, and the dead-letter file;
    raises OSError if either cannot be opened.

    ``ordered``: replayed journal lines are merged into new ones by index, so the
    output stays in input order; otherwise they all come first.
    """

    def __init__(
        self,
        output: Path | None,
        dead_letters: Path | None,
        journal: Journal | None,
        *,
        ordered: bool,
    ) -> None:
        self.output: IO[str] = sys.stdout
        if output is not None:
            self.output = open(output, "w", encoding="utf-8")  # noqa: SIM115
        self.dead: IO[str] | None = None
        if dead_letters is not None:
            self.dead = open(dead_letters, "w", encoding="utf-8")  # noqa: SIM115
        self.journal = journal
        self.ordered = ordered
        self.replayed = 0
        self._replay: Iterator[tuple[int, str, str | None]] | None = None
        self._next: tuple[int, str, str | None] | None = None
        if journal is not None and journal.finished:
            self._replay = journal.replay()
            self._advance()
            if not ordered:
                self._replay_before(None)

    def record(self, job: Job, *, ok: bool, line: str, dead: str | None) -> None:
        """Record one finished job. Blocks for a journal commit and two small writes."""
        if self.ordered:
            self._replay_before(job.index)
        if self.journal is not None:
            self.journal.record(job.index, job.digest, ok=ok, line=line, dead=dead)
        self._write(line, dead)

    def finish(self) -> None:
        """Write what is left of the replay; flush and close the files this opened."""
        try:
            self._replay_before(None)
            self.output.flush()
        finally:
            if self.output is not sys.stdout:
                self.output.close()
            if self.dead is not None:
                self.dead.close()

    def _write(self, line: str, dead: str | None) -> None:
        try:
            self.output.write(line + "\n")
            self.output.flush()
            if dead is not None and self.dead is not None:
                self.dead.write(dead + "\n")
                self.dead.flush()
        except OSError as error:
            raise OutputFailed(error.strerror or str(error)) from error

    def _replay_before(self, index: int | None) -> None:
        while self._next is not None and (index is None or self._next[0] < index):
            _, line, dead = self._next
            self._write(line, dead)
            self.replayed += 1
            self._advance()

    def _advance(self) -> None:
        assert self._replay is not None
        self._next = next(self._replay, None)
