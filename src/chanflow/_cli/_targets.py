"""What ``chanflow run`` runs per job: a Python callable, or a command.

A job function returns :class:`Rejected` for a line that cannot run and
:class:`NotStarted` once a stop has been asked for, instead of raising: the pool
would retry an exception, and neither is a failed attempt.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from .._exceptions import ChanflowError, JobTimeout
from ._jobs import Job, NotStarted, Rejected

__all__ = [
    "CommandFailed",
    "CommandRunner",
    "ImportedCallable",
    "TargetError",
    "async_call_runner",
    "call_runner",
    "load_callable",
]

STDERR_TAIL = 500  # characters of a failed command's stderr kept in its error


class TargetError(Exception):
    """The callable or command cannot be used: the message says why, in one line."""


class CommandFailed(ChanflowError):
    """A command exited with a non-zero status (or was killed by a signal)."""


def load_callable(spec: str) -> Callable[..., Any]:
    """The object named by ``module:attribute`` (dots allowed in both parts).

    The current directory is searched first, as ``python -m`` does. Raises
    TargetError with a one-line reason for a malformed spec, a module that cannot be
    imported, a missing attribute, or something that is not callable.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise TargetError(f"--call expects MODULE:FUNCTION, e.g. mypkg.jobs:resize (got {spec!r})")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = _import(module_name)
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise TargetError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise TargetError(f"{spec} is not callable (it is {type(target).__name__})")
    return target  # type: ignore[no-any-return]


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and module_name.startswith(error.name):
            raise TargetError(
                f"cannot import module {module_name!r}: no module named {error.name!r} "
                "(run from the directory that holds it, or set PYTHONPATH)"
            ) from None
        raise TargetError(f"importing module {module_name!r} failed: {error}") from None
    except Exception as error:  # the module itself raised while importing
        kind = type(error).__name__
        raise TargetError(f"importing module {module_name!r} failed: {kind}: {error}") from None


