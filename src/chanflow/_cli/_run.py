"""``chanflow run``: every input line through a WorkerPool, durable and interruptible.

Exit codes: 0 every job succeeded, 1 some failed (or the output or journal could not
be written), 2 bad usage or unreadable input, 130 interrupted (SIGINT or SIGTERM).

``--journal`` is the library's :class:`chanflow.Journal`; this module only opens it
for a command line and turns its errors into one-line messages.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import urlsplit

import click
from rich.console import Console

from .._backend_dask import DaskBackend
from .._exceptions import JournalError
from .._journal import Journal
from .._pool import WorkerPool
from .._rate import RateLimiter
from .._result import Result
from ._jobs import Job, MalformedLine, NotStarted, Rejected, open_inputs, read_jobs
from ._records import OutputFailed, Recorder, dead_letter_line, output_line
from ._stop import HardStop, StopSwitch
from ._targets import (
    CommandRunner,
    ImportedCallable,
    TargetError,
    async_call_runner,
    call_runner,
    is_async,
    load_callable,
    send_by_value_if_local,
)

__all__ = ["run"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
FAILURES_SHOWN = 3  # failed jobs named in the summary


_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def say(text: str, style: str | None = None) -> None:
    """One line on stderr (styled on a terminal, plain elsewhere; never wrapped)."""
    _stderr.print(text, style=style, markup=False)


class UsageProblem(click.ClickException):
    """Bad usage or unreadable input: one line on stderr, exit 2."""

    exit_code = EXIT_USAGE

    def show(self, file: IO[Any] | None = None) -> None:
        say(f"chanflow: error: {self.format_message()}", "red")


class InputChanged(Exception):
    """The input differs from the one the journal was written for."""


class InputFailed(Exception):
    """Reading the input failed part-way (the message has the OSError's)."""


@dataclass
class RunSettings:
    """The options of one ``chanflow run``, as given."""

    inputs: tuple[str, ...]
    call: str | None
    command: list[str]
    shell: bool
    jsonl: bool
    workers: int | None
    backend: str | None
    scheduler: str | None
    rate: str | None
    retries: int
    timeout: float | None
    keep_order: bool
    output: Path | None
    dead_letters: Path | None
    journal: Path | None
    resume: bool
    fail_fast: bool
    grace: float
    progress: bool | None
    argv: list[str] = field(default_factory=list)

    @property
    def identity(self) -> str:
        """What the run does (the command and how lines are read), as its journal names it."""
        what = f"--call {self.call}" if self.call else shlex.join(["--", *self.command])
        how = (" --shell" if self.shell else "") + (" --jsonl" if self.jsonl else "")
        return f"chanflow run {what}{how}"


@dataclass
class Tally:
    """What happened to the jobs of this run (journal replays excepted)."""

    succeeded: int = 0
    failed: int = 0
    not_started: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add_failure(self, job: Job, error: BaseException) -> None:
        self.failed += 1
        self.errors[type(error).__name__] += 1
        if len(self.examples) < FAILURES_SHOWN:
            self.examples.append(f"job {job.index} ({job.where}): {type(error).__name__}: {error}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, metavar="[INPUT]...")
@click.option(
    "--call", "call", metavar="MODULE:FUNCTION", help="Call this Python function per job."
)
@click.option("--shell", is_flag=True, help="Run the command through /bin/sh (quoting values).")
@click.option(
    "--jsonl", is_flag=True, help="Each line is JSON; an object becomes keyword arguments."
)
@click.option(
    "-j",
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="Jobs at once [default: per backend; commands: CPU count].",
)
@click.option(
    "--backend",
    type=click.Choice(["thread", "process", "async", "dask"]),
    help="Where jobs run [default: async for async functions, else thread].",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="The Dask scheduler for --backend dask, e.g. tcp://host:8786 [default: a local cluster].",
)
@click.option("--rate", metavar="N/UNIT", help="At most this many job starts, e.g. 50/s, 600/min.")
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    metavar="N",
    default=0,
    show_default=True,
    help="Retries per failed job (exponential backoff with jitter).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Per attempt; a command is killed.",
)
@click.option(
    "--keep-order", is_flag=True, help="Write results in input order (default: as they finish)."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON Lines results file [default: stdout].",
)
@click.option(
    "--dead-letters",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON Lines file for failed jobs, with tracebacks.",
)
@click.option(
    "--journal",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file recording finished jobs, for --resume.",
)
@click.option("--resume", is_flag=True, help="Skip the jobs the journal has finished.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed job.")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="After SIGINT/SIGTERM, how long running jobs may finish.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Live progress on stderr [default: when stderr is a terminal].",
)
@click.pass_context
def run(ctx: click.Context, /, **options: Any) -> None:
    """Run a Python function or a command once per input line.

    \b
    chanflow run --call mypkg.mod:func [INPUT]...
    chanflow run [OPTIONS] [INPUT]... -- COMMAND [ARG]...

    Jobs are the non-empty lines of the INPUT files, or of stdin. A command's
    arguments may hold {} (the line), {.} (without extension), {/} (base name),
    {//} (directory), {/.} (base name without extension) and {#} (job number); without
    any, the line is appended. Results go out as JSON Lines: index, job, ok, value or
    error, attempts, elapsed.

    Exit status: 0 all jobs succeeded, 1 some failed, 2 bad usage or input,
    130 interrupted (the first SIGINT/SIGTERM lets running jobs finish).
    """
    command = list((ctx.obj or {}).get("command", []))
    settings = RunSettings(command=command, argv=list((ctx.obj or {}).get("argv", [])), **options)
    check_usage(settings)
    ctx.exit(execute(settings))


