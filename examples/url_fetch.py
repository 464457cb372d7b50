"""The seeds' concurrent URL fetch with timeouts, against a local server, as chanflow programs.

The Go original ("Go Goroutines vs. Node.js Event Loop") fetches five URLs at once,
each with a 10 s client timeout, one of them slow (``httpbin.org/delay/2``) and one
unreachable; each goroutine sends a line to a buffered channel::

    func fetchURL(url string, results chan<- string, wg *sync.WaitGroup) {
        defer wg.Done()
        client := http.Client{Timeout: 10 * time.Second}
        resp, err := client.Get(url)
        if err != nil { results <- fmt.Sprintf("Error fetching %s: %v", url, err); return }
        ...
    }
    for _, url := range urls { wg.Add(1); go fetchURL(url, results, &wg) }
    wg.Wait(); close(results)
    for result := range results { fmt.Println(result) }

The Node.js original does the same with ``axios.get(url, {timeout: 10000})`` and
``Promise.all``. Here the URLs point at a web server the example starts itself on
127.0.0.1 (port 0: any free port), so it needs no network: three pages, two pages
slower than the timeout, one page that answers 503 the first time it is asked, and
a port on which nothing listens. The timeout is 0.5 s instead of 10 s.

1. Go's program: a thread per URL (``cf.WaitGroup.go``), the client's timeout, one
   ``cf.Result`` per URL on a buffered ``cf.Channel`` instead of a formatted string.
2. Node's ``Promise.all``: ``cf.afan_out`` over an ``httpx.AsyncClient``, one
   ``cf.Result`` per URL in input order; a failure is a value, not a rejection.
3. ``cf.WorkerPool`` on asyncio: the pool's own per-attempt ``timeout=`` (the slow
   fetches are cancelled and fail with ``cf.JobTimeout``), one retry for HTTP status
   errors (the 503 page recovers), none for a refused connection; Results in
   completion order and the pool's counters.

Run it with ``.venv/bin/python examples/url_fetch.py`` (about two seconds).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import httpx

import chanflow as cf

TIMEOUT = 0.5  # seconds per fetch (the seeds: 10 s)
SEED_TIMEOUT = 10.0  # the client's timeout in section 3, where the pool's timeout applies
SLOW = 5.0  # how long a slow page would take; the server gives up when the example ends
PATHS = ["/pages/google", "/pages/github", "/pages/golang", "/slow/1", "/slow/2", "/flaky"]


def say(line: str) -> None:
    """Print one line in one write, so lines from several threads never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# -- the local web server --------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    site: Site


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        site = self.server.site
        hits = site.hit(self.path)
        if self.path.startswith("/slow/"):
            if site.stopping.wait(SLOW):
                return  # the example is over: nobody waits for this page any more
            self.reply(200, "<h1>finally</h1>")
        elif self.path == "/flaky" and hits == 1:
            self.reply(503, "<h1>busy, try again</h1>")
        else:
            self.reply(200, f"<h1>{self.path.rsplit('/', 1)[-1]}</h1>")

    def reply(self, status: int, body: str) -> None:
        data = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up on us

    def log_message(self, format: str, *args: object) -> None:
        pass  # no access log on stderr


