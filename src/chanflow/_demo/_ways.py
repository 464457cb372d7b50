"""The same work done four ways, for the comparison.

The work: fetch the given images from the demo server with the demo's policy
(``retries`` more attempts after a 500 or a timeout of ``timeout`` s, jittered
backoff), make each a thumbnail, write it into ``<out>/thumbnails``, and write the
failures to ``<out>/dead_letters.jsonl``. The four ways:

* ``sequential``: one image after the other, an ``httpx.Client`` and Pillow in a
  loop, retries written by hand;
* ``fan-out``: one asyncio task per image (``cf.afan_out``), unbounded: every
  request at once, each image resized in a thread (``asyncio.to_thread``);
* ``worker pool``: a ``cf.WorkerPool`` of ``pool_workers`` threads, each doing a
  whole image, with the pool's retries, timeouts and rate limit;
* ``pipeline``: the demo's pipeline (:func:`~._flow.build_flow`), without the view.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx

import chanflow as cf

from ._flow import SAFETY_MARGIN, backoff, build_flow
from ._images import Download, Saver, resize
from ._plan import FETCH, RESIZE, Settings
from ._server import image_id_of

__all__ = ["WAYS", "fan_out", "pipeline", "sequential", "worker_pool"]


class _DeadLetters:
    """The hand-written approaches' dead letters: one JSON object a line, as chanflow's."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, url: str, stage: str, error: BaseException) -> None:
        kind = type(error)
        line = {
            "job": repr(url),
            "stage": stage,
            "error_type": f"{kind.__module__}.{kind.__qualname__}",
            "message": str(error),
        }
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(line) + "\n")


def _fetch(client: httpx.Client, url: str, settings: Settings) -> bytes:
    """GET ``url`` with the demo's retries and per-attempt timeout; raises the last error."""
    for attempt in range(1, settings.retries + 2):
        try:
            response = client.get(url, timeout=settings.timeout)
            return response.raise_for_status().content
        except httpx.HTTPError:
            if attempt > settings.retries:
                raise
            time.sleep(backoff(settings).delay(attempt))
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _afetch(client: httpx.AsyncClient, url: str, settings: Settings) -> bytes:
    """Async twin of :func:`_fetch`."""
    for attempt in range(1, settings.retries + 2):
        try:
            response = await client.get(url, timeout=settings.timeout)
            return response.raise_for_status().content
        except httpx.HTTPError:
            if attempt > settings.retries:
                raise
            await asyncio.sleep(backoff(settings).delay(attempt))
    raise AssertionError("unreachable: the last attempt returns or raises")


def sequential(urls: list[str], out: Path, settings: Settings) -> None:
    """One image after the other."""
    save, dead = Saver(out / "thumbnails"), _DeadLetters(out / "dead_letters.jsonl")
    with httpx.Client() as client:
        for url in urls:
            try:
                data = _fetch(client, url, settings)
            except httpx.HTTPError as error:
                dead.record(url, FETCH, error)
                continue
            try:
                save(resize(Download(image_id_of(url), data)))
            except OSError as error:
                dead.record(url, RESIZE, error)


def fan_out(urls: list[str], out: Path, settings: Settings) -> None:
    """One asyncio task per image, all at once."""
    asyncio.run(_fan_out(urls, out, settings))


async def _fan_out(urls: list[str], out: Path, settings: Settings) -> None:
    save, dead = Saver(out / "thumbnails"), _DeadLetters(out / "dead_letters.jsonl")
    limits = httpx.Limits(max_connections=None)  # unbounded, as the fan-out itself

    async with httpx.AsyncClient(limits=limits) as client:

        async def one(url: str) -> None:
            try:
                data = await _afetch(client, url, settings)
            except httpx.HTTPError as error:
                dead.record(url, FETCH, error)
                return
            try:
                await asyncio.to_thread(lambda: save(resize(Download(image_id_of(url), data))))
            except OSError as error:
                dead.record(url, RESIZE, error)

        await cf.afan_out(one, urls)


def worker_pool(urls: list[str], out: Path, settings: Settings) -> None:
    """A pool of threads, each fetching, resizing and saving whole images."""
    save = Saver(out / "thumbnails")
    with httpx.Client(timeout=settings.timeout + SAFETY_MARGIN) as client:

        def one(url: str) -> Path:
            response = client.get(url)
            data = response.raise_for_status().content
            return save(resize(Download(image_id_of(url), data)))

        with cf.WorkerPool(workers=settings.pool_workers) as pool:
            outcomes = pool.results(
                one,
                urls,
                retries=settings.retries,
                retry_on=(httpx.HTTPError, TimeoutError),
                backoff=backoff(settings),
                timeout=settings.timeout,
                rate=settings.rate,
                dead_letters=out / "dead_letters.jsonl",
            )
            for _ in outcomes:  # the thumbnails are written; the failures dead-lettered
                pass


def pipeline(urls: list[str], out: Path, settings: Settings) -> None:
    """The demo's pipeline."""
    build_flow(urls, out / "thumbnails", out / "dead_letters.jsonl", settings, progress=False).run()


WAYS: dict[str, Callable[[list[str], Path, Settings], None]] = {
    "sequential": sequential,
    "fan-out": fan_out,
    "worker pool": worker_pool,
    "pipeline": pipeline,
}