def check_usage(settings: RunSettings) -> None:
    """Raise UsageProblem for contradictory or missing options."""
    if settings.call and settings.command:
        raise UsageProblem("give --call or a command after --, not both")
    if not settings.call and not settings.command:
        raise UsageProblem(
            "nothing to run: give --call MODULE:FUNCTION, or a command after -- "
            "(chanflow run --help shows both)"
        )
    if settings.command and settings.backend not in (None, "thread", "dask"):
        raise UsageProblem("commands run on threads (or on Dask workers with --backend dask)")
    if settings.scheduler is not None and settings.backend != "dask":
        raise UsageProblem("--scheduler applies to --backend dask")
    if settings.shell and not settings.command:
        raise UsageProblem("--shell applies to a command given after --")
    if settings.resume and settings.journal is None:
        raise UsageProblem("--resume needs the --journal of the run to resume")
    if settings.rate is not None:
        try:
            RateLimiter(settings.rate)
        except (ValueError, TypeError) as error:
            raise UsageProblem(f"--rate {settings.rate}: {error}") from None


def execute(settings: RunSettings) -> int:
    """Run the jobs; the exit code."""
    kill = Killer()
    switch = StopSwitch(settings.grace, on_hard=kill, notify=say)
    job_function, backend, kill.action = make_job_function(settings, switch.requested)
    journal, finished = open_journal(settings.journal, settings.identity, resume=settings.resume)
    try:
        return execute_with(settings, switch, job_function, backend, journal, finished)
    finally:
        if journal is not None:
            journal.close()


