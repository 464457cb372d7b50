"""Journal: a run's finished jobs in a SQLite file, so that a killed run can resume.

One journal records one run: one function (or flow) over one input. Each finished
job is one row (its index, a digest of its input, and its stored outcome), written
in batches by a :class:`Committer` thread, each batch committed before its results
are handed on. SQLite's write-ahead log makes each commit atomic, so a kill at any
moment, even SIGKILL in the middle of a commit, loses at most the jobs that had not
been committed yet: the running ones, and those of the batch being written.

This module knows nothing of pools: rows in, rows out. ``_durable`` adapts pool
outcomes to rows, and the pool, the pipeline and ``chanflow run`` use it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import pickle
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any, NamedTuple

from ._exceptions import JournalError, RemoteError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "Committer",
    "Journal",
    "Row",
    "check_journal_setting",
    "check_resume",
    "check_resumed_input",
    "decode",
    "digest_of",
    "identity_of",
    "open_journal",
]

SCHEMA = 2  # 1 was the journal of chanflow run before the library had one

_SCHEMA_SQL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (
    idx INTEGER PRIMARY KEY,
    digest INTEGER NOT NULL,
    status INTEGER NOT NULL,
    encoding INTEGER NOT NULL,
    outcome,
    attempts INTEGER NOT NULL,
    elapsed REAL NOT NULL,
    traceback TEXT
);
"""

# What a stored outcome is.
OK, FAILED, DEAD = 0, 1, 2
# How it is stored: as a SQLite value (int, float, str, bytes, None), JSON text, a pickle.
NATIVE, JSON, PICKLE = 0, 1, 2

_INT64 = range(-(2**63), 2**63)


class Row(NamedTuple):
    """One finished job as the journal stores it (``outcome`` encoded: see :func:`encode`)."""

    idx: int
    digest: int
    status: int
    encoding: int
    outcome: Any
    attempts: int
    elapsed: float
    traceback: str | None


# -- digests and identities ------------------------------------------------------------


def _canonical(item: Any, out: list[bytes]) -> None:
    """Append bytes that stand for ``item``, equal for equal inputs in any process.

    Plain data is written out by type (sets sorted, so string hashing, which varies
    between runs, does not change a digest); anything else is pickled.
    """
    kind = type(item)
    if kind is int or kind is str or kind is float or kind is bool or item is None:
        out.append(f"{kind.__name__[0]}{item!r};".encode())
    elif kind is bytes:
        out.append(b"b%d:" % len(item) + item)
    elif kind is tuple or kind is list:
        out.append(b"(" if kind is tuple else b"[")
        for element in item:
            _canonical(element, out)
        out.append(b")")
    elif kind is dict:
        out.append(b"{")
        for key, value in item.items():
            _canonical(key, out)
            _canonical(value, out)
        out.append(b"}")
    elif kind is set or kind is frozenset:
        parts = []
        for element in item:
            part: list[bytes] = []
            _canonical(element, part)
            parts.append(b"".join(part))
        out.append(b"<" + b"".join(sorted(parts)) + b">")
    else:
        out.append(b"p" + _pickled(item) + b";")


def _pickled(item: Any) -> bytes:
    try:
        return pickle.dumps(item, protocol=5)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(item, protocol=5)  # type: ignore[no-any-return]


def digest_of(item: Any) -> int:
    """A 64-bit digest of a job's input, the same in every run for an equal input.

    About 0.9 us for a small int or str. Raises TypeError for an input that can be
    neither written out nor pickled.
    """
    kind = type(item)
    if kind is int or kind is str:
        data = f"{kind.__name__[0]}{item!r};".encode()
    else:
        parts: list[bytes] = []
        try:
            _canonical(item, parts)
        except Exception as error:
            raise TypeError(f"cannot digest job input {item!r:.80}: {error}") from None
        data = b"".join(parts)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def identity_of(fn: Callable[..., Any]) -> str:
    """What names a job function across runs: its module and qualified name."""
    wrapped = getattr(fn, "func", None)  # functools.partial
    if wrapped is not None and callable(wrapped):
        return f"partial({identity_of(wrapped)})"
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    module = getattr(target, "__module__", None) or "?"
    return f"{module}.{getattr(target, '__qualname__', repr(target))}"


# -- encoding outcomes ---------------------------------------------------------------


def _json_faithful(value: Any, depth: int = 0) -> bool:
    """Whether JSON gives ``value`` back exactly (same types, same keys)."""
    kind = type(value)
    if kind is str or kind is float or kind is bool or value is None:
        return True
    if kind is int:
        return True
    if depth > 50:
        return False
    if kind is list:
        return all(_json_faithful(element, depth + 1) for element in value)
    if kind is dict:
        return all(
            type(key) is str and _json_faithful(element, depth + 1)
            for key, element in value.items()
        )
    return False


