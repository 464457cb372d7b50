"""The demo's images: generated per id, decoded and resized to thumbnails, saved.

``resize`` runs in worker processes, so this module imports only Pillow.
"""

from __future__ import annotations

import functools
import io
import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "SIZE",
    "THUMBNAIL",
    "Download",
    "Saver",
    "Thumbnail",
    "generate",
    "resize",
    "thumbnail_name",
]

SIZE = (1024, 768)
THUMBNAIL = (256, 192)


@dataclass(frozen=True)
class _EncodedImage:
    """An image's id and its JPEG bytes (kept out of the repr a dead letter shows)."""

    image_id: int
    data: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image {self.image_id}, {len(self.data)} bytes)"


class Download(_EncodedImage):
    """A fetched image."""


class Thumbnail(_EncodedImage):
    """A resized image."""


@functools.lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=200)
    except (TypeError, ImportError):  # Pillow < 10.1, or built without FreeType
        return ImageFont.load_default()


@functools.lru_cache(maxsize=1)
def _grain() -> Image.Image:
    noise = random.Random(0).randbytes(SIZE[0] * SIZE[1])
    return Image.frombytes("L", SIZE, noise).convert("RGB")


def generate(image_id: int) -> bytes:
    """A JPEG of about 230 KB, the same for the same id: colour blobs, grain, the id in print.

    The grain (the same for all) is what makes it weigh a few hundred KB and cost a
    real decode and resize; the blobs are upscaled in two steps because one Bilinear
    step from 16 x 12 costs ten times as much.
    """
    blobs = Image.frombytes("RGB", (16, 12), random.Random(image_id).randbytes(16 * 12 * 3))
    colours = blobs.resize((128, 96), Image.Resampling.BILINEAR).resize(
        SIZE, Image.Resampling.NEAREST
    )
    image = Image.blend(colours, _grain(), 0.12)
    ImageDraw.Draw(image).text(
        (40, 40), f"#{image_id}", fill="white", font=_font(), stroke_width=6, stroke_fill="black"
    )
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def resize(download: Download) -> Thumbnail:
    """Decode the image and resize it to ``THUMBNAIL`` (Lanczos); OSError if it is not one."""
    with Image.open(io.BytesIO(download.data)) as image:
        small = image.convert("RGB").resize(THUMBNAIL, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=85)
    return Thumbnail(download.image_id, buffer.getvalue())


def thumbnail_name(image_id: int) -> str:
    """The file name of image ``image_id``'s thumbnail."""
    return f"{image_id:04d}.jpg"


class Saver:
    """Writes thumbnails into ``directory`` (which must exist); returns each file's path."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __call__(self, thumbnail: Thumbnail) -> Path:
        path = self.directory / thumbnail_name(thumbnail.image_id)
        path.write_bytes(thumbnail.data)
        return path

    def __repr__(self) -> str:
        return f"Saver({str(self.directory)!r})"
