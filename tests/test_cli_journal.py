"""The journal, the recorder that rebuilds output from it, and resuming's input check."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chanflow._cli._jobs import Job
from chanflow._cli._journal import Journal, JournalError
from chanflow._cli._records import Recorder
from chanflow._cli._run import InputChanged, skip_finished


def job(index: int, text: str | None = None) -> Job:
    text = str(index) if text is None else text
    return Job(index, text, "in.txt", index + 1, args=(text,))


def line(index: int) -> str:
    return f'{{"index": {index}}}'


def test_journal_records_survive_reopening_and_replay_in_index_order(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    journal = Journal(path, "--call m:f", resume=False)
    for index in (3, 0, 2):
        journal.record(index, job(index).digest, ok=index != 2, line=line(index), dead=None)
    journal.close()

    reopened = Journal(path, "--call m:f", resume=True)
    assert reopened.finished == {i: job(i).digest for i in (0, 2, 3)}
    assert [(i, text) for i, text, _ in reopened.replay()] == [(i, line(i)) for i in (0, 2, 3)]
    reopened.close()


def test_journal_uses_write_ahead_logging(tmp_path: Path) -> None:
    Journal(tmp_path / "run.db", "x", resume=False).close()
    with closing(sqlite3.connect(tmp_path / "run.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_job_is_recorded_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "run.db", "x", resume=False)
    journal.record(0, "d", ok=True, line="{}", dead=None)
    with pytest.raises(sqlite3.IntegrityError):
        journal.record(0, "d", ok=True, line="{}", dead=None)
    journal.close()


def test_journal_refusals(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    journal = Journal(path, "--call m:f", resume=False)
    journal.record(0, "d", ok=True, line="{}", dead=None)
    journal.close()

    with pytest.raises(JournalError, match="already holds 1 finished jobs: add --resume"):
        Journal(path, "--call m:f", resume=False)
    with pytest.raises(JournalError, match=r"written for a different run \(--call m:f\)"):
        Journal(path, "--call m:g", resume=True)
    (tmp_path / "junk.db").write_text("not a database, not at all" * 100)
    with pytest.raises(JournalError, match="cannot use journal"):
        Journal(tmp_path / "junk.db", "x", resume=True)


def test_resuming_a_journal_that_does_not_exist_starts_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "new.db", "x", resume=True)
    assert journal.finished == {}
    journal.close()


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(min_value=0, max_value=40),
    data=st.data(),
    ordered=st.booleans(),
)
def test_recorder_writes_every_job_once_merging_the_replay(
    tmp_path_factory: pytest.TempPathFactory, total: int, data: st.DataObject, ordered: bool
) -> None:
    """Whatever the journal finished before, the rebuilt output holds each job once,
    in index order with ``ordered`` (the new jobs coming in index order then)."""
    directory = tmp_path_factory.mktemp("recorder")
    earlier = data.draw(st.sets(st.integers(0, max(total - 1, 0))), label="finished earlier")
    earlier = {index for index in earlier if index < total}
    journal = Journal(directory / "run.db", "x", resume=True)
    for index in earlier:
        journal.record(index, job(index).digest, ok=True, line=line(index), dead=f"d{index}")
    journal.close()
    rest = [index for index in range(total) if index not in earlier]
    if not ordered:
        rest = data.draw(st.permutations(rest), label="completion order")

    journal = Journal(directory / "run.db", "x", resume=True)
    output = directory / "out.jsonl"
    recorder = Recorder(output, directory / "dead.jsonl", journal, ordered=ordered)
    for index in rest:
        recorder.record(job(index), ok=index % 2 == 0, line=line(index), dead=f"n{index}")
    recorder.finish()
    journal.close()

    written = [int(text.split(": ")[1].rstrip("}")) for text in output.read_text().splitlines()]
    assert sorted(written) == list(range(total))
    if ordered:
        assert written == list(range(total))
    dead = (directory / "dead.jsonl").read_text().split()
    assert sorted(dead) == sorted([f"d{i}" for i in earlier] + [f"n{i}" for i in rest])
    assert recorder.replayed == len(earlier)


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