def execute_with(
    settings: RunSettings,
    switch: StopSwitch,
    job_function: Callable[[Job], Any],
    backend: str | DaskBackend,
    journal: Journal | None,
    finished: dict[int, int],
) -> int:
    """Run the jobs with the journal open (``finished``: what it held); the exit code."""
    jobs = open_jobs(settings, finished)
    recorder = open_recorder(settings, journal, finished)
    tally = Tally()
    started = time.monotonic()

    def stop_at_once() -> NoReturn:
        recorder.finish()
        report_interrupted(settings, switch, tally, journal, at_once=True)
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)  # running thread jobs cannot be waited for

    with switch.installed():
        try:
            consume(settings, job_function, backend, _until(switch, jobs), recorder, tally, switch,
                    stop_at_once)  # fmt: skip
        except HardStop:  # while the pool was closing
            stop_at_once()
        except OutputFailed as error:
            return stop_for_output(error)
        except JournalError as error:
            return stop_for_journal(settings, recorder, error)
        except InputFailed as error:
            raise UsageProblem(f"reading input: {error}") from None
        except OSError as error:  # the backend's (a Dask scheduler gone, say)
            raise UsageProblem(str(error)) from None
    recorder.finish()
    if switch.requested.is_set():
        report_interrupted(settings, switch, tally, journal, at_once=False)
        return EXIT_INTERRUPTED
    report_summary(settings, tally, recorder, time.monotonic() - started)
    return EXIT_FAILED if tally.failed else EXIT_OK


class Killer:
    """What a hard stop kills: set once the job function is known."""

    def __init__(self) -> None:
        self.action: Callable[[], None] = _nothing

    def __call__(self) -> None:
        self.action()


def stop_for_output(error: OutputFailed) -> int:
    """The output cannot be written (a closed pipe, a full disk): stop, say so, exit 1."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # so that the final flush cannot fail again
    say(f"chanflow: stopped: cannot write the output: {error}", "red")
    return EXIT_FAILED


def stop_for_journal(settings: RunSettings, recorder: Recorder, error: JournalError) -> int:
    """A commit failed (a full disk): stop, say so, exit 1; what was committed stays."""
    with contextlib.suppress(OutputFailed, JournalError):
        recorder.finish()  # the jobs replayed from the journal, as far as it can be read
    say(f"chanflow: stopped: {error}", "red")
    say(f"chanflow: resume with: {resume_command(settings.argv)}", "bold")
    return EXIT_FAILED


def consume(
    settings: RunSettings,
    job_function: Callable[[Job], Any],
    backend: str | DaskBackend,
    jobs: Iterator[Job],
    recorder: Recorder,
    tally: Tally,
    switch: StopSwitch,
    stop_at_once: Callable[[], NoReturn],
) -> None:
    """Drive the pool over ``jobs``, recording each finished job as it comes out.

    A hard stop ends the process from inside the pool's block: closing the pool would
    wait for running jobs, which is what a hard stop refuses to do.
    """
    with WorkerPool(
        workers=settings.workers,
        backend=backend,
        retries=settings.retries,
        timeout=settings.timeout,
        rate=settings.rate,
        progress=_show_progress(settings.progress),
    ) as pool:
        results = pool.results(job_function, jobs, ordered=settings.keep_order)
        try:
            for result in results:
                with switch.critical():
                    finished = record_result(result, recorder, tally)
                if settings.fail_fast and finished and not result.ok:
                    break  # leaving the pool cancels the jobs not yet finished
        except HardStop:
            stop_at_once()


def record_result(result: Result[Any], recorder: Recorder, tally: Tally) -> bool:
    """Journal and write one result; False for a job that never started."""
    job: Job = result.job
    if isinstance(result.value, NotStarted):
        tally.not_started += 1
        return False
    if isinstance(result.value, Rejected):
        error = MalformedLine(result.value.problem)
        result = Result(job, result.index, error=error, attempts=0, elapsed=0.0, traceback="")
    dead = None
    if result.error is None:
        tally.succeeded += 1
    else:
        tally.add_failure(job, result.error)
        dead = dead_letter_line(result, job)
    recorder.record(job, result, line=output_line(result, job), dead=dead)
    return True


def make_job_function(
    settings: RunSettings, stop: threading.Event
) -> tuple[Callable[[Job], Any], str | DaskBackend, Callable[[], None]]:
    """The job function, the backend it runs on, and what kills its work at once."""
    if settings.command:
        runner = CommandRunner(
            settings.command, shell=settings.shell, timeout=settings.timeout, stop=stop
        )
        if settings.backend == "dask":  # the program is looked for on the workers' machines
            return runner, dask_backend(settings), _nothing
        try:
            runner.check()
        except TargetError as error:
            raise UsageProblem(str(error)) from None
        if settings.workers is None:
            settings.workers = os.cpu_count() or 1
        return runner, "thread", runner.kill_all
    assert settings.call is not None
    try:
        target = load_callable(settings.call)
    except TargetError as error:
        raise UsageProblem(str(error)) from None
    return _call_function(settings, target, stop)


def _call_function(
    settings: RunSettings, target: Callable[..., Any], stop: threading.Event
) -> tuple[Callable[[Job], Any], str | DaskBackend, Callable[[], None]]:
    assert settings.call is not None
    backend = settings.backend or ("async" if is_async(target) else "thread")
    if is_async(target) != (backend == "async"):
        needs = "an async def function" if backend == "async" else "a plain (not async) function"
        raise UsageProblem(f"--backend {backend} needs {needs}; {settings.call} is not one")
    if backend == "async":
        return async_call_runner(target, stop), backend, _nothing
    if backend == "process":
        return call_runner(ImportedCallable(settings.call, os.getcwd()), None), backend, _nothing
    if backend == "dask":
        # A function from a module outside the installed packages (a script beside the
        # input, say) travels by value, since the workers cannot import it.
        send_by_value_if_local(target)
        return call_runner(target, None), dask_backend(settings), _nothing
    return call_runner(target, stop), backend, _nothing


def dask_backend(settings: RunSettings) -> DaskBackend:
    """The backend for ``--scheduler`` (None: the current client, else a local cluster)."""
    try:
        backend = DaskBackend(settings.scheduler)
    except (ImportError, ValueError) as error:
        raise UsageProblem(str(error)) from None
    if settings.scheduler is not None:
        check_reachable(settings.scheduler)
    return backend


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail now, in one line, if nothing listens at a ``tcp://host:port`` scheduler.

    (Dask itself would try for 30 s, then fail deep inside the run.)
    """
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme != "tcp" or parts.hostname is None or parts.port is None:
        return
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=timeout).close()
    except OSError as error:
        raise UsageProblem(
            f"cannot reach the Dask scheduler at {address}: {error.strerror or error}"
        ) from None


