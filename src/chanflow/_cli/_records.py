"""What ``chanflow run`` writes per finished job: an output line, maybe a dead letter.

Both files are this run's: a fresh run truncates them, a resumed one rebuilds them
from its journal first (in input order, or merged into the new lines with
``--keep-order``), so each job appears exactly once. Every line is flushed as written.

The journal is the library's (:class:`chanflow.Journal`): each finished job is one
row, committed before its lines are written, whose outcome holds the exact output
line and dead letter written for it, so that a resume writes them again unchanged.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from .._deadletters import dead_letter_record
from .._exceptions import JournalError
from .._journal import DEAD, FAILED, JSON, OK, Journal, Row, decode, encode
from .._result import Result
from ._jobs import Job

__all__ = ["OutputFailed", "Recorder", "dead_letter_line", "job_row", "output_line"]

REPLAY_CHUNK = 2048  # finished jobs read from the journal at a time


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


def job_row(
    job: Job, result: Result[Any], *, line: str, dead: str | None, dead_letters: bool
) -> Row:
    """The journal row of a finished job: its outcome is ``[output line, dead letter]``.

    A failed job is DEAD when the run writes dead letters, else FAILED; its dead
    letter is stored either way, for a resume that adds ``--dead-letters``.
    """
    if result.ok:
        status, traceback = OK, None
    else:
        status, traceback = (DEAD if dead_letters else FAILED), result.traceback
    encoding, stored = encode([line, dead])
    return Row(
        job.index, job.digest, status, encoding, stored, result.attempts, result.elapsed, traceback
    )


def stored_lines(journal: Journal, row: Row) -> tuple[str, str | None]:
    """The output line and dead letter a row holds; JournalError for a foreign row.

    (Rows of chanflow run are JSON: a pickle is not unpickled, but refused.)
    """
    line = dead = None
    if row.encoding == JSON:
        with contextlib.suppress(ValueError, TypeError):
            outcome = decode(row.encoding, row.outcome)
            if type(outcome) is list and len(outcome) == 2:
                line, dead = outcome
    if not isinstance(line, str) or not (dead is None or isinstance(dead, str)):
        raise JournalError(
            f"journal {str(journal.path)!r}: job {row.idx} was not written by chanflow run: "
            "use another --journal file"
        )
    return line, dead


def replay(journal: Journal, finished: Mapping[int, int]) -> Iterator[tuple[int, str, str | None]]:
    """The ``finished`` jobs in index order: (index, output line, dead letter or None).

    Reads the journal a chunk at a time, so the run may record jobs meanwhile: those
    (not in ``finished``) are left out, whatever range a chunk covers.
    """
    indices = sorted(finished)
    for start in range(0, len(indices), REPLAY_CHUNK):
        chunk = indices[start : start + REPLAY_CHUNK]
        for row in journal.stored(chunk[0], chunk[-1]):
            if row.idx in finished:
                yield (row.idx, *stored_lines(journal, row))


class Recorder:
    """Writes each finished job to the journal (first), the output and the dead letters.

    Opens (truncating) the output file, stdout for None, and the dead-letter file;
    raises OSError if either cannot be opened, JournalError if the journal cannot be
    read back (without ``ordered``, its jobs are written out at once). ``finished``
    is what the journal held when the run began (index -> digest): those jobs are
    replayed from it.

    ``ordered``: replayed journal lines are merged into new ones by index, so the
    output stays in input order; otherwise they all come first.
    """

    def __init__(
        self,
        output: Path | None,
        dead_letters: Path | None,
        journal: Journal | None,
        finished: Mapping[int, int] | None = None,
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
        self.finished: Mapping[int, int] = finished or {}
        self.ordered = ordered
        self.replayed = 0
        self._replay: Iterator[tuple[int, str, str | None]] | None = None
        self._next: tuple[int, str, str | None] | None = None
        if journal is not None and self.finished:
            self._replay = replay(journal, self.finished)
            try:
                self._advance()
                if not ordered:
                    self._replay_before(None)
            except BaseException:
                self.close()
                raise

    def record(self, job: Job, result: Result[Any], *, line: str, dead: str | None) -> None:
        """Record one finished job: commit its journal row, then write its lines.

        Blocks for a journal commit and two small writes. Raises JournalError if the
        commit fails (then nothing is written for the job), OutputFailed if a write does.
        """
        if job.index in self.finished:
            raise RuntimeError(f"job {job.index} was finished by an earlier run: not run again")
        if self.ordered:
            self._replay_before(job.index)
        if self.journal is not None:
            row = job_row(job, result, line=line, dead=dead, dead_letters=self.dead is not None)
            self.journal.commit([row])
        self._write(line, dead)

    def finish(self) -> None:
        """Write what is left of the replay; flush and close the files this opened."""
        try:
            self._replay_before(None)
            self.output.flush()
        finally:
            self.close()

    def close(self) -> None:
        """Close the files this opened (idempotent)."""
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
