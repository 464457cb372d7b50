"""``chanflow demo``: start the server, run the pipeline live, report, compare.

Standard output gets the story (what is served, the report, where the files are,
the comparison table, which way is better and why, where its chart is); standard
error gets the live views.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from pathlib import Path

from rich.console import Console

from ._compare import APPROACHES, Comparison, Measured, comparison_table
from ._flow import build_flow, read_dead_letters
from ._plan import Kind, Settings, expected_failures, expected_successes, kind_of
from ._server import ImageServer
from ._verdict import chart_line, verdict_lines

__all__ = ["main"]

_THUMBNAIL_NAME = re.compile(r"\d{4,}\.jpg")
COMPARISON_NOTES = """\
  sequential: one image at a time; fan-out: an asyncio task per image (cf.afan_out);
  worker pool: cf.WorkerPool of {workers} threads, each doing whole images;
  pipeline: the one above. wall: seconds for the work; CPU: user + system seconds
  of all its processes; cores: CPU / wall; memory: peak total PSS of its processes;
  done: thumbnails written; failed: dead letters written (all as planned unless red)"""


def main(images: int, out: Path | None, quick: bool, compare_only: bool = False) -> int:
    """Run the demo (``compare_only``: only its comparison); 0 if everything ended as
    planned, 1 if not."""
    settings = Settings.choose(images, quick)
    out_dir = _output_directory(out)
    console = Console(highlight=False)
    live = Console(stderr=True)
    with ImageServer(settings.images) as server, Comparison(server.base_url, settings) as compare:
        with live.status(f"Generating {settings.images} images"):
            server.prepare()
        _introduce(console, server, settings)
        problems = [] if compare_only else _run_pipeline(console, server, settings, out_dir)
        problems += _run_comparison(console, live, compare, settings, out_dir)
    for problem in problems:
        live.print(f"[red]chanflow demo: {problem}[/red]")
    return 1 if problems else 0


def _run_pipeline(
    console: Console, server: ImageServer, settings: Settings, out_dir: Path
) -> list[str]:
    """The pipeline with its live view, its report, where its outputs are; any surprises."""
    flow = build_flow(
        server.urls("pipeline", settings.images),
        out_dir / "thumbnails",
        out_dir / "dead_letters.jsonl",
        settings,
        progress=True,
    )
    report = flow.run()
    console.print("\n[bold]Pipeline report[/bold]")
    console.print(str(report), markup=False)
    return _check_outputs(console, out_dir, settings)


def _run_comparison(
    console: Console, live: Console, compare: Comparison, settings: Settings, out_dir: Path
) -> list[str]:
    """The four ways, a status line while they run, their table, which is better, the chart.

    Returns any surprises. The chart goes next to the thumbnails, with its numbers.
    """
    console.print()
    with live.status("") as status:
        rows, failures = compare.run(
            lambda approach: status.update(
                f"The same work four ways: {approach} "
                f"({APPROACHES.index(approach) + 1}/{len(APPROACHES)})"
            ),
        )
    console.print(comparison_table(rows, settings))
    console.print(COMPARISON_NOTES.format(workers=settings.pool_workers), soft_wrap=True)
    if rows:
        console.print()
        for line in verdict_lines(rows, settings):
            console.print(line, soft_wrap=True, markup=False)
        console.print()
        console.print(chart_line(rows, settings, out_dir), soft_wrap=True, markup=False)
    return failures + _mismatches(rows, settings)


def _output_directory(out: Path | None) -> Path:
    """``out`` with an empty ``thumbnails`` and no dead letters; a new temporary one for None.

    Only what an earlier demo wrote is removed: ``dead_letters.jsonl`` and thumbnails
    named like ours.
    """
    directory = Path(tempfile.mkdtemp(prefix="chanflow-demo-")) if out is None else out
    (directory / "thumbnails").mkdir(parents=True, exist_ok=True)
    (directory / "dead_letters.jsonl").unlink(missing_ok=True)
    for path in (directory / "thumbnails").iterdir():
        if _THUMBNAIL_NAME.fullmatch(path.name):
            path.unlink()
    return directory


def _introduce(console: Console, server: ImageServer, settings: Settings) -> None:
    kinds = Counter(kind_of(image_id) for image_id in range(settings.images))
    lines = (
        f"[bold]chanflow demo[/bold]: {settings.images} images served by {server.base_url} "
        "(in this process)",
        f"  planned: {kinds[Kind.FAILING]} fail (500), {kinds[Kind.FLAKY]} fail once, "
        f"{kinds[Kind.SLOW]} slow, {kinds[Kind.HANGING]} never answers, "
        f"{kinds[Kind.CORRUPT]} truncated",
        f"  pipeline: fetch (asyncio, {settings.fetch_workers} tasks, {settings.rate:g}/s, "
        f"{settings.timeout:g} s timeout, {settings.retries} retries)",
        f"            -> resize (processes) -> save ({settings.save_workers} threads)",
    )
    for line in lines:
        console.print(line, soft_wrap=True)
    console.print()


def _check_outputs(console: Console, out_dir: Path, settings: Settings) -> list[str]:
    """Say where the outputs are; the ways they differ from the plan."""
    ids = range(settings.images)
    thumbnails = out_dir / "thumbnails"
    written = {
        int(path.stem) for path in thumbnails.iterdir() if _THUMBNAIL_NAME.fullmatch(path.name)
    }
    letters = read_dead_letters(out_dir / "dead_letters.jsonl")
    stages = Counter(stage for _, stage in letters)
    by_stage = ", ".join(f"{stage} {count}" for stage, count in sorted(stages.items()))
    console.print()
    console.print(f"Thumbnails:   {len(written)} in {thumbnails}", soft_wrap=True)
    if letters:
        where = out_dir / "dead_letters.jsonl"
        console.print(f"Dead letters: {len(letters)} ({by_stage}) in {where}", soft_wrap=True)
    else:
        console.print("Dead letters: none")
    problems = []
    if written != expected_successes(ids):
        problems.append(f"the thumbnails are not the planned {len(expected_successes(ids))}")
    if sorted(letters) != sorted(expected_failures(ids).items()):
        problems.append("the dead letters are not the planned ones")
    return problems


def _mismatches(rows: list[Measured], settings: Settings) -> list[str]:
    ids = range(settings.compared)
    planned = (len(expected_successes(ids)), len(expected_failures(ids)))
    return [
        f"the {row.approach} run ended {row.done} done, {row.failed} failed; "
        f"planned {planned[0]}, {planned[1]}"
        for row in rows
        if (row.done, row.failed) != planned
    ]
