"""Tests of the journal store: its file, its errors, what it stores and gives back."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from contextlib import closing
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chanflow as cf
from chanflow._journal import OK, Row, decode, digest_of, encode, identity_of
from helpers import fork_while_held

# -- the file ----------------------------------------------------------------------


def test_a_new_journal_is_empty_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    with cf.Journal(path) as journal:
        assert len(journal) == 0
        journal.begin("f", resume=False)
        journal.commit([Row(0, digest_of(0), OK, *encode("zero"), 1, 0.1, None)])
        assert len(journal) == 1
    with cf.Journal(str(path)) as journal:
        assert len(journal) == 1
        assert journal.begin("f", resume=True) == {0: digest_of(0)}


def test_a_second_journal_on_the_same_file_in_one_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    with cf.Journal(path):
        with pytest.raises(cf.JournalError, match="already open in this program") as caught:
            cf.Journal(path)
        assert str(path) in str(caught.value)
    with cf.Journal(path):  # released by close
        pass


def test_another_program_holding_the_journal_makes_opening_it_fail(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, chanflow as cf; j = cf.Journal(sys.argv[1]); print('held', flush=True);"
            " sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(cf.JournalError, match="in use by another program") as caught:
            cf.Journal(path)
        assert str(path) in str(caught.value)
    finally:
        holder.communicate("", timeout=30)
    with cf.Journal(path) as journal:  # the holder exited: free again
        assert len(journal) == 0


def test_a_file_that_is_not_a_database_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(cf.JournalError, match="corrupted") as caught:
        cf.Journal(path)
    assert str(path) in str(caught.value)


def test_a_truncated_journal_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    with cf.Journal(path) as journal:
        journal.begin("f", resume=False)
        rows = [Row(i, digest_of(i), OK, *encode("x" * 200), 1, 0.0, None) for i in range(5000)]
        journal.commit(rows)
    # Everything into the main file, as a crash might not leave it.
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.truncate(size // 2)
    with pytest.raises(cf.JournalError) as caught, cf.Journal(path) as journal:
        journal.begin("f", resume=True)
    assert str(path) in str(caught.value)
    assert "corrupted or truncated" in str(caught.value)


def test_a_journal_of_the_older_schema_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as db, db:  # what `chanflow run` wrote before schema 2
        db.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE jobs (idx INTEGER PRIMARY KEY, digest TEXT NOT NULL, ok INTEGER"
            " NOT NULL, record TEXT NOT NULL, dead_letter TEXT);"
            "INSERT INTO meta VALUES ('identity', 'cmd');"
            "INSERT INTO jobs VALUES (0, 'abc', 1, '{}', NULL);"
        )
    with pytest.raises(cf.JournalError, match="schema 1, written by an older chanflow") as caught:
        cf.Journal(path)
    assert str(path) in str(caught.value)
    with closing(sqlite3.connect(path)) as db, db:  # the old journal's record is untouched
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (1,)


def test_a_database_of_something_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(cf.JournalError, match=r"not a chanflow journal.*customers"):
        cf.Journal(path)


def _read_only_path(tmp_path: Path) -> Path:
    """A journal path this process cannot write, even as root."""
    if os.geteuid() == 0:
        return Path("/proc/chanflow-journal.db")  # procfs takes no new files
    directory = tmp_path / "locked"
    directory.mkdir()
    directory.chmod(0o555)
    return directory / "run.db"


def test_a_path_that_cannot_be_written_is_refused_naming_it(tmp_path: Path) -> None:
    path = _read_only_path(tmp_path)
    with pytest.raises(cf.JournalError, match="cannot open it for writing") as caught:
        cf.Journal(path)
    assert str(path) in str(caught.value)


def test_a_journal_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(cf.JournalError, match=str(tmp_path)):
        cf.Journal(tmp_path)


def test_a_journal_must_be_a_path() -> None:
    with pytest.raises(TypeError, match="journal must be a path"):
        cf.Journal(42)  # type: ignore[arg-type]


# -- claiming it for a run ---------------------------------------------------------------


def test_finished_jobs_are_reused_only_when_resuming(tmp_path: Path) -> None:
    with cf.Journal(tmp_path / "run.db") as journal:
        assert journal.begin("f", resume=False) == {}
        journal.commit([Row(3, 7, OK, *encode(1), 1, 0.0, None)])
        with pytest.raises(cf.JournalError, match=r"already holds 1 finished jobs.*resume=True"):
            journal.begin("f", resume=False)
        assert journal.begin("f", resume=True) == {3: 7}
        with pytest.raises(cf.JournalError, match=r"different run \(f\), not \(g\)"):
            journal.begin("g", resume=True)


def test_a_journal_with_no_finished_job_takes_a_new_run(tmp_path: Path) -> None:
    with cf.Journal(tmp_path / "run.db") as journal:
        journal.begin("f", resume=False)
        assert journal.begin("g", resume=False) == {}  # nothing of f's to protect


def test_commits_from_many_threads_all_land(tmp_path: Path) -> None:
    with cf.Journal(tmp_path / "run.db") as journal:
        journal.begin("f", resume=False)

        def write(first: int) -> None:
            for index in range(first, first + 500, 10):
                journal.commit(
                    [Row(i, i, OK, *encode(i), 1, 0.0, None) for i in range(index, index + 10)]
                )

        threads = [threading.Thread(target=write, args=(n * 500,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        rows = journal.stored(0, 10_000)
        assert [row.idx for row in rows] == list(range(4000))
        assert all(decode(row.encoding, row.outcome) == row.idx for row in rows)


def test_a_failed_commit_stores_nothing_of_its_batch_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    with cf.Journal(path) as journal:
        journal.begin("f", resume=False)
        journal.commit([Row(0, 0, OK, *encode("kept"), 1, 0.0, None)])
        journal._db.execute("PRAGMA max_page_count = 1")  # the file cannot grow any more
        with pytest.raises(cf.JournalError, match="full") as caught:
            journal.commit([Row(i, i, OK, *encode("x" * 5000), 1, 0.0, None) for i in range(50)])
        assert str(path) in str(caught.value)
    with cf.Journal(path) as journal:
        assert [decode(r.encoding, r.outcome) for r in journal.stored(0, 100)] == ["kept"]


# -- values ------------------------------------------------------------------------------


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x


STORABLE = [
    None,
    0,
    -(2**63),
    2**70,
    1.5,
    math.inf,
    "text",
    b"\x00bytes",
    True,
    [1, "a", None, [2.5]],
    {"a": [1, {"b": None}]},
    (1, 2),
    {1: "int keys"},
    {"a", "b"},
    Fraction(1, 3),
    Point(3),
    ValueError("an error"),
]


@pytest.mark.parametrize("value", STORABLE, ids=[type(v).__name__ for v in STORABLE])
def test_values_come_back_exactly_as_they_were(value: Any, tmp_path: Path) -> None:
    encoding, stored = encode(value)
    with cf.Journal(tmp_path / "run.db") as journal:
        journal.begin("f", resume=False)
        journal.commit([Row(0, 0, OK, encoding, stored, 1, 0.0, None)])
        (row,) = journal.stored(0, 0)
    back = decode(row.encoding, row.outcome)
    if isinstance(value, Exception):
        assert type(back) is ValueError and back.args == value.args
    else:
        assert back == value and type(back) is type(value)


def test_nan_and_lambdas_survive_the_store() -> None:
    assert math.isnan(decode(*encode(math.nan)))
    assert decode(*encode(lambda x: x + 1))(1) == 2  # cloudpickle


def test_a_ten_megabyte_value_is_stored(tmp_path: Path) -> None:
    big = os.urandom(10 * 1024 * 1024)
    with cf.Journal(tmp_path / "run.db") as journal:
        journal.begin("f", resume=False)
        journal.commit([Row(0, 0, OK, *encode(big), 1, 0.0, None)])
        (row,) = journal.stored(0, 0)
    assert decode(row.encoding, row.outcome) == big


def test_what_cannot_be_stored_is_a_type_error_saying_why() -> None:
    with pytest.raises(TypeError, match="lock cannot be pickled"):
        encode(threading.Lock())


# -- digests and identities -------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.tuples(inner, inner)
            | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_equal_inputs_have_equal_digests(value: Any) -> None:
    import copy

    assert digest_of(value) == digest_of(copy.deepcopy(value))


def test_different_inputs_have_different_digests() -> None:
    values: list[Any] = [0, 1, "0", "1", 0.0, False, None, (0,), [0], b"0", {0}, {"0": 0}, ""]
    assert len({digest_of(value) for value in values}) == len(values)


def test_digests_are_the_same_in_another_process_whatever_its_string_hashing() -> None:
    value = {"sets": {"a", "b", "c", "d"}, "row": ("x", 1, 2.5)}
    code = textwrap.dedent(
        """
        from chanflow._journal import digest_of
        print(digest_of({"sets": {"a", "b", "c", "d"}, "row": ("x", 1, 2.5)}))
        """
    )
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
        assert int(out.stdout) == digest_of(value), out.stderr


def test_identity_names_the_function() -> None:
    import functools

    assert identity_of(digest_of) == "chanflow._journal.digest_of"
    assert identity_of(functools.partial(digest_of, 1)) == "partial(chanflow._journal.digest_of)"
    assert identity_of(Point) == f"{__name__}.Point"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork, which only POSIX systems have")
def test_a_fork_while_a_journal_opens_leaves_the_child_able_to_open_one(tmp_path: Path) -> None:
    child = """\
        with cf.Journal(sys.argv[1]) as journal:
            print("child opened", len(journal), flush=True)"""
    lines = fork_while_held(tmp_path, "_journal._open_files_lock", child, str(tmp_path / "c.db"))
    assert lines == ["child opened 0"]
