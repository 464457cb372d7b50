"""chanflow: Go's production concurrency patterns for Python.

Channels with close and select, WaitGroup, contexts, errgroup-style groups,
semaphores, rate limiters and tickers, usable from threads and asyncio alike, and
a worker pool with backpressure, retries, timeouts, rate limits and dead letters::

    import chanflow as cf

    ch = cf.Channel(10)
    cf.go(ch.send, "hello")
    print(ch.recv())
"""

from ._backend import current_context, worker_state
from ._backend_dask import DaskBackend
from ._channel import Channel
from ._combine import merge, tee
from ._context import Context, background
from ._exceptions import (
    Cancelled,
    ChanflowError,
    ChannelClosed,
    DeadlineExceeded,
    JobTimeout,
    JournalError,
    RemoteError,
    WorkerCrashed,
    WouldBlock,
)
from ._executor import PoolExecutor
from ._fan_out import afan_out, fan_out
from ._group import Group
from ._journal import Journal
from ._pipeline import Pipeline
from ._pool import WorkerPool
from ._rate import RateLimiter
from ._report import PipelineReport, StageReport
from ._result import Result
from ._retry import Backoff
from ._select import Recv, Selected, Send, aselect, select
from ._stats import PoolStats
from ._sync import Semaphore, WaitGroup, go
from ._timer import Ticker, after

__version__ = "0.1.0"

__all__ = [
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
]
