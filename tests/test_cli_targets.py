"""What ``chanflow run`` calls per job: loading callables, and command templates."""

from __future__ import annotations

import io
import os
import pickle
import re
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import chanflow as cf
from chanflow._cli._jobs import Job, NotStarted, Rejected, read_jobs
from chanflow._cli._targets import (
    CommandFailed,
    CommandRunner,
    ImportedCallable,
    TargetError,
    call_runner,
    load_callable,
)


def job(text: str, index: int = 0) -> Job:
    return Job(index, text, "<stdin>", index + 1, args=(text,))


def runner(*template: str, shell: bool = False, timeout: float | None = None) -> CommandRunner:
    return CommandRunner(list(template), shell=shell, timeout=timeout, stop=threading.Event())


def test_load_callable_finds_nested_attributes() -> None:
    assert load_callable("os.path:join") is os.path.join
    assert load_callable("pathlib:Path.cwd") == Path.cwd


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("os.path", "expects MODULE:FUNCTION"),
        (":join", "expects MODULE:FUNCTION"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("os:no_such_name", "module 'os' has no attribute 'no_such_name'"),
        ("os:sep", "os:sep is not callable (it is str)"),
    ],
)
def test_load_callable_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(TargetError, match=re.escape(message)):
        load_callable(spec)


def test_imported_callable_travels_by_name() -> None:
    target = ImportedCallable("os.path:basename", os.getcwd())
    assert target("a/b") == "b"
    copy = pickle.loads(pickle.dumps(target))
    assert copy._target is None, "the function itself does not travel"
    assert copy("c/d") == "d"


def test_call_runner_rejects_malformed_lines_and_stops_before_starting() -> None:
    stop = threading.Event()
    run = call_runner(str.upper, stop)
    malformed = Job(0, "{", "<stdin>", 1, problem="malformed JSON")

    assert run(job("a")) == "A"
    assert isinstance(run(malformed), Rejected)
    stop.set()
    assert isinstance(run(job("a")), NotStarted)


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1))
def test_command_placeholders_pass_any_line_as_one_argument(text: str) -> None:
    command = runner("tool", "{}", "x{#}x").command_for(job(text, index=4))
    assert command == ["tool", text, "x5x"]


def test_command_path_placeholders() -> None:
    command = runner("t", "{.}", "{/}", "{//}", "{/.}").command_for(job("dir/sub/name.tar.gz"))
    assert command == ["t", "dir/sub/name.tar", "name.tar.gz", "dir/sub", "name.tar"]


def test_a_template_without_placeholders_gets_the_line_appended() -> None:
    assert runner("echo", "-n").command_for(job("a b")) == ["echo", "-n", "a b"]


def test_shell_templates_quote_each_value() -> None:
    assert runner("cat {} | wc", shell=True).command_for(job("it's")) == "cat 'it'\"'\"'s' | wc"


def test_jsonl_strings_are_substituted_without_their_quotes() -> None:
    (parsed,) = read_jobs([("<stdin>", io.StringIO('"a b"\n'))], jsonl=True)
    (number,) = read_jobs([("<stdin>", io.StringIO("[1, 2]\n"))], jsonl=True)
    assert runner("t").command_for(parsed) == ["t", "a b"]
    assert runner("t").command_for(number) == ["t", "[1, 2]"]


def test_a_command_that_is_not_found() -> None:
    with pytest.raises(TargetError, match="command not found: no-such-tool-xyz"):
        runner("no-such-tool-xyz").check()
    runner("no-such-tool-xyz", shell=True).check()  # the shell decides; a per-job failure
    runner("{}").check()  # the program comes from each line
    with pytest.raises(CommandFailed, match=re.escape("command not found: ./x")):
        runner("{}")(job("./x"))


def test_a_command_failure_carries_its_status_and_stderr_tail() -> None:
    with pytest.raises(CommandFailed, match=r"^exit code 4: " + "y" * 500 + "$"):
        runner("sh", "-c", "printf x%.0s $(seq 100) >&2; printf y%.0s $(seq 600) >&2; exit 4")(
            job("-")
        )
    with pytest.raises(CommandFailed, match=r"^killed by SIGKILL$"):
        runner("sh", "-c", "kill -9 $$")(job("-"))


def test_a_command_past_its_timeout_is_killed() -> None:
    # JobTimeout, as the pool's timer says when it fires first: a run's records
    # name one error type for a timeout, whichever timer won.
    with pytest.raises(cf.JobTimeout, match=re.escape("still running after 0.2 s: killed")):
        runner("sleep", "{}", timeout=0.2)(job("30"))


def test_kill_all_ends_running_commands() -> None:
    slow = runner("sleep", "{}")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            slow(job("60"))
        except CommandFailed as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    while not slow._running:
        thread.join(0.01)
    slow.kill_all()
    thread.join(10)
    assert not thread.is_alive()
    assert [str(error) for error in errors] == ["killed by SIGKILL"]