class ImportedCallable:
    """A ``module:attribute`` callable that travels by name and is imported on first use.

    What the process backend sends: a worker imports the module itself (from the
    parent's working directory), instead of unpickling the function by reference from
    a ``sys.path`` the worker may not have.
    """

    def __init__(self, spec: str, directory: str) -> None:
        self.spec = spec
        self.directory = directory
        self._target: Callable[..., Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._target is None:
            if self.directory not in sys.path:
                sys.path.insert(0, self.directory)
            self._target = load_callable(self.spec)
        return self._target(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "directory": self.directory, "_target": None}


def send_by_value_if_local(target: Callable[..., Any]) -> None:
    """Have cloudpickle send ``target``'s module by value unless it is an installed one.

    A worker on another machine can import installed packages, not a script that sits
    in the user's directory.
    """
    import cloudpickle

    module = sys.modules.get(getattr(target, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    if module is None or path is None:
        return
    installed = [p for p in sys.path if "site-packages" in p or "dist-packages" in p]
    if not any(os.path.abspath(path).startswith(os.path.abspath(p)) for p in installed):
        cloudpickle.register_pickle_by_value(module)


def is_async(target: Callable[..., Any]) -> bool:
    """True for a coroutine function (or an object whose ``__call__`` is one)."""
    call = getattr(target, "__call__", None)  # noqa: B004 (an async __call__ counts)
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(call)


def call_runner(target: Callable[..., Any], stop: threading.Event | None) -> Callable[[Job], Any]:
    """The job function calling ``target(*job.args, **job.kwargs)`` on threads or processes.

    ``stop`` is None on the process backend: an Event does not cross processes, and
    jobs already handed to a worker run to the end (within the grace period).
    """

    def run(job: Job) -> Any:
        if job.problem is not None:
            return Rejected(job.problem)
        if stop is not None and stop.is_set():
            return NotStarted()
        return target(*job.args, **job.kwargs)

    return run


def async_call_runner(
    target: Callable[..., Awaitable[Any]], stop: threading.Event
) -> Callable[[Job], Awaitable[Any]]:
    """The coroutine-function twin of :func:`call_runner`, for the async backend."""

    async def run(job: Job) -> Any:
        if job.problem is not None:
            return Rejected(job.problem)
        if stop.is_set():
            return NotStarted()
        return await target(*job.args, **job.kwargs)

    return run


_PLACEHOLDER = re.compile(r"\{(/\.|//|/|\.|#|)\}")


class CommandRunner:
    """Runs the command template once per job, in its own session; value = its stdout.

    Placeholders, as GNU parallel spells them: ``{}`` the line, ``{.}`` without its
    extension, ``{/}`` its base name, ``{//}`` its directory, ``{/.}`` the base name
    without extension, ``{#}`` the job's number (from 1). A template without any gets
    ``{}`` appended. Without ``shell`` each argument is substituted and the command
    runs directly; with it, the template is one shell line and values are quoted.

    Each command gets its own session, so that a Ctrl-C at the terminal reaches
    chanflow (which lets running commands finish) and not the commands themselves;
    :meth:`kill_all` ends them when a run is cancelled at once.
    """

    def __init__(
        self,
        template: list[str],
        *,
        shell: bool,
        timeout: float | None,
        stop: threading.Event | None,
    ) -> None:
        if not any(_PLACEHOLDER.search(part) for part in template):
            template = [*template, "{}"]
        self.template = template
        self.shell = shell
        self.timeout = timeout
        self.stop = stop
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise TargetError now if the program cannot be found (a fixed, direct one)."""
        program = self.template[0]
        if self.shell or _PLACEHOLDER.search(program):
            return
        if shutil.which(program) is None:
            raise TargetError(f"command not found: {program}")

    def command_for(self, job: Job) -> list[str] | str:
        value = job.text if not job.parsed or not isinstance(job.value, str) else job.value
        if self.shell:
            line = " ".join(self.template)
            return _PLACEHOLDER.sub(lambda m: shlex.quote(_expand(m[1], value, job)), line)
        return [
            _PLACEHOLDER.sub(lambda m: _expand(m[1], value, job), part) for part in self.template
        ]

    def __call__(self, job: Job) -> Any:
        if job.problem is not None:
            return Rejected(job.problem)
        if self.stop is not None and self.stop.is_set():
            return NotStarted()
        command = self.command_for(job)
        try:
            process = subprocess.Popen(
                command,
                shell=self.shell,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError:
            program = command if isinstance(command, str) else command[0]
            raise CommandFailed(f"command not found: {program}") from None
        except PermissionError:
            program = command if isinstance(command, str) else command[0]
            raise CommandFailed(f"cannot run {program}: permission denied") from None
        return self._wait(process)

    def _wait(self, process: subprocess.Popen[bytes]) -> str:
        with self._lock:
            self._running.add(process)
        try:
            out, err = process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.communicate()
            # The pool's own timer, which ends the attempt at the same moment on a
            # thread, says JobTimeout; whichever fires first, a run says the same.
            message = f"command still running after {self.timeout} s: killed"
            raise JobTimeout(message) from None
        finally:
            with self._lock:
                self._running.discard(process)
        if process.returncode != 0:
            raise CommandFailed(_failure_text(process.returncode, err))
        return out.decode("utf-8", "replace")

    def __getstate__(self) -> dict[str, Any]:
        """What a copy sent to another machine (a Dask worker) keeps: not the local state."""
        return {"template": self.template, "shell": self.shell, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["template"], shell=state["shell"], timeout=state["timeout"], stop=None)  # type: ignore[misc]

    def kill_all(self) -> None:
        """Kill every command still running (and what it started). Never blocks."""
        with self._lock:
            running = list(self._running)
        for process in running:
            _kill_group(process)


def _expand(kind: str, value: str, job: Job) -> str:
    if kind == "#":
        return str(job.index + 1)
    if kind == "/":
        return os.path.basename(value)
    if kind == "//":
        return os.path.dirname(value)
    if kind == ".":
        return os.path.splitext(value)[0]
    if kind == "/.":
        return os.path.splitext(os.path.basename(value))[0]
    return value


def _failure_text(code: int, stderr: bytes) -> str:
    if code < 0:
        try:
            reason = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            reason = f"killed by signal {-code}"
    else:
        reason = f"exit code {code}"
    tail = stderr.decode("utf-8", "replace").strip()[-STDERR_TAIL:]
    return f"{reason}: {tail}" if tail else reason


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
