"""Fish bodies and their individual markings, rendered once into a canonical texture, warped per view.

An individual is drawn in body coordinates (u: head 0 -> tail tip 1 along the texture width, v: the
vertical offset from the midline) as a BGRA float texture. Every appearance in a frame is a
`cv2.remap` of that texture (scale, rotation, mirror by swimming direction, a sinusoidal bend), so
the markings that identify a fish are exactly the same pixels in every view, distorted only as a
real fish would be. Individuals of one body shape share base colours; their shade differs only a
little, far less than what water and light do to a frame, so identity lives in the markings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

log = logging.getLogger(__name__)

TEX_W = 256  # texture width in pixels = fish length from snout to tail tip
TEX_H = 128  # texture height; the midline is row TEX_H / 2
BODY_END = 0.82  # fraction of the length where the caudal fin starts


@dataclass(frozen=True)
class BodyShape:
    name: str
    depth: float  # maximum body half-height as a fraction of the length
    back_bgr: tuple[float, float, float]
    belly_bgr: tuple[float, float, float]
    mark_bgr: tuple[float, float, float]  # colour of spots and bars
    dorsal: tuple[float, float, float]  # dorsal fin: start u, end u, height as a fraction of depth
    length_cm: tuple[float, float]  # range of true lengths


BODY_SHAPES: dict[str, BodyShape] = {
    # Atlantic-salmon-like spindle: grey-blue back, silver belly, dark cross-shaped spots.
    "spindle": BodyShape("spindle", 0.105, (120, 105, 85), (205, 205, 200), (45, 45, 55), (0.36, 0.50, 0.55), (35, 75)),
    # Sea-bream-like deep body: bronze-grey, dark blotches and bars.
    "deep": BodyShape("deep", 0.19, (85, 110, 120), (175, 185, 190), (50, 60, 70), (0.25, 0.62, 0.35), (20, 40)),
    # Char-like elongated body: dark olive back with pale spots.
    "elongated": BodyShape("elongated", 0.07, (60, 95, 80), (165, 190, 200), (175, 205, 215), (0.40, 0.52, 0.7), (30, 60)),
}


@dataclass
class Individual:
    """One fish and everything that makes it itself; plain data so farm.json can record it."""

    id: str
    unknown: bool
    body: str
    length_cm: float
    shade: tuple[float, float, float]  # small BGR offset on the shared base colours
    spots: list[tuple[float, float, float, float]] = field(default_factory=list)  # u, v (-1..1), radius px, aspect
    bars: list[tuple[float, float]] = field(default_factory=list)  # u centre, width (fraction of length)
    notch: tuple[float, float] = (0.5, 0.0)  # tail-fin notch: position along the fin edge (0 top..1 bottom), depth
    opercle: tuple[float, float] = (0.16, 0.0)  # gill-cover spot: u, v

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "unknown": self.unknown,
            "body": self.body,
            "length_cm": round(self.length_cm, 2),
            "shade_bgr": [round(s, 2) for s in self.shade],
            "spots": [[round(x, 4) for x in s] for s in self.spots],
            "bars": [[round(x, 4) for x in b] for b in self.bars],
            "notch": [round(x, 4) for x in self.notch],
        }


def make_individual(ident: str, unknown: bool, body: str, rng: np.random.Generator) -> Individual:
    """Draw an individual's stable markings. Counts are similar across fish so no global density cue."""
    shape = BODY_SHAPES[body]
    n_spots = int(rng.integers(16, 23))
    spots = []
    for _ in range(n_spots):
        u = float(rng.uniform(0.10, 0.78))
        v = float(rng.uniform(-0.85, 0.45))  # back-biased, as on real fish
        spots.append((u, v, float(rng.uniform(4.5, 8.0)), float(rng.uniform(0.6, 1.0))))
    bars = [(float(rng.uniform(0.22, 0.72)), float(rng.uniform(0.025, 0.05))) for _ in range(int(rng.integers(1, 3)))]
    return Individual(
        id=ident,
        unknown=unknown,
        body=body,
        length_cm=float(rng.uniform(*shape.length_cm)),
        shade=tuple(float(x) for x in rng.uniform(-6, 6, size=3)),
        spots=spots,
        bars=bars,
        notch=(float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.04, 0.09))),
        opercle=(float(rng.uniform(0.12, 0.2)), float(rng.uniform(-0.4, 0.2))),
    )


