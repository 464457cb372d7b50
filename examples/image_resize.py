"""The seeds' image-processing scenario: make thumbnails of real images, three ways.

The seeds' Go programs resize a batch of images with a worker pool ("CPU-bound: aim
for the number of logical CPU cores"). Here the images are generated with Pillow,
then each is decoded, resized with a Lanczos filter and saved as a thumbnail:

1. a plain loop, one image after the other;
2. fan-out: one thread per image (the seeds' "one goroutine per job");
3. ``cf.WorkerPool(backend="process")``: one worker process per core, the images in
   chunks, the functions sent by value (no ``__main__`` guard needed).

Every thumbnail is checked, and a table compares the three. Pillow releases the GIL
while it decodes, resizes and encodes, so threads scale here too; the process pool
pays its start-up (about 0.1 s) and wins when the per-image work is Python, or when
there are many more images. Run it with
``.venv/bin/python examples/image_resize.py [IMAGES] [OUT_DIR]`` (about 2 s).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

import chanflow as cf

SIZE = (1200, 900)
THUMBNAIL = (240, 180)


def make_image(path: Path, seed: int) -> None:
    """A picture with detail in it (a Lanczos resize of a flat colour would be free)."""
    image = Image.effect_mandelbrot(SIZE, (-2.0 + seed % 7 * 0.01, -1.2, 1.0, 1.2), 60)
    mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = Image.merge("RGB", (image, image.rotate(90, expand=False), mirrored))
    image.save(path, quality=90)


def thumbnail(job: tuple[str, str]) -> tuple[int, int]:
    """Decode, resize and save one image; the thumbnail's size."""
    source, target = job
    with Image.open(source) as image:
        small = image.convert("RGB").resize(THUMBNAIL, Image.Resampling.LANCZOS)
    small.save(target, quality=85)
    return small.width, small.height


def in_a_loop(jobs: list[tuple[str, str]]) -> list[tuple[int, int]]:
    return [thumbnail(job) for job in jobs]


def fanned_out(jobs: list[tuple[str, str]]) -> list[tuple[int, int]]:
    futures = [cf.go(thumbnail, job) for job in jobs]
    return [future.result(timeout=60) for future in futures]


def in_a_process_pool(jobs: list[tuple[str, str]]) -> list[tuple[int, int]]:
    with cf.WorkerPool(backend="process") as pool:
        return list(pool.map(thumbnail, jobs))


def main(count: int, out: Path) -> None:
    sources = out / "images"
    sources.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for index in range(count):
        make_image(sources / f"image{index}.jpg", index)
    print(
        f"1. generated {count} images of {SIZE[0]}x{SIZE[1]} in "
        f"{time.perf_counter() - started:.2f} s"
    )

    ways: list[tuple[str, str, Callable[[list[tuple[str, str]]], list[tuple[int, int]]]]] = [
        ("loop", "plain loop", in_a_loop),
        ("fan-out", "fan-out, a thread per image", fanned_out),
        ("pool", f"WorkerPool(process, {os.cpu_count()} workers)", in_a_process_pool),
    ]
    print("2. thumbnails:")
    timings: dict[str, float] = {}
    for key, name, run in ways:
        target = out / key
        target.mkdir(exist_ok=True)
        jobs = [(str(sources / f"image{i}.jpg"), str(target / f"{i}.jpg")) for i in range(count)]
        started = time.perf_counter()
        sizes = run(jobs)
        timings[key] = time.perf_counter() - started
        assert sizes == [THUMBNAIL] * count, sizes
        made = sorted(target.iterdir())
        assert len(made) == count, f"{name}: {len(made)} thumbnails"
        print(f"   {name:<34} {timings[key]:6.2f} s  {count / timings[key]:6.1f} images/s")
    speedups = ", ".join(f"{key} {timings['loop'] / timings[key]:.2f}x" for key in timings)
    print(f"3. speedup over the loop: {speedups}")


if __name__ == "__main__":
    images = int(sys.argv[1]) if len(sys.argv) > 1 else 24
    if len(sys.argv) > 2:
        main(images, Path(sys.argv[2]))
    else:
        with tempfile.TemporaryDirectory(prefix="chanflow-thumbnails-") as directory:
            main(images, Path(directory))
