"""The demo's image server: a real HTTP server on 127.0.0.1 that follows the plan.

``GET /<run>/<id>.jpg`` answers image ``id`` as :func:`~._plan.kind_of` says: at
once, slowly, with a 500 (always, or only on the run's first request for it), with a
truncated JPEG, or never. ``<run>`` names one run of the work (the pipeline, each
approach compared), so each run meets the flaky images' first failure.

Every response closes its connection (HTTP/1.0), so a handler thread lives for one
request, and closing the server joins them all: a hanging request is released then.
"""

from __future__ import annotations

import re
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import chanflow as cf

from ._images import generate
from ._plan import Kind, kind_of, slow_delay

__all__ = ["ImageServer", "image_id_of"]

# Starting worker processes (about 0.3 s) pays off for this many images (6 ms each).
_PROCESSES_FROM = 100
_PATH = re.compile(r"/([\w-]+)/(\d+)\.jpg")


def image_id_of(url: str) -> int:
    """The image id in one of the server's URLs."""
    match = _PATH.search(url)
    if match is None:
        raise ValueError(f"not an image URL of the demo server: {url!r}")
    return int(match.group(2))


class ImageServer:
    """Serves images ``0 .. images - 1`` on an ephemeral port of 127.0.0.1.

    Use it as a context manager (or ``start()`` then ``close()``). ``requests``
    counts the requests received per kind (read it for a snapshot). ``close()``
    releases hanging requests, stops the server and joins every thread it started.
    """

    def __init__(self, images: int) -> None:
        self.images = images
        self.requests: Counter[Kind] = Counter()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._cache: dict[int, bytes] = {}
        self._failed_once: set[tuple[str, int]] = set()
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="chanflow-demo-server",
            daemon=True,
        )

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, run: str, image_id: int) -> str:
        """The URL of image ``image_id`` for the run called ``run``."""
        return f"{self.base_url}/{run}/{image_id}.jpg"

    def urls(self, run: str, count: int) -> list[str]:
        """The URLs of the first ``count`` images for the run called ``run``."""
        return [self.url(run, image_id) for image_id in range(count)]

    def prepare(self) -> None:
        """Generate every image now, on worker processes, so that no request waits for one.

        Without it, each image is generated on its first request (about 6 ms).
        """
        ids = range(self.images)
        if self.images < _PROCESSES_FROM:
            images = {image_id: generate(image_id) for image_id in ids}
        else:
            with cf.WorkerPool(backend="process") as pool:
                images = dict(zip(ids, pool.map(generate, ids), strict=True))
        with self._lock:
            self._cache.update(images)

    def start(self) -> ImageServer:
        """Start serving (in a thread named ``chanflow-demo-server``)."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Release hanging requests, stop serving, join every handler; idempotent."""
        self._stopping.set()
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()  # joins the handler threads

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def answer(self, run: str, image_id: int) -> tuple[int, bytes] | None:
        """The status and body for one request, after its planned delay; None: no answer."""
        if not 0 <= image_id < self.images:
            return 404, b"no such image\n"
        kind = kind_of(image_id)
        with self._lock:
            self.requests[kind] += 1
        if kind is Kind.HANGING:
            self._stopping.wait()
            return None
        if kind is Kind.FAILING or (kind is Kind.FLAKY and self._first_request(run, image_id)):
            return 500, b"planned failure\n"
        if kind is Kind.SLOW and self._stopping.wait(slow_delay(image_id)):
            return None
        data = self._image(image_id)
        return 200, data[: len(data) // 2] if kind is Kind.CORRUPT else data

    def _first_request(self, run: str, image_id: int) -> bool:
        with self._lock:
            first = (run, image_id) not in self._failed_once
            self._failed_once.add((run, image_id))
        return first

    def _image(self, image_id: int) -> bytes:
        with self._lock:
            data = self._cache.get(image_id)
        if data is None:  # generated outside the lock; a rare duplicate is identical
            data = generate(image_id)
            with self._lock:
                self._cache[image_id] = data
        return data


class _HTTPServer(ThreadingHTTPServer):
    """A thread per request; closing joins them (they are not daemons)."""

    daemon_threads = False
    block_on_close = True
    request_queue_size = 256  # the default 5 drops the connections of a fan-out burst

    def __init__(self, app: ImageServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.app = app

    def handle_error(self, request: object, client_address: object) -> None:
        """Stay quiet about clients that hung up (timed out, interrupted); report the rest."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    timeout = 10  # seconds a connected client may stay silent before its thread gives up

    def do_GET(self) -> None:
        match = _PATH.fullmatch(self.path)
        if match is None:
            reply: tuple[int, bytes] | None = (404, b"no such path\n")
        else:
            reply = self.server.app.answer(match.group(1), int(match.group(2)))
        if reply is None:
            return
        status, body = reply
        self.send_response(status)
        self.send_header("Content-Type", "image/jpeg" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the demo's output is the pipeline's view, not an access log."""
