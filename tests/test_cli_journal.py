"""``chanflow run`` on the library's journal: rows, refusals, rebuilding output, input checks."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chanflow as cf
from chanflow._cli import _records
from chanflow._cli._jobs import Job
from chanflow._cli._records import Recorder, replay
from chanflow._cli._run import InputChanged, UsageProblem, open_journal, skip_finished
from chanflow._journal import DEAD, FAILED, OK, Row, decode, digest_of, encode


def job(index: int, text: str | None = None) -> Job:
    text = str(index) if text is None else text
    return Job(index, text, "in.txt", index + 1, args=(text,))


def line(index: int) -> str:
    return f'{{"index": {index}}}'


def result(index: int, *, ok: bool = True) -> cf.Result[Any]:
    if ok:
        return cf.Result(job(index), index, value=index, attempts=1, elapsed=0.25)
    error = ValueError(f"{index} is unlucky")
    return cf.Result(job(index), index, error=error, attempts=3, elapsed=0.5, traceback="tb")


def record(recorder: Recorder, index: int, *, ok: bool = True, dead: str | None = None) -> None:
    recorder.record(job(index), result(index, ok=ok), line=line(index), dead=dead)


def opened(path: Path, identity: str = "chanflow run --call m:f", *, resume: bool) -> cf.Journal:
    journal, _ = open_journal(path, identity, resume=resume)
    assert journal is not None
    return journal


def test_each_finished_job_is_one_row_of_the_library_journal(tmp_path: Path) -> None:
    journal = opened(tmp_path / "run.db", resume=False)
    recorder = Recorder(tmp_path / "out.jsonl", tmp_path / "dead.jsonl", journal, ordered=False)
    record(recorder, 0)
    record(recorder, 1, ok=False, dead="d1")
    recorder.finish()
    journal.close()

    with cf.Journal(tmp_path / "run.db") as library:
        assert len(library) == 2
        ok, failed = library.stored(0, 1)
    assert ok == Row(0, digest_of("0"), OK, *encode([line(0), None]), 1, 0.25, None)
    assert failed == Row(1, digest_of("1"), DEAD, *encode([line(1), "d1"]), 3, 0.5, "tb")
    assert decode(failed.encoding, failed.outcome) == [line(1), "d1"]


def test_a_failed_job_without_dead_letters_is_failed_and_keeps_its_dead_letter(
    tmp_path: Path,
) -> None:
    journal = opened(tmp_path / "run.db", resume=False)
    recorder = Recorder(tmp_path / "out.jsonl", None, journal, ordered=False)
    record(recorder, 0, ok=False, dead="d0")
    recorder.finish()
    journal.close()

    with cf.Journal(tmp_path / "run.db") as library:
        (row,) = library.stored(0, 0)
    assert row.status == FAILED
    assert decode(row.encoding, row.outcome) == [line(0), "d0"], "for a resume with dead letters"


def test_journal_records_survive_reopening_and_replay_in_index_order(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    journal = opened(path, resume=False)
    recorder = Recorder(tmp_path / "first.jsonl", None, journal, ordered=False)
    for index in (3, 0, 2):
        record(recorder, index, ok=index != 2)
    recorder.finish()
    journal.close()

    reopened, finished = open_journal(path, "chanflow run --call m:f", resume=True)
    assert reopened is not None
    assert finished == {i: job(i).digest for i in (0, 2, 3)}
    replay = Recorder(tmp_path / "again.jsonl", None, reopened, finished, ordered=False)
    replay.finish()
    reopened.close()
    assert (tmp_path / "again.jsonl").read_text().splitlines() == [line(i) for i in (0, 2, 3)]
    assert replay.replayed == 3


def test_journal_uses_write_ahead_logging(tmp_path: Path) -> None:
    opened(tmp_path / "run.db", resume=False).close()
    with closing(sqlite3.connect(tmp_path / "run.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_job_is_recorded_once(tmp_path: Path) -> None:
    journal = opened(tmp_path / "run.db", resume=False)
    first = Recorder(tmp_path / "out.jsonl", None, journal, ordered=False)
    record(first, 0)
    first.finish()
    journal.close()

    resumed, finished = open_journal(tmp_path / "run.db", "chanflow run --call m:f", resume=True)
    assert resumed is not None
    again = Recorder(tmp_path / "out.jsonl", None, resumed, finished, ordered=True)
    with pytest.raises(RuntimeError, match="job 0 was finished by an earlier run"):
        record(again, 0)
    again.finish()
    resumed.close()
    assert (tmp_path / "out.jsonl").read_text().splitlines() == [line(0)]
    with cf.Journal(tmp_path / "run.db") as library:
        assert len(library) == 1


def test_a_job_is_committed_before_its_lines_are_written(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    journal = opened(path, resume=False)
    recorder = Recorder(tmp_path / "out.jsonl", tmp_path / "dead.jsonl", journal, ordered=False)
    record(recorder, 0)
    journal._db.execute("PRAGMA max_page_count = 1")  # a full disk: no commit can land
    with pytest.raises(cf.JournalError, match="full") as caught:
        recorder.record(job(1), result(1, ok=False), line="x" * 9000, dead="d" * 9000)
    assert str(path) in str(caught.value)
    recorder.finish()
    journal.close()

    assert (tmp_path / "out.jsonl").read_text().splitlines() == [line(0)], "not written"
    assert (tmp_path / "dead.jsonl").read_text() == ""
    with cf.Journal(path) as library:
        assert [row.idx for row in library.stored(0, 10)] == [0], "what was committed stays"


def test_journal_refusals(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    journal = opened(path, resume=False)
    first = Recorder(tmp_path / "out.jsonl", None, journal, ordered=False)
    record(first, 0)
    first.finish()
    journal.close()

    with pytest.raises(UsageProblem, match="already holds 1 finished jobs: add --resume"):
        open_journal(path, "chanflow run --call m:f", resume=False)
    with pytest.raises(
        UsageProblem,
        match=r"written for a different run \(chanflow run --call m:f\).*another --journal file",
    ):
        open_journal(path, "chanflow run --call m:g", resume=True)
    (tmp_path / "junk.db").write_text("not a database, not at all" * 100)
    with pytest.raises(UsageProblem, match=r"junk\.db.*corrupted"):
        open_journal(tmp_path / "junk.db", "x", resume=True)
    assert open_journal(None, "x", resume=False) == (None, {})


def test_a_refused_journal_is_closed_for_the_next_program(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    journal = opened(path, resume=False)
    first = Recorder(tmp_path / "out.jsonl", None, journal, ordered=False)
    record(first, 0)
    first.finish()
    journal.close()
    with pytest.raises(UsageProblem):
        open_journal(path, "chanflow run --call m:f", resume=False)

    with cf.Journal(path) as library:  # not left locked by the refusal
        assert len(library) == 1


def test_a_journal_of_an_older_chanflow_is_refused_naming_its_schema(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as db, db:  # what chanflow run wrote before schema 2
        db.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE jobs (idx INTEGER PRIMARY KEY, digest TEXT NOT NULL, ok INTEGER"
            " NOT NULL, record TEXT NOT NULL, dead_letter TEXT);"
            "INSERT INTO meta VALUES ('identity', '--call m:f');"
            "INSERT INTO jobs VALUES (0, 'abc', 1, '{}', NULL);"
        )
    with pytest.raises(UsageProblem, match=r"old\.db.*schema 1, written by an older chanflow"):
        open_journal(path, "chanflow run --call m:f", resume=True)


def test_a_journal_of_a_library_call_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    with cf.Journal(path) as library:
        library.begin("m.f", resume=False)
        library.commit([Row(0, digest_of("0"), OK, *encode(0), 1, 0.0, None)])
    with pytest.raises(UsageProblem, match=r"different run \(m\.f\)"):
        open_journal(path, "chanflow run --call m:f", resume=True)


@pytest.mark.parametrize(
    "outcome", [0, {"line": "x", "dead": None}, [1, None], ["x", None, None], ("x", None)], ids=repr
)
def test_a_row_that_chanflow_run_did_not_write_is_refused_on_replay(
    tmp_path: Path, outcome: Any
) -> None:
    path = tmp_path / "run.db"
    with cf.Journal(path) as library:  # the same identity, but not [output line, dead letter]
        library.begin("chanflow run --call m:f", resume=False)
        library.commit([Row(0, digest_of("0"), OK, *encode(outcome), 1, 0.0, None)])
    journal, finished = open_journal(path, "chanflow run --call m:f", resume=True)
    assert journal is not None
    with pytest.raises(cf.JournalError, match="job 0 was not written by chanflow run"):
        Recorder(tmp_path / "out.jsonl", None, journal, finished, ordered=False)
    journal.close()


def test_resuming_a_journal_that_does_not_exist_starts_it(tmp_path: Path) -> None:
    journal, finished = open_journal(tmp_path / "new.db", "x", resume=True)
    assert journal is not None and finished == {}
    journal.close()


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(min_value=0, max_value=40),
    data=st.data(),
    ordered=st.booleans(),
    chunk=st.sampled_from([1, 3, 2048]),
)
def test_recorder_writes_every_job_once_merging_the_replay(
    tmp_path_factory: pytest.TempPathFactory,
    total: int,
    data: st.DataObject,
    ordered: bool,
    chunk: int,
) -> None:
    """Whatever the journal finished before, the rebuilt output holds each job once,
    in index order with ``ordered`` (the new jobs coming in index order then), however
    many finished jobs the replay reads from the journal at a time."""
    with mock.patch.object(_records, "REPLAY_CHUNK", chunk):
        check_recorder(tmp_path_factory.mktemp("recorder"), total, data, ordered=ordered)


def check_recorder(directory: Path, total: int, data: st.DataObject, *, ordered: bool) -> None:
    earlier = data.draw(st.sets(st.integers(0, max(total - 1, 0))), label="finished earlier")
    earlier = {index for index in earlier if index < total}
    journal, _ = open_journal(directory / "run.db", "x", resume=True)
    assert journal is not None
    first = Recorder(directory / "first.jsonl", None, journal, ordered=False)
    for index in earlier:
        record(first, index, dead=f"d{index}")
    first.finish()
    journal.close()
    rest = [index for index in range(total) if index not in earlier]
    if not ordered:
        rest = data.draw(st.permutations(rest), label="completion order")

    journal, finished = open_journal(directory / "run.db", "x", resume=True)
    assert journal is not None and set(finished) == earlier
    output = directory / "out.jsonl"
    recorder = Recorder(output, directory / "dead.jsonl", journal, finished, ordered=ordered)
    for index in rest:
        record(recorder, index, ok=index % 2 == 0, dead=f"n{index}")
    recorder.finish()
    journal.close()

    written = [int(text.split(": ")[1].rstrip("}")) for text in output.read_text().splitlines()]
    assert sorted(written) == list(range(total))
    if ordered:
        assert written == list(range(total))
    dead = (directory / "dead.jsonl").read_text().split()
    assert sorted(dead) == sorted([f"d{i}" for i in earlier] + [f"n{i}" for i in rest])
    assert recorder.replayed == len(earlier)


def test_the_replay_leaves_out_jobs_recorded_since_the_run_began(tmp_path: Path) -> None:
    journal = opened(tmp_path / "run.db", resume=False)
    first = Recorder(tmp_path / "out.jsonl", None, journal, ordered=False)
    for index in (0, 4, 5, 9):
        record(first, index)
    finished = {i: job(i).digest for i in (0, 4, 5, 9)}
    first.finish()
    resumed = Recorder(tmp_path / "new.jsonl", None, journal, ordered=False)
    for index in (2, 7):  # recorded by the resumed run, inside the replay's ranges
        record(resumed, index)
    resumed.finish()

    with mock.patch.object(_records, "REPLAY_CHUNK", 2):
        assert [index for index, _, _ in replay(journal, finished)] == [0, 4, 5, 9]
    journal.close()


def test_skip_finished_keeps_the_unfinished_jobs_of_the_checked_stretch() -> None:
    jobs = [job(i) for i in range(6)]
    finished = {0: jobs[0].digest, 2: jobs[2].digest, 3: jobs[3].digest}

    assert [j.index for j in skip_finished(iter(jobs), finished)] == [1, 4, 5]


def test_skip_finished_checks_every_finished_job_before_returning() -> None:
    jobs = [job(0), job(1, "changed"), job(2)]
    finished = {0: job(0).digest, 1: job(1).digest}
    pulled: list[int] = []

    def reading() -> Iterator[Job]:
        for each in jobs:
            pulled.append(each.index)
            yield each

    with pytest.raises(InputChanged, match=re.escape("line 2 of in.txt is not the job 1")):
        skip_finished(reading(), finished)
    assert pulled == [0, 1], "refused before any job could run, reading no further"


def test_skip_finished_refuses_a_shorter_input() -> None:
    with pytest.raises(InputChanged, match="it has 2 jobs, the journal finished job 4"):
        skip_finished(iter([job(0), job(1)]), {4: job(4).digest})