def encode(value: Any) -> tuple[int, Any]:
    """``value`` as (encoding, what SQLite stores); raises TypeError if it cannot be stored.

    Plain scalars are stored as they are, values JSON holds exactly as JSON text,
    anything else pickled (cloudpickle when pickle refuses: lambdas, local classes).
    """
    kind = type(value)
    if (kind is int and value in _INT64) or kind is str or kind is bytes:
        return NATIVE, value
    if kind is float and math.isfinite(value):  # SQLite stores a NaN as NULL
        return NATIVE, value
    if value is None:
        return NATIVE, None
    if kind in (list, dict, bool, int, float) and _json_faithful(value):
        return JSON, json.dumps(value)
    try:
        return PICKLE, _pickled(value)
    except Exception as error:
        raise TypeError(f"{type(value).__name__} cannot be pickled ({error})") from None


def encode_error(error: BaseException) -> tuple[int, Any]:
    """A job's error as (encoding, blob); one that cannot be pickled becomes a RemoteError."""
    try:
        return PICKLE, _pickled(error)
    except Exception:
        return PICKLE, pickle.dumps(RemoteError(type(error).__name__, str(error)))


def decode(encoding: int, stored: Any) -> Any:
    if encoding == NATIVE:
        return stored
    if encoding == JSON:
        return json.loads(stored)
    return pickle.loads(stored)


# -- settings and resumed inputs ----------------------------------------------------------


def check_journal_setting(journal: object) -> object:
    """Check a ``journal=`` setting: None, a path or a :class:`Journal`."""
    if journal is None or isinstance(journal, (str, Journal)) or hasattr(journal, "__fspath__"):
        return journal
    raise TypeError(f"journal must be a path, a chanflow.Journal or None, not {journal!r}")


def check_resume(resume: object) -> bool:
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be True or False, not {resume!r}")
    return resume


def check_resumed_input(
    path: Path, finished: dict[int, int], items: list[Any], *, noun: str, source: str
) -> list[int]:
    """Check the ``items`` a resumed run read (up to its last finished ``noun``) against
    the digests of ``finished``; the indices of the unfinished ones among them.

    Raises JournalError, before anything runs, if the input is shorter than the
    journal's last finished index or differs at a finished one.
    """
    where, last = f"journal {str(path)!r}", max(finished, default=-1)
    if len(items) <= last:
        raise JournalError(
            f"the {source} changed since {where} was written: it has {len(items):,} "
            f"{noun}s, and the journal finished {noun} {last:,}: restore the {source} or "
            "use a new journal"
        )
    for index, stored in finished.items():
        if digest_in(path, index, items[index], noun) != stored:
            raise JournalError(
                f"the {source} changed since {where} was written: {noun} {index:,} "
                f"({items[index]!r:.80}) is not the {noun} it finished: restore the "
                f"{source} or use a new journal"
            )
    return [index for index in range(len(items)) if index not in finished]


def digest_in(path: Path, index: int, item: Any, noun: str) -> int:
    """:func:`digest_of` an input of a journaled run; JournalError if it has none."""
    try:
        return digest_of(item)
    except TypeError as error:
        raise JournalError(f"journal {str(path)!r}: {noun} {index:,}: {error}") from None


# -- the journal -----------------------------------------------------------------------

# The journals this process has open, by file identity: a second Journal on the same
# file is refused before it opens a descriptor of its own (closing any descriptor of
# a file drops every POSIX lock the process holds on it, SQLite's included).
_open_files: dict[tuple[int, int], weakref.ref[Journal]] = {}
_open_files_lock = threading.Lock()


def _renew_open_files_lock() -> None:
    """In a fork child: a fresh lock (a parent thread opening a journal at the fork
    holds the old one for ever in the child)."""
    global _open_files_lock
    _open_files_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_open_files_lock)