def _nothing() -> None:
    return None


def open_journal(
    path: Path | None, identity: str, *, resume: bool
) -> tuple[Journal | None, dict[int, int]]:
    """The run's journal (None without ``--journal``) and the jobs it finished earlier.

    Raises UsageProblem, naming the file, for a journal this run cannot use: one that
    holds finished jobs without ``--resume``, or another run's, or is in use by
    another program, is not a chanflow journal (or an older chanflow's), or cannot
    be written. Resuming a journal that does not exist yet simply starts it.
    """
    if path is None:
        return None, {}
    try:
        journal = Journal(path)
    except JournalError as error:
        raise UsageProblem(str(error)) from None
    try:
        finished = journal.begin(
            identity,
            resume=resume,
            resume_hint="add --resume to continue that run",
            other_hint="use another --journal file",
        )
    except JournalError as error:
        journal.close()
        raise UsageProblem(str(error)) from None
    return journal, finished


def open_jobs(settings: RunSettings, finished: dict[int, int]) -> Iterator[Job]:
    """The jobs still to run; with a journal, checked against it before any runs."""
    try:
        inputs = open_inputs(settings.inputs)
    except OSError as error:
        name = error.filename or "input"
        raise UsageProblem(f"cannot read {name}: {error.strerror or error}") from None
    if not settings.inputs and sys.stdin.isatty():
        say("chanflow: reading jobs from the terminal (end with Ctrl-D)")
    jobs = read_jobs(inputs, jsonl=settings.jsonl)
    if not finished:
        return jobs
    try:
        return skip_finished(jobs, finished)
    except InputChanged as error:
        raise UsageProblem(str(error)) from None