class Site:
    """A web server on 127.0.0.1 in a thread, and a port where nothing listens."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._hits: Counter[str] = Counter()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.site = self
        # Bound but not listening: a connection to it is refused, and no other
        # program can take the port while we hold it.
        self._closed_port = socket.socket()
        self._closed_port.bind(("127.0.0.1", 0))
        self._served: cf.WaitGroup = cf.WaitGroup()

    def __enter__(self) -> Site:
        self._served.go(self._server.serve_forever, 0.02)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping.set()  # slow pages stop waiting
        self._server.shutdown()
        self._served.wait()
        self._server.server_close()
        self._closed_port.close()

    def urls(self) -> list[str]:
        host, port = self._server.server_address[:2]
        refused = self._closed_port.getsockname()[1]
        pages = [f"http://{host!s}:{port}{path}" for path in PATHS]
        return [*pages, f"http://127.0.0.1:{refused}/refused"]

    def hit(self, path: str) -> int:
        with self._lock:
            self._hits[path] += 1
            return self._hits[path]

    def reset(self) -> None:
        """Forget the hits, so that /flaky fails its first request again."""
        with self._lock:
            self._hits.clear()


# -- what a fetch gives ---------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    status: int
    body: str


def timed_out(error: BaseException) -> bool:
    """The client's timeout (httpx) or the pool's (cf.JobTimeout, a TimeoutError)."""
    return isinstance(error, (httpx.TimeoutException, TimeoutError))


def describe(result: cf.Result[Page], attempts: bool = False) -> str:
    path = httpx.URL(result.job).path
    tail = f" (attempts {result.attempts})" if attempts else ""
    if result.ok:
        page = result.unwrap()
        return f"   ok         {path:<14} {page.status} {page.body}{tail}"
    error = result.error
    assert error is not None
    if timed_out(error):
        return f"   timed out  {path:<14} {type(error).__name__}{tail}"
    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        return f"   failed     {path:<14} HTTPStatusError {status}{tail}"
    return f"   failed     {path:<14} {type(error).__name__}{tail}"


def report(results: list[cf.Result[Page]], started: float, attempts: bool = False) -> None:
    for result in results:
        say(describe(result, attempts))
    took = time.monotonic() - started
    slow = sum(result.error is not None and timed_out(result.error) for result in results)
    say(f"   {len(results)} URLs, {slow} timed out, total execution time {took:.2f} s")


# -- 1. Go: a goroutine per URL ----------------------------------------------------------------


def fetch_url(
    client: httpx.Client, index: int, url: str, results: cf.Channel[cf.Result[Page]]
) -> None:
    """Go's fetchURL: one Result on ``results``, whatever happens."""
    try:
        response = client.get(url)
        response.raise_for_status()
    except httpx.HTTPError as error:
        results.send(cf.Result(url, index, error=error))
        return
    results.send(cf.Result(url, index, value=Page(response.status_code, response.text)))


def with_threads(site: Site) -> None:
    say(f"1. Go's fetchURL: a thread per URL, a cf.WaitGroup, the client's {TIMEOUT} s timeout")
    urls = site.urls()
    started = time.monotonic()
    results: cf.Channel[cf.Result[Page]] = cf.Channel(len(urls))  # buffered: no sender blocks
    wg = cf.WaitGroup()
    # trust_env=False: a local server, whatever proxy the environment names.
    with httpx.Client(timeout=TIMEOUT, trust_env=False) as client:
        for index, url in enumerate(urls):
            wg.go(fetch_url, client, index, url, results)  # Go: wg.Add(1); go fetchURL(...)
        wg.wait()
    results.close()
    report(list(results), started)  # completion order


# -- 2. Node: Promise.all ----------------------------------------------------------------------


async def with_fan_out(site: Site) -> None:
    say(f"2. Node's Promise.all: cf.afan_out over an httpx.AsyncClient, {TIMEOUT} s timeout")
    urls = site.urls()
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as client:

        async def fetch(url: str) -> Page:
            response = await client.get(url)
            response.raise_for_status()
            return Page(response.status_code, response.text)

        results = await cf.afan_out(fetch, urls)  # input order, as Promise.all
    report(results, started)


# -- 3. a worker pool with the pool's own timeout ------------------------------------------------


async def with_pool(site: Site) -> None:
    say(f"3. cf.WorkerPool(timeout={TIMEOUT}, retries=1 on HTTP status errors): aresults")
    urls = site.urls()
    started = time.monotonic()
    async with (
        httpx.AsyncClient(timeout=SEED_TIMEOUT, trust_env=False) as client,
        cf.WorkerPool(
            workers=10,
            timeout=TIMEOUT,  # per attempt: a fetch still running then is cancelled
            retries=1,
            retry_on=httpx.HTTPStatusError,  # a 503 is worth retrying, a refused port is not
            backoff=lambda attempt: 0.01,
        ) as pool,
    ):

        async def fetch(url: str) -> Page:
            response = await client.get(url)
            response.raise_for_status()
            return Page(response.status_code, response.text)

        results = [result async for result in pool.aresults(fetch, urls)]  # completion order
        stats = pool.stats()
    report(results, started, attempts=True)
    say(
        f"   stats: completed={stats.completed} failed={stats.failed} "
        f"retried={stats.retried} timed_out={stats.timed_out} in_flight={stats.in_flight}"
    )


def main() -> None:
    started = time.perf_counter()
    with Site() as site:
        with_threads(site)
        site.reset()
        asyncio.run(with_fan_out(site))
        site.reset()
        asyncio.run(with_pool(site))
    say(f"\nall done in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