class Journal:
    """The SQLite file that records the finished jobs of one run, to resume it after a crash.

    ``Journal(path)`` opens the file, creating it if needed, and holds it for this
    program alone until :meth:`close` (or the end of a ``with`` block): a second
    program, or a second Journal in this one, opening the same file raises
    :class:`JournalError`, as does a file that is not a chanflow journal, one
    written by an older chanflow (an older schema), a corrupted one, or a path that
    cannot be written. Every error names the file.

    Pass it (or just its path) as ``journal=`` to :class:`WorkerPool` or one of its
    calls, or to :class:`Pipeline`. ``len(journal)`` is how many jobs it holds.
    Opening costs about 1 ms, plus about 0.5 s per million finished jobs when a run
    resumes (their indices and digests are read).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"journal must be a path or a chanflow.Journal, not {path!r}")
        self.path = Path(path)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._closed = False
        self._file = self._claim_file()
        try:
            self._db = self._connect()
            self._reader: sqlite3.Connection | None = None
        except BaseException:
            self._release_file()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Journal {str(self.path)!r} {state}>"

    def _error(self, doing: str, error: object) -> JournalError:
        return JournalError(f"journal {str(self.path)!r}: cannot {doing}: {error}")

    def _claim_file(self) -> int:
        """Open the file and lock it for this program (see ``_open_files``)."""
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise self._error("open it for writing", error.strerror or error) from None
        stat = os.fstat(descriptor)
        key = (stat.st_dev, stat.st_ino)
        with _open_files_lock:
            other = _open_files.get(key)
            if other is not None and other() is not None:
                os.close(descriptor)  # this process holds no SQLite lock through it
                raise JournalError(
                    f"journal {str(self.path)!r} is already open in this program: "
                    "close the other Journal (or let its call finish) first"
                )
            if fcntl is not None:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as error:
                    os.close(descriptor)
                    if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise JournalError(
                            f"journal {str(self.path)!r} is in use by another program: "
                            "one run at a time can write a journal"
                        ) from None
                    raise self._error("lock it", error) from None
            _open_files[key] = weakref.ref(self)
        self._key = key
        return descriptor

    def _release_file(self) -> None:
        with _open_files_lock:
            if _open_files.get(self._key, lambda: None)() in (self, None):
                _open_files.pop(self._key, None)
        os.close(self._file)  # last: after every SQLite connection to the file is closed

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:
            raise self._error("open it", error) from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit survives the process being killed; only a power cut can
            # lose the last few, which a resume then runs again.
            db.execute("PRAGMA synchronous=NORMAL")
            self._check_schema(db)
        except sqlite3.Error as error:
            db.close()
            raise self._error("read it", _describe(error)) from None
        except BaseException:
            db.close()
            raise
        return db

    def _check_schema(self, db: sqlite3.Connection) -> None:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        if not tables:
            db.executescript(_SCHEMA_SQL)
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            return
        if not {"meta", "jobs"} <= tables:
            raise JournalError(
                f"{str(self.path)!r} is not a chanflow journal (it holds the tables "
                f"{', '.join(sorted(tables))}): give another path"
            )
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        found = int(row[0]) if row is not None and row[0].isdigit() else 1
        if found != SCHEMA:
            newer = found > SCHEMA
            raise JournalError(
                f"journal {str(self.path)!r} has schema {found}, written by "
                f"{'a newer' if newer else 'an older'} chanflow; this one reads schema "
                f"{SCHEMA}: finish that run with the chanflow that started it, or start "
                "a new journal"
            )

    # -- state ----------------------------------------------------------------------

    def __len__(self) -> int:
        """How many finished jobs the journal holds."""
        (count,) = self._read("count its jobs", "SELECT count(*) FROM jobs").fetchone()
        return int(count)

    def _read(self, doing: str, sql: str, parameters: Iterable[Any] = ()) -> sqlite3.Cursor:
        if self._closed:
            raise JournalError(f"journal {str(self.path)!r} is closed")
        try:
            with self._read_lock:
                if self._reader is None:
                    self._reader = sqlite3.connect(self.path, check_same_thread=False)
                return self._reader.execute(sql, tuple(parameters))
        except sqlite3.Error as error:
            raise self._error(doing, _describe(error)) from None

    def _meta(self, key: str) -> str | None:
        row = self._read("read it", "SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def begin(
        self,
        identity: str,
        *,
        resume: bool,
        resume_hint: str = "pass resume=True to continue that run",
        other_hint: str = "use another journal",
    ) -> dict[int, int]:
        """Claim the journal for a run of ``identity``; its finished jobs (index -> digest).

        Raises JournalError if it holds finished jobs of another run, or holds any and
        ``resume`` is False: so a journal never silently mixes two runs.
        """
        stored = self._meta("identity")
        finished = self._finished()
        if finished and stored is not None and stored != identity:
            raise JournalError(
                f"journal {str(self.path)!r} was written for a different run ({stored}), "
                f"not ({identity}): {other_hint}"
            )
        if finished and not resume:
            raise JournalError(
                f"journal {str(self.path)!r} already holds {len(finished):,} finished "
                f"jobs: {resume_hint}, or remove the file to start over"
            )
        if stored != identity:
            self._write_meta(identity)
        return finished

    def _finished(self) -> dict[int, int]:
        return dict(self._read("read its jobs", "SELECT idx, digest FROM jobs"))

    def _write_meta(self, identity: str) -> None:
        with self._write_lock:
            try:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('identity', ?)", (identity,))
            except sqlite3.Error as error:
                raise self._error("write it", _describe(error)) from None

    # -- writing and reading jobs -----------------------------------------------------

    def commit(self, rows: list[Row]) -> None:
        """Store ``rows`` in one transaction, durable when this returns (~3 us a row).

        Raises JournalError (naming the file, e.g. a full disk); then none of ``rows``
        is stored, and every row committed before stays.
        """
        with self._write_lock:
            if self._closed:
                raise JournalError(f"journal {str(self.path)!r} is closed")
            db = self._db
            try:
                db.execute("BEGIN")
                db.executemany("INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?,?,?)", rows)
                db.execute("COMMIT")
            except sqlite3.Error as error:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise self._error("write it", _describe(error)) from None

    def stored(self, first: int, last: int) -> list[Row]:
        """The finished jobs with indices ``first`` to ``last`` (inclusive), in order."""
        cursor = self._read(
            "read its jobs",
            "SELECT * FROM jobs WHERE idx BETWEEN ? AND ? ORDER BY idx",
            (first, last),
        )
        return [Row(*row) for row in cursor]

    def replay(self, finished: dict[int, int], page: int = 1024) -> Iterator[Row]:
        """The rows of ``finished`` (what :meth:`begin` returned), in index order, read a
        ``page`` at a time; rows committed since (by this run) are left out."""
        after, last = -1, max(finished, default=-1)
        while after < last:
            rows = self.stored(after + 1, min(after + page, last))
            after = min(after + page, last)
            yield from (row for row in rows if row.idx in finished)

    def outcome(self, row: Row, noun: str = "job") -> Any:
        """The stored outcome of ``row``; JournalError if it cannot be read back."""
        try:
            return decode(row.encoding, row.outcome)
        except Exception as error:
            raise JournalError(
                f"journal {str(self.path)!r}: the stored outcome of {noun} {row.idx:,} "
                f"cannot be read back ({type(error).__name__}: {error})"
            ) from None

    def close(self) -> None:
        """Close the file and let other programs open it. Idempotent."""
        with self._write_lock, self._read_lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()
            if self._reader is not None:
                self._reader.close()
        self._release_file()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._closed:
                self.close()


def _describe(error: sqlite3.Error) -> str:
    text = str(error)
    if "not a database" in text or "malformed" in text:
        return f"{text} (the file is corrupted or truncated)"
    return text


def open_journal(journal: object) -> tuple[Journal, bool]:
    """The Journal a ``journal=`` setting names, and whether the caller owns (closes) it."""
    if isinstance(journal, Journal):
        return journal, False
    return Journal(journal), True  # type: ignore[arg-type]


# -- the committer thread ------------------------------------------------------------

_STOP = object()


class Committer:
    """Commits batches of rows on a thread of its own, then hands their payload on.

    ``put(payload)`` (any thread, never blocks) queues something finished;
    ``rows_of(payload)`` turns it into rows (on the committer's thread) and may
    replace the payload (a value that cannot be stored becomes a failure);
    ``forward(payload)`` hands it on once its rows are committed. Everything queued
    at a moment is committed in one transaction. A failed commit calls
    ``failed(error)`` and forwards nothing more.
    """

    def __init__(
        self,
        journal: Journal,
        rows_of: Callable[[Any], tuple[Any, list[Row]]],
        forward: Callable[[Any], None],
        failed: Callable[[JournalError], None],
    ) -> None:
        self.journal = journal
        self._rows_of = rows_of
        self._forward = forward
        self._failed = failed
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self.error: JournalError | None = None
        self._thread = threading.Thread(target=self._main, name="chanflow-journal", daemon=True)
        self._thread.start()

    def put(self, payload: Any) -> None:
        self._queue.put(payload)

    def _main(self) -> None:
        queue = self._queue
        while True:
            batch = [queue.get()]
            with contextlib.suppress(Empty):
                while len(batch) < 4096:
                    batch.append(queue.get_nowait())
            stop = next((i for i, payload in enumerate(batch) if payload is _STOP), None)
            if stop is not None:
                del batch[stop:]  # what is delivered after close() is not committed
            if batch and self.error is None:
                self._commit(batch)
            if stop is not None:
                return

    def _commit(self, batch: list[Any]) -> None:
        payloads, rows = [], []
        try:
            for payload in batch:
                payload, payload_rows = self._rows_of(payload)
                payloads.append(payload)
                rows.extend(payload_rows)
            if rows:
                self.journal.commit(rows)
        except Exception as error:
            if not isinstance(error, JournalError):  # a bug: still fail the run, not hang it
                error = JournalError(f"journal {str(self.journal.path)!r}: {error!r}")
            self.error = error
            self._failed(error)
            return
        for payload in payloads:
            self._forward(payload)

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread (waits up to ``timeout`` s)."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
