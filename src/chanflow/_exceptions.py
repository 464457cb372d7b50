"""chanflow's exceptions.

The hierarchy::

    Exception
     └── ChanflowError            anything chanflow raises on purpose
          ├── ChannelClosed       send on a closed channel, recv on a closed and drained one
          ├── WouldBlock          a *_nowait call that would have had to wait
          ├── Cancelled           the error of a cancelled Context
          ├── DeadlineExceeded    the error of a Context whose deadline passed
          │                       (also a built-in TimeoutError)
          ├── JobTimeout          a pool job's attempt ran past its timeout
          │                       (also a built-in TimeoutError)
          ├── WorkerCrashed       a worker process died while running the job
          ├── JournalError        a journal cannot be used (the message names the
          │                       file): in use, corrupted, another run's, full disk
          └── RemoteError         a job's exception that could not travel back from
                                  its worker process (its type name, message and
                                  traceback text are kept)

Blocking calls that run out of time raise the built-in ``TimeoutError`` (on every
Python version, including 3.10 where asyncio has its own), so one ``except
TimeoutError`` catches a timed-out ``recv``, a timed-out ``select`` and an expired
context alike.
"""

from __future__ import annotations

__all__ = [
    "Cancelled",
    "ChanflowError",
    "ChannelClosed",
    "DeadlineExceeded",
    "JobTimeout",
    "JournalError",
    "RemoteError",
    "WorkerCrashed",
    "WouldBlock",
]


class ChanflowError(Exception):
    """Base class of every exception chanflow raises on purpose."""


class ChannelClosed(ChanflowError):
    """The channel is closed: nothing more can be sent, and nothing is left to receive.

    ``sent`` is how many items of a ``send_many`` call went in before the channel
    closed (0 for every other operation).
    """

    def __init__(self, message: str = "channel is closed", *, sent: int = 0) -> None:
        super().__init__(message)
        self.sent = sent


class WouldBlock(ChanflowError):
    """Raised by a ``*_nowait`` operation that could not complete without waiting."""


class Cancelled(ChanflowError):
    """The error of a :class:`~chanflow.Context` that was cancelled."""


class DeadlineExceeded(ChanflowError, TimeoutError):
    """The error of a :class:`~chanflow.Context` whose deadline passed.

    It is also a ``TimeoutError``, so code that handles timeouts handles it too.
    """


class JobTimeout(ChanflowError, TimeoutError):
    """A worker pool job's attempt ran longer than the pool's ``timeout``.

    An async job is cancelled; a thread job cannot be killed, so the pool stops
    waiting for it and replaces its worker (the thread finishes in the background
    and its late result is discarded).
    """


class WorkerCrashed(ChanflowError):
    """The worker process running the job died (a segfault, ``os._exit``, a kill, OOM).

    The message names the process id and its exit code or signal. The pool replaced
    the worker; only the job that was running when it died carries this error.
    """


class JournalError(ChanflowError):
    """A run's journal cannot be used as asked; the message names the file and says why.

    Raised before anything runs when the journal holds finished jobs and ``resume``
    is not set, was written for another function or input, is open elsewhere, is not
    a chanflow journal (or is corrupted, or of another schema), or cannot be written;
    and while a run goes on, when a commit fails (a full disk): then the jobs
    committed before are kept, and a resume runs the rest.
    """


class RemoteError(ChanflowError):
    """A job raised an exception in a worker process that could not be sent back.

    ``type_name`` is the original exception's class name; the Result's ``traceback``
    holds the worker's traceback text.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name


# Users meet these as chanflow.X (in tracebacks, reprs and dead-letter records), and
# pickles name them so too; chanflow re-exports every one of them.
for _exception in (
    ChanflowError,
    ChannelClosed,
    WouldBlock,
    Cancelled,
    DeadlineExceeded,
    JobTimeout,
    WorkerCrashed,
    JournalError,
    RemoteError,
):
    _exception.__module__ = "chanflow"
