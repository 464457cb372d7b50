"""The public namespace: exactly __all__, every name documented, hierarchy as drawn."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import chanflow as cf

EXPECTED = {
    "Backoff",
    "Cancelled",
    "ChanflowError",
    "Channel",
    "ChannelClosed",
    "Context",
    "DaskBackend",
    "DeadlineExceeded",
    "Group",
    "JobTimeout",
    "Journal",
    "JournalError",
    "Pipeline",
    "PipelineReport",
    "PoolExecutor",
    "PoolStats",
    "RateLimiter",
    "Recv",
    "RemoteError",
    "Result",
    "Selected",
    "Semaphore",
    "Send",
    "StageReport",
    "Ticker",
    "WaitGroup",
    "WorkerCrashed",
    "WorkerPool",
    "WouldBlock",
    "afan_out",
    "after",
    "aselect",
    "background",
    "current_context",
    "fan_out",
    "go",
    "merge",
    "select",
    "tee",
    "worker_state",
}


def test_public_names_are_exactly_all() -> None:
    assert set(cf.__all__) == EXPECTED
    assert len(cf.__all__) == len(set(cf.__all__))
    public = {name for name in vars(cf) if not name.startswith("_")}
    assert public == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_public_name_and_method_has_a_docstring(name: str) -> None:
    obj = getattr(cf, name)
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        assert obj.__module__ == "chanflow", "users meet exceptions as chanflow.X"
    else:
        assert obj.__module__.startswith("chanflow._"), obj.__module__
    assert inspect.getdoc(obj), f"{name} has no docstring"
    if inspect.isclass(obj) and not issubclass(obj, BaseException):
        for attr, member in vars(obj).items():
            if attr.startswith("_") and attr not in ("__iter__", "__aiter__", "__init__"):
                continue
            if callable(member) or isinstance(member, property):
                assert inspect.getdoc(member), f"{name}.{attr} has no docstring"


def test_exception_hierarchy() -> None:
    for error in (
        cf.ChannelClosed,
        cf.WouldBlock,
        cf.Cancelled,
        cf.DeadlineExceeded,
        cf.JobTimeout,
        cf.WorkerCrashed,
        cf.JournalError,
        cf.RemoteError,
    ):
        assert issubclass(error, cf.ChanflowError)
    assert issubclass(cf.ChanflowError, Exception)
    assert issubclass(cf.DeadlineExceeded, TimeoutError)
    assert not issubclass(cf.Cancelled, TimeoutError)
    assert issubclass(cf.JobTimeout, TimeoutError)
    assert cf.ChannelClosed().sent == 0


def test_importing_chanflow_starts_no_thread_and_needs_no_dependency() -> None:
    code = (
        "import sys, threading; import chanflow; "
        "assert threading.active_count() == 1, threading.enumerate(); "
        "print(sorted(m.split('.')[0] for m in sys.modules if m.startswith('chanflow')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert "chanflow" in out.stdout


_NO_DASK = """
import sys
import chanflow as cf

cf.WorkerPool(backend="thread").close()
try:  # a Dask pool imports Dask only once it runs a job
    cf.WorkerPool(backend=cf.DaskBackend("tcp://127.0.0.1:1")).close()
    cf.WorkerPool(backend="dask").close()
except ImportError:  # distributed is not installed: the extra's hint
    pass
imported = sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed"))
assert not imported, imported
"""


def test_importing_chanflow_never_imports_dask() -> None:
    done = subprocess.run([sys.executable, "-c", _NO_DASK], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_channel_is_generic_for_type_checkers() -> None:
    ch = cf.Channel[int](1)
    ch.send(1)
    assert ch.recv() == 1
