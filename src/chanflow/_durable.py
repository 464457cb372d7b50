"""The journal side of one pool call: which jobs to replay, and outcomes as journal rows.

A call with ``journal=`` keeps every job's outcome in a :class:`Journal`: the
backend's outcomes go through a :class:`Committer` thread, which commits them in
batches and only then hands them to the consumer. A call that resumes first reads
its input up to the last job the journal finished and checks each finished job's
input against its digest (so a changed input is refused before anything runs);
from then on, the finished jobs come back from the journal as Results with
``replayed=True`` and the others run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from itertools import islice
from typing import Any

from ._backend import Batch, Done, Outcome, Returned, attach_remote_traceback, format_error
from ._exceptions import JournalError
from ._journal import (
    DEAD,
    FAILED,
    OK,
    Committer,
    Row,
    check_resumed_input,
    digest_in,
    encode,
    encode_error,
    identity_of,
    open_journal,
)
from ._result import Result

__all__ = ["DurableCall"]


class DurableCall:
    """Journals one call of ``fn``; opened (and checked) when the call is made.

    Raises JournalError at once if the journal cannot be used for this call (see
    :meth:`Journal.begin`).
    """

    def __init__(
        self, setting: object, *, resume: bool, fn: Callable[..., Any], dead_letters: bool
    ) -> None:
        self.journal, self._owned = open_journal(setting)
        try:
            self.finished = self.journal.begin(identity_of(fn), resume=resume)
        except BaseException:
            self.close()
            raise
        self._last_finished = max(self.finished, default=-1)
        self._dead_letters = dead_letters
        self._digests: dict[int, int] = {}
        self._committer: Committer | None = None
        self._items: list[Any] = []  # the input up to the last finished job
        self._holes: list[int] = []  # the unfinished jobs among them
        self._hole_positions: dict[int, int] = {}
        self.error: JournalError | None = None
        self._closed = False

    @property
    def _where(self) -> str:
        return f"journal {str(self.journal.path)!r}"

    # -- starting ---------------------------------------------------------------------

    def start(self, forward: Callable[[Outcome], None], failed: Callable[[], None]) -> None:
        """Start committing outcomes (see :meth:`deliver`); ``failed()`` is called if a
        commit fails, after which :attr:`error` is set."""

        def on_failure(error: JournalError) -> None:
            self.error = error
            failed()

        self._committer = Committer(self.journal, self._rows_of, forward, on_failure)

    def deliver(self, outcome: Outcome) -> None:
        """A chunk's outcomes, from any thread: committed, then forwarded. Never blocks."""
        committer = self._committer
        assert committer is not None, "started before any job is submitted"
        committer.put(outcome)

    def prefix(self, iterator: Iterator[Any]) -> list[Any]:
        """Read the input up to the last finished job and check it against the journal;
        the items of the unfinished jobs among them, which run first.

        Raises JournalError if the input is shorter or differs at a finished index.
        """
        if self._last_finished < 0:
            return []
        return self._plan(list(islice(iterator, self._last_finished + 1)))

    async def aprefix(self, source: AsyncIterator[Any]) -> list[Any]:
        """Async twin of :meth:`prefix`."""
        items: list[Any] = []
        if self._last_finished >= 0:
            async for item in source:
                items.append(item)
                if len(items) > self._last_finished:
                    break
        return self._plan(items)

    def _plan(self, items: list[Any]) -> list[Any]:
        if not items and self._last_finished < 0:
            return []
        path = self.journal.path
        self._holes = check_resumed_input(path, self.finished, items, noun="job", source="input")
        self._items = items
        self._hole_positions = {index: position for position, index in enumerate(self._holes)}
        return [items[index] for index in self._holes]

    def _digest(self, index: int, item: Any) -> int:
        return digest_in(self.journal.path, index, item, "job")

    # -- positions: the jobs that run are the unfinished ones, in input order --------------

    def original(self, position: int) -> int:
        """The input index of the job at ``position`` among those that run."""
        holes = self._holes
        if position < len(holes):
            return holes[position]
        return self._last_finished + 1 + position - len(holes)

    def position(self, index: int) -> int:
        """Inverse of :meth:`original`."""
        if index <= self._last_finished:
            return self._hole_positions[index]
        return index - self._last_finished - 1 + len(self._holes)

    def split(self, start: int, items: list[Any]) -> Iterator[tuple[int, list[Any]]]:
        """Items taken at positions ``start``... as runs of consecutive input indices."""
        holes = len(self._holes)
        if start >= holes:  # past every finished job: one run
            yield self.original(start), items
            return
        for offset, item in enumerate(items[: holes - start]):
            yield self._holes[start + offset], [item]
        if start + len(items) > holes:
            yield self._last_finished + 1, items[holes - start :]

    def expect(self, start: int, items: list[Any]) -> None:
        """Digest the inputs of jobs about to run (indices from ``start``), for their rows."""
        digests = self._digests
        for index, item in enumerate(items, start):
            digests[index] = self._digest(index, item)

    def replays(self) -> Iterator[Result[Any]]:
        """The finished jobs' stored outcomes, in index order: Results with replayed=True.

        Read from the journal a page at a time, as they are handed out.
        """
        items = self._items
        for row in self.journal.replay(self.finished):
            yield self._result(row, items[row.idx])

    def _result(self, row: Row, item: Any) -> Result[Any]:
        stored = self.journal.outcome(row)
        if row.status == OK:
            return Result(item, row.idx, stored, None, row.attempts, row.elapsed, replayed=True)
        if row.traceback:
            attach_remote_traceback(stored, row.traceback)
        return Result(
            item, row.idx, None, stored, row.attempts, row.elapsed, row.traceback, replayed=True
        )

    # -- outcomes as rows ---------------------------------------------------------------

    def _rows_of(self, outcome: Outcome) -> tuple[Outcome, list[Row]]:
        """Runs on the committer's thread: the rows of a chunk's outcomes."""
        if isinstance(outcome, Returned):
            rows = self._returned_rows(outcome)
            if rows is not None:
                return outcome, rows
            outcome = outcome.results()  # a value that cannot be stored: one by one
        results: list[Result[Any]] = []
        rows = []
        for result in outcome:
            try:
                rows.append(self._result_row(result))
            except TypeError as error:
                result = self._unstorable(result, error)
            results.append(result)
        return results, rows

    def _returned_rows(self, outcome: Returned) -> list[Row] | None:
        if isinstance(outcome, Batch):
            indices: Any = range(outcome.start, outcome.start + len(outcome.values))
            attempts: Any = [1] * len(outcome.values)
        else:
            assert isinstance(outcome, Done)
            indices = [job.index for job in outcome.jobs]
            attempts = [job.attempts for job in outcome.jobs]
        try:
            encoded = [encode(value) for value in outcome.values]
        except TypeError:
            return None  # no digest taken yet: the Results take theirs
        pop = self._digests.pop
        return [
            Row(index, pop(index, 0), OK, encoding, stored, tries, elapsed, None)
            for index, (encoding, stored), tries, elapsed in zip(
                indices, encoded, attempts, outcome.elapsed(), strict=True
            )
        ]

    def _result_row(self, result: Result[Any]) -> Row:
        """The row of one job; TypeError (its digest kept) if its value cannot be stored."""
        if result.error is None:
            encoding, stored = encode(result.value)
            status = OK
            traceback = None
        else:
            encoding, stored = encode_error(result.error)
            status = DEAD if self._dead_letters else FAILED
            # Kept as text: a traceback does not pickle, and a replayed error shows it.
            traceback = result.traceback or format_error(result.error)
        return Row(
            result.index,
            self._digests.pop(result.index, 0),
            status,
            encoding,
            stored,
            result.attempts,
            result.elapsed,
            traceback,
        )

    def _unstorable(self, result: Result[Any], reason: TypeError) -> Result[Any]:
        """A job whose value the journal cannot hold fails with a JournalError saying why
        (not stored: a resumed run runs it again)."""
        self._digests.pop(result.index, None)
        refused = JournalError(
            f"{self._where}: the value of job {result.index:,} cannot be stored: {reason}"
        )
        return Result(
            result.job, result.index, None, refused, result.attempts, result.elapsed, None
        )

    # -- ending -----------------------------------------------------------------------

    def close(self) -> None:
        """Commit what has arrived, stop the committer, close a journal this call opened."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        if getattr(self, "_committer", None) is not None:
            self._committer.close()  # type: ignore[union-attr]
        if self._owned:
            self.journal.close()
