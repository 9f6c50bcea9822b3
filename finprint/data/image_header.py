"""Image size from the file header, and a cheap check that an image decodes.

Loading a dataset needs every frame's width and height (to turn normalised YOLO coordinates into
pixels) but not its pixels; parsing the JPEG/PNG header is ~100x cheaper than decoding.
`verify_image` decodes at 1/8 size, which still walks the whole entropy-coded stream, so a
corrupt or truncated file is caught without paying for a full-size decode.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class UnreadableImage(ValueError):
    """The file is not an image this loader can read; the message says why."""


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _jpeg_size(fh) -> tuple[int, int]:
    fh.seek(2)
    while True:
        byte = fh.read(1)
        if not byte:
            raise UnreadableImage("JPEG ends before its frame header")
        if byte != b"\xff":
            continue
        marker = fh.read(1)
        while marker == b"\xff":  # fill bytes before a marker
            marker = fh.read(1)
        if not marker:
            raise UnreadableImage("JPEG ends before its frame header")
        code = marker[0]
        if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7:  # markers without a length
            continue
        length_bytes = fh.read(2)
        if len(length_bytes) < 2:
            raise UnreadableImage("JPEG segment header is cut off")
        (length,) = struct.unpack(">H", length_bytes)
        if code in _SOF_MARKERS:
            data = fh.read(5)
            if len(data) < 5:
                raise UnreadableImage("JPEG frame header is cut off")
            height, width = struct.unpack(">HH", data[1:5])
            return width, height
        if length < 2:
            raise UnreadableImage("JPEG segment has an invalid length")
        fh.seek(length - 2, 1)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) read from the header; decodes only formats whose header is not parsed here."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
            if head[:2] == b"\xff\xd8":
                width, height = _jpeg_size(fh)
            elif head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
                width, height = struct.unpack(">II", head[16:24])
            elif not head:
                raise UnreadableImage("empty file")
            else:
                image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                if image is None:
                    raise UnreadableImage("not an image OpenCV can decode")
                height, width = image.shape[:2]
    except OSError as exc:
        raise UnreadableImage(f"cannot open: {exc.strerror or exc}") from exc
    if width <= 0 or height <= 0:
        raise UnreadableImage(f"header gives an empty image ({width}x{height})")
    return int(width), int(height)


def verify_image(path: Path) -> None:
    """Raise UnreadableImage unless the whole file decodes (at 1/8 size, for speed)."""
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise UnreadableImage("empty file")
    # libjpeg decodes a truncated file with a warning and grey fill; the end-of-image marker is
    # the cheap way to tell (some encoders pad after it, hence the short search window).
    if data[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in data[-64:].tobytes():
        raise UnreadableImage("JPEG is truncated (no end-of-image marker)")
    image = cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if image is None or image.size == 0:
        raise UnreadableImage("image data does not decode")


def checked_size(path: Path, verify: bool) -> tuple[int, int]:
    """(width, height) from the header; with `verify`, also decode the whole file. Raises UnreadableImage."""
    size = image_size(path)
    if verify:
        verify_image(path)
    return size


def size_or_skip(path: Path, verify: bool, skip_bad: bool, skipped: list) -> tuple[int, int] | None:
    """checked_size for a loader: an unreadable image raises DataError, or with `skip_bad` is listed and gives None."""
    from finprint.data.types import Skipped
    from finprint.errors import DataError

    try:
        return checked_size(path, verify)
    except UnreadableImage as exc:
        if not skip_bad:
            raise DataError(path, f"unreadable image: {exc}") from None
        skipped.append(Skipped(path, f"unreadable image: {exc}"))
        return None
