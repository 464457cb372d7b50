"""What the demo's server does with each image, and the settings every run shares.

The plan is a pure function of the image id, so the server, the pipeline's checks
and the tests agree on which images succeed and which end as dead letters (and in
which stage) without talking to each other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "FETCH",
    "RESIZE",
    "SAVE",
    "Kind",
    "Settings",
    "expected_failures",
    "expected_successes",
    "kind_of",
    "slow_delay",
]

# The pipeline's stage names; a dead letter names the stage it failed in.
FETCH = "fetch"
RESIZE = "resize"
SAVE = "save"

# Ids of the two one-off images (every other kind repeats along the ids).
HANGING_ID = 5
CORRUPT_ID = 13


class Kind(enum.Enum):
    """How the server answers a request for one image."""

    OK = "ok"  # 200 at once
    SLOW = "slow"  # 200 after slow_delay(id) seconds
    FLAKY = "flaky"  # 500 on the first request of a run, then 200: a retry recovers it
    FAILING = "failing"  # 500 always: a dead letter of the fetch stage
    HANGING = "hanging"  # never answers: timeouts, then a dead letter of the fetch stage
    CORRUPT = "corrupt"  # 200 with a truncated JPEG: a dead letter of the resize stage


def kind_of(image_id: int) -> Kind:
    """The plan for image ``image_id``: 5% failing, 5% flaky, 10% slow, one hanging, one corrupt."""
    if image_id == HANGING_ID:
        return Kind.HANGING
    if image_id == CORRUPT_ID:
        return Kind.CORRUPT
    if image_id % 20 == 3:
        return Kind.FAILING
    if image_id % 20 == 8:
        return Kind.FLAKY
    if image_id % 10 == 6:
        return Kind.SLOW
    return Kind.OK


def slow_delay(image_id: int) -> float:
    """Seconds a slow image waits before its answer: 0.10 to 0.19, varying with the id."""
    return 0.1 + (image_id * 7 % 10) / 100


def expected_successes(ids: range) -> set[int]:
    """The images of ``ids`` that end as thumbnails."""
    failures = expected_failures(ids)
    return {image_id for image_id in ids if image_id not in failures}


def expected_failures(ids: range) -> dict[int, str]:
    """The images of ``ids`` that end as dead letters, with the stage each fails in."""
    stages = {Kind.FAILING: FETCH, Kind.HANGING: FETCH, Kind.CORRUPT: RESIZE}
    return {image_id: stages[kind_of(image_id)] for image_id in ids if kind_of(image_id) in stages}


@dataclass(frozen=True)
class Settings:
    """The knobs of one demo: sizes, and the fetch policy every approach follows.

    ``timeout`` is per fetch attempt and must stay well above the slowest planned
    answer (0.19 s); the hanging image costs ``(retries + 1) * timeout`` in every
    approach, which is what bounds the sequential run from below.
    """

    images: int  # served, and run through the main pipeline
    compared: int  # the first images, done four ways for the comparison
    timeout: float  # seconds per fetch attempt
    retries: int = 2  # more attempts after a 500 or a timeout
    backoff: float = 0.05  # the first retry's backoff ceiling, doubling up to 4x
    rate: float = 200.0  # fetches started per second, retries included
    fetch_workers: int = 32
    save_workers: int = 4
    pool_workers: int = 8  # the worker-pool approach: threads doing a whole image each

    @classmethod
    def choose(cls, images: int, quick: bool) -> Settings:
        """The demo's settings for ``--images`` and ``--quick``.

        The comparison takes the first fifth of the images, at least 20 (all of them
        if there are fewer); ``--quick`` serves at most 40 and compares 16, with a
        shorter timeout.
        """
        if quick:
            return cls(images=min(images, 40), compared=min(images, 16), timeout=0.3)
        return cls(images=images, compared=min(images, max(20, images // 5)), timeout=0.5)
