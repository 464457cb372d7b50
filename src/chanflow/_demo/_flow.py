"""The demo's pipeline: fetch (asyncio) -> resize (processes) -> save (threads).

Built with the public API only. The fetch stage makes one attempt per call and
leaves retries, per-attempt timeouts and the rate limit to its pool; failures of
any stage go to the dead letters, each record naming its stage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import httpx

import chanflow as cf

from ._images import Download, Saver, resize
from ._plan import FETCH, RESIZE, SAVE, Settings
from ._server import image_id_of

__all__ = ["SAFETY_MARGIN", "Fetch", "backoff", "build_flow", "read_dead_letters"]

# httpx's own timeout, past the stage's: a safety net that must not fire first.
SAFETY_MARGIN = 0.1
# A resize stage with a small budget: a fetched image weighs about 230 KB, and the
# default process-stage budget (1024 items a worker) would let hundreds pile up.
RESIZE_BUFFER = 16


class Fetch:
    """GET one image, one attempt: ``Download``, or an ``httpx.HTTPError``.

    ``timeout`` is httpx's own and only a safety net: the stage's per-attempt
    ``timeout=`` (shorter) cancels a hanging attempt first, as a ``cf.JobTimeout``.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def __call__(self, url: str) -> Download:
        response = await self._client().get(url)
        response.raise_for_status()
        return Download(image_id_of(url), response.content)

    def _client(self) -> httpx.AsyncClient:
        # One client per event loop, kept in the loop thread's worker state. It is never
        # closed, but holds no socket: the demo server closes every connection it answers.
        state = cf.worker_state()
        client = state.get("demo-httpx-client")
        if not isinstance(client, httpx.AsyncClient):
            client = state["demo-httpx-client"] = httpx.AsyncClient(timeout=self.timeout)
        return client

    def __repr__(self) -> str:
        return f"Fetch(timeout={self.timeout})"


def backoff(settings: Settings) -> cf.Backoff:
    """The wait before a retry: full jitter under ``settings.backoff``, doubling up to 4x."""
    return cf.Backoff(base=settings.backoff, cap=4 * settings.backoff)


def build_flow(
    urls: Iterable[str],
    thumbnails: Path,
    dead_letters: Path,
    settings: Settings,
    *,
    progress: bool,
) -> cf.Pipeline[Path]:
    """The demo's pipeline over ``urls``: thumbnails and dead letters where given."""
    return (
        cf.Pipeline(urls, on_error="dead_letter", dead_letters=dead_letters, progress=progress)
        .map(
            Fetch(timeout=settings.timeout + SAFETY_MARGIN),
            name=FETCH,
            backend="async",
            workers=settings.fetch_workers,
            rate=settings.rate,
            retries=settings.retries,
            backoff=backoff(settings),
            timeout=settings.timeout,
            buffer=2 * settings.fetch_workers,
        )
        .map(resize, name=RESIZE, backend="process", buffer=RESIZE_BUFFER)
        .map(Saver(thumbnails), name=SAVE, workers=settings.save_workers)
    )


_JOB_ID = re.compile(r"/(\d+)\.jpg|image (\d+)")


def read_dead_letters(path: Path) -> list[tuple[int, str]]:
    """(image id, stage) of each record in a dead-letters file; [] if there is no file."""
    if not path.exists():
        return []
    letters = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        match = _JOB_ID.search(record["job"])
        if match is None:
            raise ValueError(f"a dead letter of no demo image: {record['job']!r}")
        letters.append((int(match.group(1) or match.group(2)), str(record.get("stage"))))
    return letters
