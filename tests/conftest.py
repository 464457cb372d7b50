"""Shared fixtures: every test is checked for library threads it left behind.

Tests of the Dask backend share one LocalCluster for the whole session (see
``dask_client``); a test parametrised with the Dask backend of pool_helpers gets it
started by ``_dask_cluster_for_dask_backend_tests``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pool_helpers import DASK_THREADS_PER_WORKER, DASK_WORKERS

# Threads that may legitimately outlive a test: go()/wg.go() threads may still be
# running the caller's own function, and the shared timer thread exits when idle.
ALLOWED_SURVIVORS = ("chanflow-go", "chanflow-timer")


def library_threads(allowed: tuple[str, ...] = ALLOWED_SURVIVORS) -> list[threading.Thread]:
    return [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith("chanflow-") and not thread.name.startswith(allowed)
    ]


@pytest.fixture(autouse=True)
def no_leaked_library_threads() -> Iterator[None]:
    """Fail a test that leaves a library thread running (beyond the allowed kinds)."""
    before = set(library_threads())
    yield
    # A thread that has finished its work may take a moment to be reaped by the OS.
    deadline = time.monotonic() + 2.0
    leaked = [t for t in library_threads() if t not in before]
    while leaked and time.monotonic() < deadline:
        time.sleep(0.01)
        leaked = [t for t in library_threads() if t not in before and t.is_alive()]
    assert not leaked, f"library threads outlived the test: {leaked}"


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """A ``distributed.Client`` to a LocalCluster of worker processes, the current client.

    ``backend="dask"`` finds it through ``distributed.get_client()``. A task that has
    killed 2 workers (not Dask's default of 4) fails with KilledWorker: the tests of
    worker loss stay quick, and one killed worker still only reschedules its tasks.
    Started the first time a test asks for it (about a second), closed at the end.
    """
    import dask  # the dev extra installs distributed: missing, the Dask tests fail
    import distributed

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(
            n_workers=DASK_WORKERS,
            threads_per_worker=DASK_THREADS_PER_WORKER,
            processes=True,
            dashboard_address=":0",
        )
    client = distributed.Client(cluster)  # the default client from now on
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(autouse=True)
def _dask_cluster_for_dask_backend_tests(request: pytest.FixtureRequest) -> None:
    """Start the session's Dask cluster before a test parametrised with the Dask backend."""
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    if any(getattr(value, "name", value) == "dask" for value in params):
        client = request.getfixturevalue("dask_client")
        # Whole again: an earlier test in this process may have killed a worker.
        client.wait_for_workers(DASK_WORKERS, timeout=30)
