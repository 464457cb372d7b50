"""``chanflow run`` end to end: the real command in a subprocess, real files and signals."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import chanflow as cf
from chanflow._journal import DEAD, OK, decode, digest_of
from cli_helpers import (
    chanflow,
    lines_of,
    records,
    start_chanflow,
    wait_for,
    write_jobs_module,
)
from helpers import process_running

UNLUCKY = {3, 10, 17}  # square() raises for n % 7 == 3


@pytest.fixture
def here(tmp_path: Path) -> Path:
    write_jobs_module(tmp_path)
    (tmp_path / "in.txt").write_text("".join(f"{n}\n" for n in range(1, 21)))
    return tmp_path


def without_timing(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key != "elapsed"}


def assert_one_clear_line(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("chanflow: error: "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


# --- results, failures, dead letters -----------------------------------------------


@pytest.mark.parametrize(
    ("function", "backend"),
    [("square", "thread"), ("square", "process"), ("asquare", "async"), ("asquare", None)],
)
def test_failures_become_error_records_and_dead_letters(
    here: Path, function: str, backend: str | None
) -> None:
    args = ["run", "--call", f"clijobs:{function}", "in.txt", "--dead-letters", "dead.jsonl"]
    done = chanflow(*args, *(["--backend", backend] if backend else []), cwd=here)

    assert done.returncode == 1, done.stderr
    out = sorted(records(done.stdout), key=lambda record: record["index"])
    assert [record["index"] for record in out] == list(range(20)), "each job exactly once"
    for record in out:
        n = int(record["job"])
        assert record["job"] == str(n) and record["index"] == n - 1
        assert record["attempts"] == 1 and record["elapsed"] >= 0
        if n in UNLUCKY:
            assert record["ok"] is False
            assert record["error"] == f"ValueError: {n} is unlucky"
            assert record["error_type"] == "builtins.ValueError"
            assert "value" not in record
        else:
            assert record["ok"] is True and record["value"] == n * n and "error" not in record
    dead = records((here / "dead.jsonl").read_text())
    assert sorted(letter["job"] for letter in dead) == sorted(str(n) for n in UNLUCKY)
    for letter in dead:
        assert letter["line"] == int(letter["job"]) and letter["source"] == "in.txt"
        assert letter["message"] == f"{letter['job']} is unlucky"
        assert "Traceback" in letter["traceback"]
    assert "3 of 20 jobs failed" in done.stderr and "ValueError x3" in done.stderr
    assert "Traceback" not in done.stderr


def test_all_succeeded_exits_0_in_input_order_with_keep_order(here: Path) -> None:
    (here / "in.txt").write_text("".join(f"{n}\n" for n in range(200)))
    done = chanflow("run", "--call", "clijobs:work", "-j", "8", "--keep-order", "in.txt", cwd=here)

    assert done.returncode == 0, done.stderr
    out = records(done.stdout)
    assert [record["index"] for record in out] == list(range(200))
    assert [record["value"] for record in out] == [2 * n for n in range(200)]
    assert "200 jobs succeeded" in done.stderr


def test_jobs_come_from_stdin_and_several_files_with_empty_lines_skipped(here: Path) -> None:
    (here / "a.txt").write_text("1\n\n2\n")
    (here / "b.txt").write_text("4\r\n")
    from_files = chanflow(
        "run", "--call", "clijobs:square", "--keep-order", "a.txt", "b.txt", cwd=here
    )
    from_stdin = chanflow(
        "run", "--call", "clijobs:square", "--keep-order", cwd=here, stdin="1\n2\n\n4\n"
    )

    for done in (from_files, from_stdin):
        assert done.returncode == 0, done.stderr
        assert [(r["index"], r["job"], r["value"]) for r in records(done.stdout)] == [
            (0, "1", 1),
            (1, "2", 4),
            (2, "4", 16),
        ]


def test_output_file(here: Path) -> None:
    (here / "out.jsonl").write_text("stale\n")
    done = chanflow("run", "--call", "clijobs:work", "in.txt", "-o", "out.jsonl", cwd=here)

    assert done.returncode == 0 and done.stdout == ""
    assert sorted(r["value"] for r in records((here / "out.jsonl").read_text())) == [
        2 * n for n in range(1, 21)
    ]


def test_jsonl_objects_are_keyword_arguments_and_a_malformed_line_is_a_dead_letter(
    here: Path,
) -> None:
    (here / "in.jsonl").write_text('{"a": 1, "b": 2}\n[1, 2]\n{"a": 1\n5\n"x"\n')
    done = chanflow(
        "run", "--call", "clijobs:add", "--jsonl", "--keep-order", "in.jsonl",
        "--dead-letters", "dead.jsonl", "--retries", "2", cwd=here,
    )  # fmt: skip

    assert done.returncode == 1
    out = records(done.stdout)
    assert [(r["job"], r["ok"]) for r in out] == [
        ({"a": 1, "b": 2}, True),
        ([1, 2], False),  # a list is one positional argument: [1, 2] + 0 fails
        ('{"a": 1', False),
        (5, True),
        ("x", False),
    ]
    assert out[0]["value"] == 3 and out[3]["value"] == 5
    malformed = out[2]
    assert malformed["attempts"] == 0, "a malformed line is never run, nor retried"
    assert malformed["error"].startswith("MalformedLine: malformed JSON on line 3 of in.jsonl")
    dead = {letter["line"]: letter for letter in records((here / "dead.jsonl").read_text())}
    assert sorted(dead) == [2, 3, 5]
    assert dead[3]["message"].startswith("malformed JSON on line 3 of in.jsonl")
    assert "Traceback" not in done.stderr


def test_retries_recover_flaky_jobs(here: Path) -> None:
    done = chanflow("run", "--call", "clijobs:flaky", "--retries", "1", "in.txt", cwd=here)

    assert done.returncode == 0, done.stderr
    assert {r["attempts"] for r in records(done.stdout)} == {2}


def test_rate_limits_job_starts(here: Path) -> None:
    (here / "in.txt").write_text("".join(f"{n}\n" for n in range(11)))
    done = chanflow(
        "run", "--call", "clijobs:started_at", "--rate", "20/s", "-j", "4", "in.txt", cwd=here
    )

    assert done.returncode == 0, done.stderr
    starts = sorted(r["value"] for r in records(done.stdout))
    # 11 starts at 20/s with a burst of 1 span at least 0.5 s (some slack for timers).
    assert starts[-1] - starts[0] >= 0.45


def test_fail_fast_stops_at_the_first_failure(here: Path) -> None:
    (here / "in.txt").write_text("".join(f"{n}\n" for n in [3] + [1] * 500))
    done = chanflow(
        "run",
        "--call",
        "clijobs:square",
        "--fail-fast",
        "--keep-order",
        "-j",
        "2",
        "in.txt",
        cwd=here,
    )

    assert done.returncode == 1
    out = records(done.stdout)
    assert out[0]["ok"] is False and out[0]["job"] == "3"
    assert len(out) == 1, "nothing after the first failure is written with --keep-order"
    assert "--fail-fast" in done.stderr


def test_progress_renders_on_stderr_without_breaking_the_output(here: Path) -> None:
    done = chanflow("run", "--call", "clijobs:work", "--progress", "in.txt", cwd=here)

    assert done.returncode == 0, done.stderr
    assert len(records(done.stdout)) == 20


def test_values_json_cannot_hold_are_written_as_repr(here: Path) -> None:
    done = chanflow("run", "--call", "clijobs:unpicklable", cwd=here, stdin="1\n")

    assert done.returncode == 0, done.stderr
    assert records(done.stdout)[0]["value"].startswith("<function unpicklable.<locals>")


def test_a_closed_output_pipe_stops_the_run_with_one_line(here: Path) -> None:
    (here / "in.txt").write_text("".join(f"{n}\n" for n in range(100_000)))
    process = start_chanflow("run", "--call", "clijobs:work", "-j", "8", "in.txt", cwd=here)
    assert process.stdout is not None
    process.stdout.readline()
    process.stdout.close()  # as `| head -1` does
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 1
    assert stderr.strip().splitlines() == [
        "chanflow: stopped: cannot write the output: Broken pipe"
    ]


def test_jobs_and_commands_run_on_a_dask_cluster(here: Path, dask_client: Any) -> None:
    on_dask = ["run", "--backend", "dask", "--scheduler", dask_client.scheduler.address]
    called = chanflow(*on_dask, "--call", "clijobs:square", "--keep-order", "in.txt", cwd=here)
    commands = chanflow(*on_dask, "--keep-order", "--", "echo", "{#}", cwd=here, stdin="a\nb\n")

    assert called.returncode == 1, called.stderr
    out = records(called.stdout)
    assert [r["index"] for r in out] == list(range(20))
    assert [r.get("value") for r in out] == [None if n in UNLUCKY else n * n for n in range(1, 21)]
    assert commands.returncode == 0, commands.stderr
    assert [r["value"] for r in records(commands.stdout)] == ["1\n", "2\n"]


def test_an_unreachable_dask_scheduler_is_one_clear_line(here: Path) -> None:
    with socket.socket() as unused:  # bound, not listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{unused.getsockname()[1]}"
        done = chanflow(
            "run",
            "--backend",
            "dask",
            "--scheduler",
            address,
            "--call",
            "clijobs:square",
            "in.txt",
            cwd=here,
        )

    assert_one_clear_line(done, f"cannot reach the Dask scheduler at {address}")


# --- commands ------------------------------------------------------------------------


def test_command_placeholders(here: Path) -> None:
    done = chanflow(
        "run", "--keep-order", "--", "echo", "{}", "{.}", "{/}", "{//}", "{/.}", "{#}",
        cwd=here, stdin="photos/cat.jpg\nb.tar.gz\n",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert [r["value"] for r in records(done.stdout)] == [
        "photos/cat.jpg photos/cat cat.jpg photos cat 1\n",
        "b.tar.gz b.tar b.tar.gz  b.tar 2\n",
    ]


def test_command_without_placeholder_gets_the_line_appended(here: Path) -> None:
    done = chanflow("run", "--", "echo", "value:", cwd=here, stdin="a b\n")

    assert [r["value"] for r in records(done.stdout)] == ["value: a b\n"], "one argument"


def test_shell_commands_quote_values(here: Path) -> None:
    done = chanflow(
        "run", "--shell", "--", "printf '%s|' {} && echo", cwd=here, stdin="a b; echo no\n"
    )

    assert done.returncode == 0, done.stderr
    assert records(done.stdout)[0]["value"] == "a b; echo no|\n"


def test_failing_command_carries_exit_code_and_stderr_tail(here: Path) -> None:
    done = chanflow(
        "run", "--dead-letters", "dead.jsonl", "--", "sh", "-c", "echo oops $0 >&2; exit 3", "{}",
        cwd=here, stdin="x\n",
    )  # fmt: skip

    assert done.returncode == 1
    (record,) = records(done.stdout)
    assert record["error"] == "CommandFailed: exit code 3: oops x"
    assert "CommandFailed x1" in done.stderr


def test_command_timeout_kills_it(here: Path) -> None:
    started = time.monotonic()
    done = chanflow("run", "--timeout", "0.3", "--", "sleep", "{}", cwd=here, stdin="30\n")

    assert done.returncode == 1
    assert time.monotonic() - started < 10
    assert records(done.stdout)[0]["error_type"] == "chanflow.JobTimeout"


# --- bad usage and bad input: one clear line, exit 2 -----------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--call", "clijobs:square", "missing.txt"], ["cannot read missing.txt", "No such file"]),
        (["echo", "{}"], ["nothing to run", "a command after --"]),
        (["--call", "nosuchmodule:f", "in.txt"], ["cannot import module 'nosuchmodule'"]),
        (["--call", "clijobs:nosuch", "in.txt"], ["module 'clijobs' has no attribute 'nosuch'"]),
        (["--call", "clijobs:NOT_CALLABLE", "in.txt"], ["clijobs:NOT_CALLABLE is not callable"]),
        (["--call", "clijobs", "in.txt"], ["--call expects MODULE:FUNCTION"]),
        (["--call", "brokenjobs:f", "in.txt"], ["RuntimeError: this module is broken"]),
        (["in.txt", "--", "no-such-command-xyz", "{}"], ["command not found: no-such-command-xyz"]),
        (["--call", "clijobs:square", "--rate", "fast", "in.txt"], ["--rate fast"]),
        (["--call", "clijobs:square", "--", "echo"], ["not both"]),
        (["--call", "clijobs:square", "--resume", "in.txt"], ["--resume needs the --journal"]),
        (["--call", "clijobs:square", "--backend", "async", "in.txt"], ["needs an async def"]),
        (["--call", "clijobs:asquare", "--backend", "thread", "in.txt"], ["needs a plain"]),
        (["--backend", "process", "--", "echo"], ["commands run on threads"]),
        (
            ["--call", "clijobs:square", "--dead-letters", "no/dir/d.jsonl", "in.txt"],
            ["cannot write no/dir/d.jsonl"],
        ),
    ],
)
def test_bad_usage_gets_one_clear_line_and_exit_2(
    here: Path, args: list[str], fragments: list[str]
) -> None:
    assert_one_clear_line(chanflow("run", *args, cwd=here), *fragments)


def test_bad_input_does_not_clobber_the_output_file(here: Path) -> None:
    (here / "out.jsonl").write_text("precious\n")
    done = chanflow("run", "--call", "clijobs:nosuch", "in.txt", "-o", "out.jsonl", cwd=here)

    assert done.returncode == 2
    assert (here / "out.jsonl").read_text() == "precious\n"


def test_help_and_module_entry_point(here: Path) -> None:
    top = chanflow("--help", cwd=here)
    run_help = chanflow("run", "--help", cwd=here)

    assert top.returncode == 0 and "run" in top.stdout and "demo" in top.stdout
    assert run_help.returncode == 0
    for option in ("--call", "--workers", "--backend", "--rate", "--retries", "--timeout",
                   "--keep-order", "--output", "--dead-letters", "--journal", "--resume",
                   "--fail-fast", "--grace", "--progress", "--jsonl", "--shell"):  # fmt: skip
        assert option in run_help.stdout
    assert "Exit status" in run_help.stdout
    assert chanflow("--version", cwd=here).stdout.startswith("chanflow, version ")


# --- journal and resume -------------------------------------------------------------


def journal_rows(path: Path) -> list[int]:
    """The indices of the jobs the journal holds, read through the library."""
    with cf.Journal(path) as journal:
        return [row.idx for row in journal.stored(0, 2**62)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["thread", "process"])
@pytest.mark.parametrize("kill_after", [0, 40, 150])
@pytest.mark.parametrize("keep_order", [False, True], ids=["unordered", "keep_order"])
def test_a_run_killed_at_any_moment_resumes_to_exactly_once(
    here: Path, backend: str, kill_after: int, keep_order: bool
) -> None:
    (here / "in.txt").write_text("".join(f"{n}\n" for n in range(200)))
    base = ["run", "--call", "clijobs:work", "--backend", backend, "-j", "4", "in.txt"]
    order = ["--keep-order"] if keep_order else []
    clean = chanflow(*base, *order, cwd=here)
    durable = [*base, *order, "--journal", "run.db", "-o", "out.jsonl"]

    victim = start_chanflow(*durable, cwd=here)
    wait_for(lambda: lines_of(here / "out.jsonl") >= kill_after, f"{kill_after} output lines")
    victim.kill()  # SIGKILL: nothing gets to clean up
    victim.communicate(timeout=30)
    resumed = chanflow(*durable, "--resume", cwd=here)

    assert clean.returncode == 0 and resumed.returncode == 0, resumed.stderr
    out = records((here / "out.jsonl").read_text())
    indices = [record["index"] for record in out]
    assert sorted(indices) == list(range(200)), "every job exactly once in the output"
    if keep_order:
        assert indices == list(range(200))
    expected = sorted(map(without_timing, records(clean.stdout)), key=lambda r: r["index"])
    assert sorted(map(without_timing, out), key=lambda r: r["index"]) == expected
    assert journal_rows(here / "run.db") == list(range(200)), "and in the journal"


def test_resume_of_a_finished_run_runs_nothing_and_rewrites_the_same_output(here: Path) -> None:
    args = ["run", "--call", "clijobs:square", "in.txt", "--journal", "run.db", "-o", "out.jsonl",
            "--dead-letters", "dead.jsonl"]  # fmt: skip
    first = chanflow(*args, cwd=here)
    before = (here / "out.jsonl").read_text(), (here / "dead.jsonl").read_text()
    again = chanflow(*args, "--resume", cwd=here)

    assert first.returncode == 1 and again.returncode == 0, "no job failed in the resumed run"
    after = (here / "out.jsonl").read_text(), (here / "dead.jsonl").read_text()
    assert sorted(before[0].splitlines()) == sorted(after[0].splitlines())
    assert sorted(before[1].splitlines()) == sorted(after[1].splitlines())
    assert "0 jobs succeeded" in again.stderr and "+20 finished earlier" in again.stderr


def test_a_journal_is_not_reused_without_resume(here: Path) -> None:
    args = ["run", "--call", "clijobs:work", "in.txt", "--journal", "run.db"]
    assert chanflow(*args, cwd=here).returncode == 0

    assert_one_clear_line(chanflow(*args, cwd=here), "already holds 20 finished jobs", "--resume")


def test_a_changed_input_is_refused_on_resume(here: Path) -> None:
    args = ["run", "--call", "clijobs:work", "in.txt", "--journal", "run.db", "--resume"]
    assert chanflow(*args, cwd=here).returncode == 0
    (here / "in.txt").write_text((here / "in.txt").read_text().replace("5\n", "55\n", 1))

    assert_one_clear_line(chanflow(*args, cwd=here), "input changed", "line 5 of in.txt")


def test_a_shortened_input_is_refused_on_resume(here: Path) -> None:
    args = ["run", "--call", "clijobs:work", "in.txt", "--journal", "run.db", "--resume"]
    assert chanflow(*args, cwd=here).returncode == 0
    (here / "in.txt").write_text("1\n2\n")

    assert_one_clear_line(chanflow(*args, cwd=here), "input changed", "it has 2 jobs")


def test_a_journal_of_another_run_is_refused(here: Path) -> None:
    assert (
        chanflow(
            "run", "--call", "clijobs:work", "in.txt", "--journal", "run.db", cwd=here
        ).returncode
        == 0
    )

    refused = chanflow(
        "run", "--call", "clijobs:square", "in.txt", "--journal", "run.db", "--resume", cwd=here
    )
    assert_one_clear_line(refused, "written for a different run", "clijobs:work")


def test_a_cli_journal_is_a_library_journal(here: Path) -> None:
    args = ["run", "--call", "clijobs:square", "in.txt", "--journal", "run.db", "-o", "out.jsonl",
            "--dead-letters", "dead.jsonl"]  # fmt: skip
    assert chanflow(*args, cwd=here).returncode == 1

    lines = (here / "out.jsonl").read_text().splitlines()
    out = {json.loads(line)["index"]: line for line in lines}
    dead = {record["index"]: record for record in records((here / "dead.jsonl").read_text())}
    with cf.Journal(here / "run.db") as journal:
        assert len(journal) == 20
        rows = journal.stored(0, 100)
        with pytest.raises(cf.JournalError, match="different run"):
            journal.begin("clijobs.square", resume=True)  # a library call is another run
    assert [row.idx for row in rows] == list(range(20))
    for row in rows:
        line, dead_letter = decode(row.encoding, row.outcome)
        assert row.digest == digest_of(str(row.idx + 1)), "the digest of the input line"
        assert line == out[row.idx], "the exact output line"
        assert row.status == (DEAD if row.idx + 1 in UNLUCKY else OK)
        assert (dead_letter is None) == (row.idx not in dead)
        if dead_letter is not None:
            assert json.loads(dead_letter) == dead[row.idx]
            assert row.traceback is not None and "unlucky" in row.traceback


def test_a_journal_of_an_older_chanflow_is_refused(here: Path) -> None:
    with closing(sqlite3.connect(here / "old.db")) as db, db:  # chanflow run's, before schema 2
        db.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE jobs (idx INTEGER PRIMARY KEY, digest TEXT NOT NULL, ok INTEGER"
            " NOT NULL, record TEXT NOT NULL, dead_letter TEXT);"
            "INSERT INTO meta VALUES ('identity', '--call clijobs:work');"
            "INSERT INTO jobs VALUES (0, '6b86b273ff34fce1', 1, '{}', NULL);"
        )
    refused = chanflow(
        "run", "--call", "clijobs:work", "in.txt", "--journal", "old.db", "--resume", cwd=here
    )
    assert_one_clear_line(refused, "old.db", "schema 1, written by an older chanflow")
    with closing(sqlite3.connect(here / "old.db")) as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (1,), "left as it was"


def test_a_journal_in_use_by_a_running_run_is_refused(here: Path) -> None:
    process = start_gated_run(here)
    try:
        second = chanflow(
            "run", "--call", "clijobs:gated", "in.txt", "--journal", "run.db", "--resume",
            "-o", "second.jsonl", cwd=here,
        )  # fmt: skip
        assert_one_clear_line(second, "run.db", "in use by another program")
    finally:
        (here / "gate").touch()
        process.communicate(timeout=30)
    assert process.returncode == 0
    assert journal_rows(here / "run.db") == list(range(10)), "the running one went on"


@pytest.mark.timeout(120)
def test_a_journal_that_cannot_grow_stops_the_run_and_a_resume_finishes_it(here: Path) -> None:
    (here / "in.txt").write_text("".join(f"{n}\n" for n in range(300)))
    args = ["run", "--call", "clijobs:work", "-j", "4", "in.txt", "--journal", "run.db",
            "-o", "out.jsonl"]  # fmt: skip
    full = chanflow(*args, cwd=here, max_file_size=200_000)  # the WAL grows ~4 kB a job

    assert full.returncode == 1, full.stderr
    assert "Traceback" not in full.stderr, full.stderr
    assert "chanflow: stopped: journal 'run.db': cannot write it" in full.stderr
    assert "resume with: chanflow run" in full.stderr
    committed = journal_rows(here / "run.db")
    assert 0 < len(committed) < 300
    written = sorted(record["index"] for record in records((here / "out.jsonl").read_text()))
    assert written == committed, "exactly the committed jobs were written"

    resumed = chanflow(*args, "--resume", cwd=here)
    assert resumed.returncode == 0, resumed.stderr
    indices = sorted(record["index"] for record in records((here / "out.jsonl").read_text()))
    assert indices == list(range(300))
    assert journal_rows(here / "run.db") == list(range(300))


# --- signals ---------------------------------------------------------------------------


def started_jobs(here: Path) -> set[str]:
    return {path.name for path in (here / "started").iterdir()}


def start_gated_run(here: Path, *extra: str) -> subprocess.Popen[str]:
    (here / "in.txt").write_text("".join(f"{n}\n" for n in range(10)))
    process = start_chanflow(
        "run", "--call", "clijobs:gated", "-j", "2", "in.txt", "--journal", "run.db",
        "-o", "out.jsonl", *extra, cwd=here,
    )  # fmt: skip
    wait_for(lambda: len(started_jobs(here)) == 2, "two running jobs")
    return process


def await_stop_notice(process: subprocess.Popen[str]) -> str:
    """The line the first signal prints once the stop is in force (blocks until then)."""
    assert process.stderr is not None
    line = process.stderr.readline()
    assert "no new jobs" in line, line
    return line


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_first_signal_lets_running_jobs_finish_then_exits_130_and_resume_finishes(
    here: Path, signum: signal.Signals
) -> None:
    process = start_gated_run(here)
    running = started_jobs(here)
    process.send_signal(signum)
    await_stop_notice(process)
    (here / "gate").touch()
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 130, stderr
    assert started_jobs(here) == running, "no job started after the signal"
    assert {r["job"] for r in records((here / "out.jsonl").read_text())} == running
    assert f"stopped ({signum.name})" in stderr
    resume_line = next(line for line in stderr.splitlines() if "resume with:" in line)
    assert resume_line.endswith("--journal run.db -o out.jsonl --resume")

    resumed = chanflow(*resume_line.split("resume with: chanflow ")[1].split(), cwd=here)
    assert resumed.returncode == 0, resumed.stderr
    indices = sorted(r["index"] for r in records((here / "out.jsonl").read_text()))
    assert indices == list(range(10))
    assert journal_rows(here / "run.db") == list(range(10))


def test_second_signal_stops_at_once(here: Path) -> None:
    process = start_gated_run(here)
    process.send_signal(signal.SIGINT)
    await_stop_notice(process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=20)

    assert process.returncode == 130
    assert "stopped at once (SIGINT)" in stderr
    assert "resume with:" in stderr
    assert lines_of(here / "out.jsonl") == 0
    assert "Traceback" not in stderr


def test_the_grace_period_ends_in_a_stop_at_once(here: Path) -> None:
    process = start_gated_run(here, "--grace", "0.5")
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)

    assert process.returncode == 130
    assert 0.5 <= time.monotonic() - started < 15
    assert "stopped at once (grace period over)" in stderr


def test_a_stop_at_once_kills_running_commands(here: Path) -> None:
    (here / "pids").mkdir()
    script = "echo $$ > pids/$0.tmp && mv pids/$0.tmp pids/$0 && exec sleep 60"
    process = start_chanflow("run", "-j", "2", "in.txt", "--", "sh", "-c", script, "{#}", cwd=here)
    pid_files = here / "pids"
    wait_for(lambda: len(list(pid_files.iterdir())) == 2, "two running commands")
    pids = [int(path.read_text()) for path in pid_files.iterdir()]
    process.send_signal(signal.SIGINT)
    await_stop_notice(process)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=20)

    assert process.returncode == 130
    wait_for(lambda: not any(map(process_running, pids)), "the commands to be gone", timeout=10)
