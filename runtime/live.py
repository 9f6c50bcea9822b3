"""Each camera's latest processed frame with what the daemon saw in it, drawn on request for the live page.

The worker only hands over references (the frame, boxes, masks, labels); drawing and JPEG encoding happen on
the web request's thread, at most once per frame, so the live page costs the inference thread nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

# BGR colours: named fish green, strangers orange.
KNOWN = (80, 200, 60)
UNKNOWN_COLOUR = (0, 140, 255)


@dataclass(frozen=True)
class Mark:
    box: np.ndarray  # xyxy, frame pixels
    mask: np.ndarray | None  # HxW bool, or None
    track_id: int
    label: str  # the fish's name, or "unknown"
    known: bool


@dataclass
class _Latest:
    image: np.ndarray
    marks: list[Mark]
    ts: float
    seq: int
    jpeg: bytes | None = None


class LiveView:
    """`update` from the worker, `jpeg` from the web page."""

    def __init__(self, max_width: int = 960) -> None:
        self.max_width = max_width
        self._latest: dict[str, _Latest] = {}
        self._lock = threading.Lock()

    def update(self, camera: str, image: np.ndarray, marks: list[Mark], ts: float) -> None:
        with self._lock:
            prev = self._latest.get(camera)
            self._latest[camera] = _Latest(image, marks, ts, (prev.seq + 1) if prev else 0)

    def cameras(self) -> dict[str, dict]:
        """Per camera: the latest frame's time and its marks (for the page's text)."""
        with self._lock:
            return {c: {"ts": v.ts, "fish": [(m.track_id, m.label) for m in v.marks]} for c, v in self._latest.items()}

    def jpeg(self, camera: str) -> bytes | None:
        with self._lock:
            latest = self._latest.get(camera)
        if latest is None:
            return None
        if latest.jpeg is None:
            ok, buf = cv2.imencode(".jpg", annotate(latest.image, latest.marks, self.max_width), [cv2.IMWRITE_JPEG_QUALITY, 80])
            latest.jpeg = buf.tobytes() if ok else b""
        return latest.jpeg or None


def annotate(image: np.ndarray, marks: list[Mark], max_width: int) -> np.ndarray:
    """Masks tinted, boxes drawn, "#track name" above each box; scaled down to `max_width`."""
    out = image.copy()
    for m in marks:
        colour = KNOWN if m.known else UNKNOWN_COLOUR
        if m.mask is not None and m.mask.shape == out.shape[:2]:
            out[m.mask] = (0.6 * out[m.mask] + 0.4 * np.array(colour)).astype(np.uint8)
    scale = min(1.0, max_width / out.shape[1])
    if scale < 1.0:
        out = cv2.resize(out, (int(out.shape[1] * scale), int(out.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    thick = max(1, round(out.shape[1] / 400))
    for m in marks:
        colour = KNOWN if m.known else UNKNOWN_COLOUR
        x1, y1, x2, y2 = (int(v * scale) for v in m.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        text = f"#{m.track_id} {m.label}"
        font = 0.35 + 0.1 * thick
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, 1)
        top = max(0, y1 - th - 4)
        cv2.rectangle(out, (x1, top), (x1 + tw + 4, top + th + 4), colour, -1)
        cv2.putText(out, text, (x1 + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), 1, cv2.LINE_AA)
    return out
