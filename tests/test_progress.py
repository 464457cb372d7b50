"""The pool's rich progress bar reporter."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress, TaskID

import chanflow._progress as progress_module
from chanflow._progress import ProgressReporter, status_text
from chanflow._stats import PoolStats


def make_stats(
    completed: int = 0,
    failed: int = 0,
    retried: int = 0,
    throughput: float = 0.0,
    submitted: int | None = None,
) -> PoolStats:
    done = completed + failed
    submitted = done if submitted is None else submitted
    return PoolStats(
        submitted=submitted,
        running=0,
        completed=completed,
        failed=failed,
        retried=retried,
        timed_out=0,
        in_flight=submitted - done,
        elapsed=1.0,
        throughput=throughput,
        latency_p50=None,
        latency_p90=None,
        latency_p99=None,
    )


def text_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=120), buffer


class CountingProgress(Progress):
    """A Progress that remembers every update the reporter makes."""

    def __init__(self) -> None:
        console, _ = text_console()
        super().__init__(console=console, auto_refresh=False)
        self.updates: list[dict[str, Any]] = []

    def update(self, task_id: TaskID, **fields: Any) -> None:
        self.updates.append(fields)
        super().update(task_id, **fields)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(progress_module, "_monotonic", fake)
    return fake


# -- creating -----------------------------------------------------------------------


@pytest.mark.parametrize("off", [False, None])
def test_off_means_no_reporter(off: object) -> None:
    assert ProgressReporter.create(off, 10) is None


@pytest.mark.parametrize("bad", ["yes", 1, 0, object(), Console()])
def test_anything_else_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match=r"progress must be True, False, None or a rich"):
        ProgressReporter.create(bad, 10)


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_bad_totals_are_value_errors(bad: object) -> None:
    with pytest.raises(ValueError, match="total"):
        ProgressReporter.create(CountingProgress(), bad)  # type: ignore[arg-type]


def test_bad_description_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="description"):
        ProgressReporter.create(CountingProgress(), 3, description=7)  # type: ignore[arg-type]


def test_importing_chanflow_does_not_import_rich() -> None:
    code = (
        "import sys, chanflow, chanflow._progress, chanflow._stats, chanflow._retry, "
        "chanflow._deadletters; assert 'rich' not in sys.modules, 'rich was imported'"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert completed.returncode == 0, completed.stderr


# -- rendering ----------------------------------------------------------------------


def test_a_given_progress_shows_the_counts() -> None:
    console, buffer = text_console()
    with Progress(console=console) as progress:
        reporter = ProgressReporter.create(progress, 10, description="fetch")
        assert reporter is not None
        reporter.update(make_stats(completed=6, failed=1, retried=2, throughput=35.0))
        reporter.close(make_stats(completed=8, failed=2, retried=3, throughput=40.0))
        assert progress.tasks[0].completed == 10
        assert progress.tasks[0].total == 10
    output = buffer.getvalue()
    assert "fetch 10/10 done · 2 failed · 3 retried · 40.0 jobs/s · ETA 0:00:00" in output
    assert "fetch 7/10 done · 1 failed · 2 retried · 35.0 jobs/s · ETA 0:00:00" in output
    assert progress.live.is_started is False  # its owner stopped it, not the reporter


def test_a_given_progress_is_not_started_or_stopped_by_the_reporter() -> None:
    progress = CountingProgress()
    reporter = ProgressReporter.create(progress, 4)
    assert reporter is not None
    assert not progress.live.is_started
    progress.start()
    reporter.close(make_stats(completed=4, throughput=2.0))
    assert progress.live.is_started
    progress.stop()
    assert len(progress.tasks) == 1  # the finished task stays, showing the final counts


def test_markup_in_the_description_shows_literally() -> None:
    console, buffer = text_console()
    with Progress(console=console) as progress:
        reporter = ProgressReporter.create(progress, None, description="jobs [bold]x[/bold]")
        assert reporter is not None
        reporter.close(make_stats(completed=3, throughput=1.5))
    assert "jobs [bold]x[/bold] 3 done · 0 failed · 0 retried · 1.5 jobs/s" in buffer.getvalue()


def test_unknown_total_shows_counts_and_rate_but_no_eta() -> None:
    console, buffer = text_console()
    with Progress(console=console) as progress:
        reporter = ProgressReporter.create(progress, None)
        assert reporter is not None
        reporter.close(make_stats(completed=41, failed=1, retried=5, throughput=12.25))
        assert progress.tasks[0].total is None
    output = buffer.getvalue()
    assert "jobs 42 done · 1 failed · 5 retried · 12.2 jobs/s" in output
    assert "ETA" not in output


def test_status_text_eta() -> None:
    assert status_text(make_stats(completed=50, throughput=10.0), 100).endswith("ETA 0:00:05")
    assert status_text(make_stats(completed=0, throughput=0.0), 100).endswith("ETA ?")
    assert status_text(make_stats(completed=100, throughput=9.0), 100).endswith("ETA 0:00:00")
    slow = status_text(make_stats(completed=1, throughput=1 / 60), 3601)
    assert slow.endswith("ETA 60:00:00")


def test_task_fields_are_there_for_custom_columns() -> None:
    progress = CountingProgress()
    reporter = ProgressReporter.create(progress, 9)
    assert reporter is not None
    reporter.close(make_stats(completed=5, failed=2, retried=4, throughput=3.0))
    fields = progress.tasks[0].fields
    assert (fields["failed"], fields["retried"], fields["rate"]) == (2, 4, 3.0)
    assert fields["status"].startswith("7/9 done")


def test_true_draws_on_stderr_and_stops_its_own_bar(capfd: pytest.CaptureFixture[str]) -> None:
    reporter = ProgressReporter.create(True, 5, description="crunch")
    assert reporter is not None
    own = reporter._progress
    assert own.console.stderr
    assert own.live.is_started
    reporter.update(make_stats(completed=2, throughput=4.0))
    reporter.close(make_stats(completed=4, failed=1, retried=1, throughput=5.0))
    assert not own.live.is_started
    out, err = capfd.readouterr()
    assert out == ""
    assert "crunch" in err
    assert "5/5 done · 1 failed · 1 retried · 5.0 jobs/s" in err


# -- throttling and closing ---------------------------------------------------------


def test_updates_are_throttled_to_ten_a_second(clock: FakeClock) -> None:
    progress = CountingProgress()
    reporter = ProgressReporter.create(progress, 100)
    assert reporter is not None
    drawn = []
    for step in range(30):  # an update every 0.03 s of fake time
        clock.now = 1000.0 + step * 0.03
        if reporter.due():
            drawn.append(step)
        reporter.update(make_stats(completed=step))
    # A redraw, then nothing until 0.1 s later: the 4th step after it (0.12 s).
    assert drawn == [0, 4, 8, 12, 16, 20, 24, 28]
    assert [update["completed"] for update in progress.updates] == drawn


def test_close_draws_the_final_state_even_when_throttled(clock: FakeClock) -> None:
    progress = CountingProgress()
    reporter = ProgressReporter.create(progress, 10)
    assert reporter is not None
    reporter.update(make_stats(completed=1))
    reporter.close(make_stats(completed=10))
    assert [update["completed"] for update in progress.updates] == [1, 10]


def test_close_is_idempotent_and_later_updates_do_nothing(clock: FakeClock) -> None:
    progress = CountingProgress()
    reporter = ProgressReporter.create(progress, 10)
    assert reporter is not None
    reporter.close(make_stats(completed=3))
    clock.now += 5
    reporter.close(make_stats(completed=4))
    reporter.update(make_stats(completed=5))
    assert [update["completed"] for update in progress.updates] == [3]
    assert "closed" in repr(reporter)


def test_closing_own_bar_twice_stops_it_once(capfd: pytest.CaptureFixture[str]) -> None:
    reporter = ProgressReporter.create(True, None)
    assert reporter is not None
    reporter.close(make_stats(completed=1))
    reporter.close(make_stats(completed=2))
    _, err = capfd.readouterr()
    assert err.count("1 done") == 1
    assert "2 done" not in err


def test_concurrent_updates_never_overwrite_the_final_state() -> None:
    for _ in range(5):
        progress = CountingProgress()
        reporter = ProgressReporter.create(progress, 1000)
        assert reporter is not None
        start = threading.Barrier(9)

        def hammer(reporter: ProgressReporter = reporter) -> None:
            start.wait()
            for n in range(300):
                reporter.update(make_stats(completed=n))

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for thread in threads:
            thread.start()
        start.wait()
        reporter.close(make_stats(completed=1000))
        for thread in threads:
            thread.join()
        assert progress.updates[-1]["completed"] == 1000
        assert progress.tasks[0].completed == 1000
