"""chanflow: Go's production concurrency patterns for Python.

Channels with close and select, WaitGroup, contexts, errgroup-style groups,
semaphores, rate limiters and tickers, usable from threads and asyncio alike::

    import chanflow as cf

    ch = cf.Channel(10)
    cf.go(ch.send, "hello")
    print(ch.recv())
"""

from __future__ import annotations

from ._channel import Channel
from ._exceptions import Cancelled, ChanflowError, ChannelClosed, DeadlineExceeded, WouldBlock
from ._select import Recv, Selected, Send, aselect, select

__version__ = "0.1.0"

__all__ = [
    "Cancelled",
    "ChanflowError",
    "Channel",
    "ChannelClosed",
    "DeadlineExceeded",
    "Recv",
    "Selected",
    "Send",
    "WouldBlock",
    "aselect",
    "select",
]
