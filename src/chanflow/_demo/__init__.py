"""``chanflow demo``: the seeds' production scenario on one machine.

A local HTTP server serves generated images (some slow, some failing, one that
never answers); a pipeline fetches them (asyncio), resizes them (processes) and
writes thumbnails (threads) with a live view; then the report, and a table of the
same work done sequentially, fanned out, on a worker pool and as the pipeline, which
of them is better and why, and a chart of it next to the thumbnails.

httpx and Pillow (the ``demo`` extra) are imported only when the demo runs;
matplotlib (in the extra too) only to draw the chart, which without it is skipped
with a one-line note.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["run_demo"]

MISSING = "chanflow demo needs httpx and Pillow: pip install 'chanflow[demo]'"


def run_demo(
    *, images: int = 300, out: Path | None = None, quick: bool = False, compare_only: bool = False
) -> int:
    """Run the demo; the exit code: 0 as designed, 1 if not, 2 without httpx/Pillow, 130 on ^C.

    ``images``: how many images the server offers (``quick``: at most 40, and
    compares 16); ``out``: where thumbnails and dead letters go (None: a new temporary
    directory, kept and named in the output); ``compare_only``: skip the live pipeline
    run, only compare the four ways (the answer and the chart).
    """
    try:
        import httpx  # noqa: F401
        import PIL  # noqa: F401
    except ImportError:
        print(MISSING, file=sys.stderr)
        return 2
    from ._main import main

    try:
        return main(images, out, quick, compare_only)
    except KeyboardInterrupt:
        print("chanflow demo: interrupted", file=sys.stderr)
        return 130
