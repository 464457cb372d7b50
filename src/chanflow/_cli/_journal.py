"""The journal of a durable ``chanflow run``: every finished job, in SQLite.

Each finished job is one row, committed as it finishes, holding the exact output line
(and dead letter) written for it. A run killed at any moment, even by SIGKILL, loses
at most jobs that were running: SQLite's write-ahead log makes each commit atomic, and
a resumed run rebuilds its output and dead-letter files from the journal before it
runs the rest, so every job appears in them exactly once, whichever write the kill
interrupted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Journal", "JournalError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    idx INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    ok INTEGER NOT NULL,
    record TEXT NOT NULL,
    dead_letter TEXT
);
"""


class JournalError(Exception):
    """The journal cannot be used for this run; the message says why, in one line."""


class Journal:
    """Opens (or creates) the journal at ``path`` for the run identified by ``identity``.

    ``identity`` names what the run does (the callable or command and how lines are
    read); resuming a journal written for something else is refused. A journal that
    already holds finished jobs is only reused with ``resume``; resuming a journal
    that does not exist yet simply starts it. Raises JournalError.

    Not thread-safe: one thread (the one consuming results) writes it.
    """

    def __init__(self, path: Path, identity: str, *, resume: bool) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                # NORMAL: a commit survives the process being killed; only a power cut
                # can lose the last few, which a resume then runs again.
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                self.finished = self._finished_digests()
                self._claim(identity, resume=resume)
            except BaseException:
                self._db.close()  # refused: not left to the garbage collector
                raise
        except sqlite3.DatabaseError as error:
            raise JournalError(f"cannot use journal {str(path)!r}: {error}") from None

    def _finished_digests(self) -> dict[int, str]:
        return dict(self._db.execute("SELECT idx, digest FROM jobs"))

    def _claim(self, identity: str, *, resume: bool) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
        if row is not None and row[0] != identity:
            raise JournalError(
                f"journal {str(self.path)!r} was written for a different run "
                f"({row[0]}), not ({identity}); use another --journal file"
            )
        if self.finished and not resume:
            raise JournalError(
                f"journal {str(self.path)!r} already holds {len(self.finished):,} finished "
                "jobs: add --resume to continue that run, or remove the file to start over"
            )
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('identity', ?)", (identity,))

    def replay(self) -> Iterator[tuple[int, str, str | None]]:
        """The finished jobs in index order: (index, output line, dead letter or None).

        Reads on a connection of its own, so the run may record jobs meanwhile: the
        replay sees the journal as it was when it started.
        """
        reader = sqlite3.connect(self.path)
        try:
            yield from reader.execute("SELECT idx, record, dead_letter FROM jobs ORDER BY idx")
        finally:
            reader.close()

    def record(self, index: int, digest: str, *, ok: bool, line: str, dead: str | None) -> None:
        """Record one finished job, committed before this returns (~20 us)."""
        self._db.execute(
            "INSERT INTO jobs VALUES (?, ?, ?, ?, ?)", (index, digest, int(ok), line, dead)
        )

    def close(self) -> None:
        self._db.close()