def skip_finished(jobs: Iterator[Job], finished: dict[int, int]) -> Iterator[Job]:
    """``jobs`` without those ``finished`` (index -> digest) holds; raises InputChanged.

    Reads the input up to the last finished job now, so that a changed input is
    refused before any job runs; keeps only the unfinished jobs of that stretch.
    """
    last = max(finished)
    waiting: list[Job] = []
    seen = 0
    for job in jobs:
        seen += 1
        digest = finished.get(job.index)
        if digest is None:
            waiting.append(job)
        elif digest != job.digest:
            raise InputChanged(
                f"the input changed since the journal was written ({job.where} is not the "
                f"job {job.index} it finished): restore the input or use a new --journal"
            )
        if job.index == last:
            return itertools.chain(waiting, jobs)
    raise InputChanged(
        f"the input changed since the journal was written: it has {seen:,} jobs, the "
        f"journal finished job {last}: restore the input or use a new --journal"
    )


def _until(switch: StopSwitch, jobs: Iterator[Job]) -> Iterator[Job]:
    try:
        for job in jobs:
            if switch.requested.is_set():
                return  # and jobs taken but not started return NotStarted
            yield job
    except OSError as error:
        raise InputFailed(error.strerror or str(error)) from error


def open_recorder(
    settings: RunSettings, journal: Journal | None, finished: dict[int, int]
) -> Recorder:
    """Open the output and dead-letter files (truncating them) once the run is checked.

    Without ``--keep-order``, the jobs the journal finished are written out now.
    """
    try:
        return Recorder(
            settings.output, settings.dead_letters, journal, finished, ordered=settings.keep_order
        )
    except OSError as error:
        raise UsageProblem(f"cannot write {error.filename}: {error.strerror or error}") from None
    except JournalError as error:
        raise UsageProblem(str(error)) from None


def _show_progress(setting: bool | None) -> bool:
    return sys.stderr.isatty() if setting is None else setting


def report_summary(settings: RunSettings, tally: Tally, recorder: Recorder, elapsed: float) -> None:
    total = tally.succeeded + tally.failed
    earlier = f" (+{recorder.replayed:,} finished earlier)" if recorder.replayed else ""
    if not tally.failed:
        say(f"chanflow: {total:,} jobs succeeded in {elapsed:.2f} s{earlier}", "green")
        return
    kinds = ", ".join(f"{name} x{count}" for name, count in tally.errors.most_common())
    stopped = " (stopped at the first, --fail-fast)" if settings.fail_fast else ""
    say(f"chanflow: {tally.failed:,} of {total:,} jobs failed{stopped}: {kinds}{earlier}", "red")
    for example in tally.examples:
        say(f"  {example}")
    if settings.dead_letters is not None:
        say(f"  dead letters: {settings.dead_letters}")


def report_interrupted(
    settings: RunSettings,
    switch: StopSwitch,
    tally: Tally,
    journal: Journal | None,
    *,
    at_once: bool,
) -> None:
    how = "stopped at once" if at_once else "stopped"
    why = "grace period over" if switch.expired else switch.signal_name
    done = tally.succeeded + tally.failed
    say(f"chanflow: {how} ({why}): {done:,} jobs finished this run", "yellow")
    if journal is None:
        say("chanflow: run with --journal FILE to be able to resume")
        return
    say(f"chanflow: resume with: {resume_command(settings.argv)}", "bold")


def resume_command(argv: list[str]) -> str:
    """The command line that resumes this run: the same one, with --resume."""
    if "--resume" not in argv:
        cut = argv.index("--") if "--" in argv else len(argv)
        argv = [*argv[:cut], "--resume", *argv[cut:]]
    return shlex.join(["chanflow", "run", *argv])