def make_lookalike(of: Individual, ident: str, rng: np.random.Generator, keep: float = 0.5) -> Individual:
    """A stranger that resembles `of` as a sibling might: same body, shade within 2 levels, same bars and
    gill-cover spot, `keep` of its spots where they were and the rest drawn anew, its own tail notch."""
    fresh = make_individual(ident, True, of.body, rng)
    kept = [of.spots[i] for i in sorted(rng.choice(len(of.spots), size=int(round(keep * len(of.spots))), replace=False))]
    return Individual(
        id=ident,
        unknown=True,
        body=of.body,
        length_cm=fresh.length_cm,
        shade=tuple(float(c + d) for c, d in zip(of.shade, rng.uniform(-2, 2, size=3), strict=True)),
        spots=kept + fresh.spots[len(kept):],
        bars=list(of.bars),
        notch=fresh.notch,
        opercle=of.opercle,
    )


def make_population(n: int, rng: np.random.Generator, prefix: str = "fish", unknown: bool = False) -> list[Individual]:
    """n individuals spread evenly over the body shapes, so shape alone never names a fish."""
    shapes = sorted(BODY_SHAPES)
    return [make_individual(f"{prefix}{i:03d}", unknown, shapes[i % len(shapes)], rng) for i in range(n)]


def _half_height(u: np.ndarray, depth: float) -> np.ndarray:
    """Body outline: half-height in texture pixels at each u (0..BODY_END), a blunt head and narrow peduncle."""
    x = np.clip(u / BODY_END, 0.0, 1.0)
    bulk = np.sqrt(x) * (1.0 - x) ** 0.9 / 0.43  # peaks near 1 at x ~ 0.36
    peduncle = 0.28 * np.clip((x - 0.55) / 0.45, 0.0, 1.0)
    return depth * TEX_W * np.maximum(bulk, peduncle)


def render_texture(ind: Individual) -> np.ndarray:
    """The individual in body coordinates: (TEX_H, TEX_W, 4) float32 BGRA, colours 0..255, alpha 0..1."""
    shape = BODY_SHAPES[ind.body]
    mid = TEX_H / 2.0
    uu, yy = np.meshgrid((np.arange(TEX_W) + 0.5) / TEX_W, np.arange(TEX_H) + 0.5)
    dy = yy - mid
    hh = _half_height(uu, shape.depth)
    body = (uu <= BODY_END) & (np.abs(dy) <= hh)

    # Caudal fin: a forked fan from the peduncle, with this fish's notch cut into its trailing edge.
    ped = _half_height(np.array(BODY_END), shape.depth)
    t = np.clip((uu - BODY_END) / (1.0 - BODY_END), 0.0, 1.0)
    span = ped + t * (shape.depth * TEX_W * 1.15 - ped)
    fork = 1.0 - 0.35 * (1.0 - np.abs(dy) / np.maximum(span, 1e-3))
    tail = (uu > BODY_END - 0.01) & (np.abs(dy) <= span) & (t <= fork)
    edge_pos = (dy / np.maximum(span, 1e-3) + 1.0) / 2.0  # 0 top .. 1 bottom along the fin edge
    notch_pos, notch_depth = ind.notch
    in_notch = (np.abs(edge_pos - notch_pos) < 0.09) & (t > fork - notch_depth / (1.0 - BODY_END) * 2.0)
    tail &= ~in_notch

    # Dorsal fin: a triangle on the back.
    d0, d1, dh = shape.dorsal
    rel = np.clip((uu - d0) / (d1 - d0), 0.0, 1.0)
    dorsal_top = hh + dh * shape.depth * TEX_W * (1.0 - rel) * (rel > 0)
    dorsal = (uu >= d0) & (uu <= d1) & (-dy <= dorsal_top) & (dy < 0)

    # Base colours: dark back to pale belly, plus the individual's small shade offset.
    back = np.asarray(shape.back_bgr, np.float32) + np.asarray(ind.shade, np.float32)
    belly = np.asarray(shape.belly_bgr, np.float32) + np.asarray(ind.shade, np.float32)
    w = np.clip((dy / np.maximum(hh, 1.0) + 1.0) / 2.0, 0.0, 1.0)[..., None] ** 1.3
    rgb = back * (1.0 - w) + belly * w
    fin_rgb = back * 0.8
    rgb = np.where((tail | dorsal)[..., None] & ~body[..., None], fin_rgb, rgb).astype(np.float32)

    # Markings, drawn on the body only: spots, bars, the gill-cover spot.
    marks = np.zeros((TEX_H, TEX_W), np.float32)
    for u, v, r, aspect in ind.spots:
        cx = u * TEX_W
        cy = mid + v * float(_half_height(np.array(u), shape.depth))
        cv2.ellipse(marks, (int(cx * 16), int(cy * 16)), (int(r * 16), int(r * aspect * 16)), 0, 0, 360, 1.0, -1, cv2.LINE_AA, 4)
    for u, width in ind.bars:
        band = np.exp(-(((uu - u) / width) ** 2) * 2.0) * (dy < 0.35 * hh)
        marks = np.maximum(marks, 0.85 * band.astype(np.float32))
    ou, ov = ind.opercle
    cv2.circle(marks, (int(ou * TEX_W * 16), int((mid + ov * shape.depth * TEX_W) * 16)), 7 * 16, 1.0, -1, cv2.LINE_AA, 4)
    marks *= body
    mark_rgb = np.asarray(shape.mark_bgr, np.float32)
    rgb = rgb * (1.0 - 0.85 * marks[..., None]) + mark_rgb * 0.85 * marks[..., None]

    # Eye: the same for every fish of the farm.
    eye_x, eye_y = 0.06 * TEX_W, mid - 0.25 * float(_half_height(np.array(0.06), shape.depth))
    cv2.circle(rgb, (int(eye_x), int(eye_y)), 4, (20, 20, 20), -1, cv2.LINE_AA)

    alpha = np.where(body, 1.0, np.where(tail | dorsal, 0.85, 0.0)).astype(np.float32)
    alpha = cv2.GaussianBlur(alpha, (3, 3), 0.7)
    return np.dstack([rgb, alpha]).astype(np.float32)


