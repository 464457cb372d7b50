"""chanflow: Go's production concurrency patterns for Python.

Channels with close and select, WaitGroup, contexts, errgroup-style groups,
semaphores, rate limiters and tickers, usable from threads and asyncio alike::

    import chanflow as cf

    ch = cf.Channel(10)
    cf.go(ch.send, "hello")
    print(ch.recv())
"""

from ._channel import Channel
from ._context import Context, background
from ._exceptions import Cancelled, ChanflowError, ChannelClosed, DeadlineExceeded, WouldBlock
from ._group import Group
from ._rate import RateLimiter
from ._select import Recv, Selected, Send, aselect, select
from ._sync import Semaphore, WaitGroup, go
from ._timer import Ticker, after

__version__ = "0.1.0"

__all__ = [
    "Cancelled",
    "ChanflowError",
    "Channel",
    "ChannelClosed",
    "Context",
    "DeadlineExceeded",
    "Group",
    "RateLimiter",
    "Recv",
    "Selected",
    "Semaphore",
    "Send",
    "Ticker",
    "WaitGroup",
    "WouldBlock",
    "after",
    "aselect",
    "background",
    "go",
    "select",
]
