"""The ``chanflow`` command line: ``chanflow run`` and ``chanflow demo``.

Built on the library's public layers (pools, pipelines); nothing below imports it,
and ``import chanflow`` does not import click.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._jobs import MalformedLine
from ._run import run
from ._targets import CommandFailed

__all__ = ["CommandFailed", "MalformedLine", "main"]

# Dead letters and output records name these as chanflow._cli.X, not by private module.
CommandFailed.__module__ = MalformedLine.__module__ = __name__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="chanflow", prog_name="chanflow")
def cli() -> None:
    """Run batches of jobs through bounded, retrying, resumable worker pools.

    \b
    chanflow run --call mypkg.mod:func jobs.txt     a Python callable per line
    chanflow run -- convert {} -resize 50% out/{/}  a command per line of stdin
    chanflow demo                                   the seeds' image pipeline, live
    """


@cli.command()
@click.option(
    "--images",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="How many images the local server offers.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for thumbnails and dead letters (default: a temporary one).",
)
@click.option("--quick", is_flag=True, help="A smaller, faster run (about 5 seconds).")
@click.option(
    "--compare",
    is_flag=True,
    help="Only the comparison: a plain loop, a task per image, a worker pool and the "
    "pipeline on the same images; which is better and why, and its chart.",
)
def demo(images: int, out: Path | None, quick: bool, compare: bool) -> None:
    """Fetch, resize and save images from a local server through a live pipeline.

    Starts an HTTP server on 127.0.0.1 serving generated images (some slow, some
    failing, one that never answers), runs fetch (asyncio) -> resize (processes) ->
    save (threads) with rate limits, retries, timeouts and dead letters, shows a
    live view per stage, then compares the pipeline with simpler ways to do the work
    (``--compare``: only that), says which is better and why, and draws the chart.
    """
    from .._demo import run_demo

    sys.exit(run_demo(images=images, out=out, quick=quick, compare_only=compare))


cli.add_command(run)


def main(argv: list[str] | None = None) -> None:
    """The console entry point. Exits with the command's status."""
    args = sys.argv[1:] if argv is None else argv
    options, command = split_command(args)
    cli.main(args=options, prog_name="chanflow", obj={"command": command, "argv": args[1:]})


def split_command(args: list[str]) -> tuple[list[str], list[str]]:
    """``run ... -- COMMAND ...`` split at the ``--``: click must not parse the command."""
    if args[:1] == ["run"] and "--" in args:
        cut = args.index("--")
        return args[:cut], args[cut + 1 :]
    return args, []