@dataclass(frozen=True)
class Pose:
    """Where and how a fish appears in a frame."""

    cx: float  # centre, frame pixels
    cy: float
    length_px: float  # snout to tail tip
    angle: float  # radians, counter-clockwise tilt of the body axis
    facing_right: bool
    bend: float  # lateral bend amplitude as a fraction of the length
    bend_phase: float


def warp_into_frame(texture: np.ndarray, pose: Pose, width: int, height: int) -> tuple[np.ndarray, int, int] | None:
    """Warp a texture into frame pixels. Returns (BGRA patch, x0, y0) or None when the fish is off-frame."""
    radius = 0.62 * pose.length_px
    x0, y0 = max(0, int(np.floor(pose.cx - radius))), max(0, int(np.floor(pose.cy - radius)))
    x1, y1 = min(width, int(np.ceil(pose.cx + radius))), min(height, int(np.ceil(pose.cy + radius)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    # Sample a pre-shrunk texture for small fish so thin markings do not alias away.
    tex = texture
    tex_scale = 1.0
    while tex.shape[1] > 2.2 * pose.length_px and tex.shape[1] > 64:
        tex = cv2.resize(tex, (tex.shape[1] // 2, tex.shape[0] // 2), interpolation=cv2.INTER_AREA)
        tex_scale /= 2.0
    xs = np.arange(x0, x1, dtype=np.float32) + 0.5 - pose.cx
    ys = np.arange(y0, y1, dtype=np.float32) + 0.5 - pose.cy
    dx, dy = np.meshgrid(xs, ys)
    c, s = np.cos(pose.angle), np.sin(pose.angle)
    along = c * dx - s * dy  # image y points down, so a CCW tilt uses -dy
    across = s * dx + c * dy
    u = 0.5 - along / pose.length_px if pose.facing_right else 0.5 + along / pose.length_px
    # The tail swings more than the head: amplitude grows with u.
    lateral = pose.bend * pose.length_px * u**2 * np.sin(2.0 * np.pi * 0.9 * u + pose.bend_phase)
    tex_x = u * TEX_W
    tex_y = (across - lateral) / pose.length_px * TEX_W + TEX_H / 2.0
    map_x = (tex_x * tex_scale - 0.5).astype(np.float32)
    map_y = (tex_y * tex_scale - 0.5).astype(np.float32)
    patch = cv2.remap(tex, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if not np.any(patch[..., 3] > 0.5):
        return None
    return patch, x0, y0
