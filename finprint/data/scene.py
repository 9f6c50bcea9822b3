"""The water around the fish: colour cast, turbidity, uneven light, caustics, net pen, particles, blur, noise.

A camera has its own water (clear blue sea cage, green inshore pen, turbid tank); every frame jitters
it. The cast, turbidity and light act on the whole frame, fish included, so a fish's colours in a
frame say more about the water than about the fish.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import cv2
import numpy as np

log = logging.getLogger(__name__)

WATER_TYPES: dict[str, tuple[float, float, float]] = {  # base BGR of the water body
    "clear": (140, 95, 30),
    "green": (95, 125, 45),
    "turbid": (90, 115, 100),
}


@dataclass(frozen=True)
class WaterStyle:
    water_bgr: tuple[float, float, float]
    turbidity: float  # 0 clear .. 1 fish at the back nearly vanish into the water colour
    cast_gain: tuple[float, float, float]  # per-channel gain on the whole frame (white balance)
    brightness: float
    light_tilt: float  # strength of the top-to-bottom light fall-off
    light_angle: float  # direction of the light gradient, radians
    caustics: float  # amplitude of the sunlight ripple pattern
    net_spacing: float  # mesh size of the net pen in pixels; 0 = tank without net
    net_angle: float
    net_contrast: float
    particles: int  # marine snow specks per frame
    blur_sigma: float
    noise_sigma: float

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v] if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}


def sample_camera_water(rng: np.random.Generator, kind: str | None = None) -> WaterStyle:
    """The water one camera looks into."""
    kind = kind or str(rng.choice(sorted(WATER_TYPES)))
    base = np.asarray(WATER_TYPES[kind], np.float64) + rng.uniform(-15, 15, size=3)
    return WaterStyle(
        water_bgr=tuple(float(x) for x in base),
        turbidity=float(rng.uniform(0.15, 0.35) + (0.25 if kind == "turbid" else 0.0)),
        cast_gain=tuple(float(x) for x in rng.uniform(0.8, 1.2, size=3)),
        brightness=float(rng.uniform(0.8, 1.15)),
        light_tilt=float(rng.uniform(0.2, 0.5)),
        light_angle=float(rng.uniform(-0.6, 0.6)),
        caustics=float(rng.uniform(0.0, 0.12)),
        net_spacing=float(rng.uniform(14, 30)) if kind != "turbid" or rng.random() < 0.5 else 0.0,
        net_angle=float(rng.uniform(0, np.pi / 2)),
        net_contrast=float(rng.uniform(0.08, 0.25)),
        particles=int(rng.integers(10, 80)),
        blur_sigma=float(rng.uniform(0.0, 0.8)),
        noise_sigma=float(rng.uniform(2.0, 6.0)),
    )


def jitter_style(style: WaterStyle, rng: np.random.Generator, amount: float = 1.0) -> WaterStyle:
    """A frame's water: the camera's, shifted a little (clouds, stirred sediment, auto white balance)."""
    gain = np.asarray(style.cast_gain) * rng.uniform(1 - 0.08 * amount, 1 + 0.08 * amount, size=3)
    return replace(
        style,
        water_bgr=tuple(float(x) for x in np.asarray(style.water_bgr) + rng.uniform(-10, 10, size=3) * amount),
        turbidity=float(np.clip(style.turbidity + rng.uniform(-0.08, 0.08) * amount, 0.0, 0.8)),
        cast_gain=tuple(float(x) for x in gain),
        brightness=float(style.brightness * rng.uniform(1 - 0.12 * amount, 1 + 0.12 * amount)),
        light_angle=float(style.light_angle + rng.uniform(-0.3, 0.3) * amount),
        blur_sigma=float(max(0.0, style.blur_sigma + rng.uniform(-0.3, 0.6) * amount)),
    )


def sample_view_style(rng: np.random.Generator) -> WaterStyle:
    """Water for a single isolated view: a random camera, strongly jittered."""
    return jitter_style(sample_camera_water(rng), rng, amount=1.5)


@lru_cache(maxsize=8)
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


@lru_cache(maxsize=8)
def _net_lines(width: int, height: int, spacing: float, angle: float) -> np.ndarray:
    """A camera's net-pen mesh (0..1 line strength); the net does not move, so it is computed once."""
    yy, xx = _grid(width, height)
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    a = (c * xx + s * yy) / np.float32(spacing) + np.float32(angle)
    b = (-s * xx + c * yy) / np.float32(spacing) + np.float32(0.37)
    line = np.maximum(np.exp(-(((a % 1.0) - 0.5) * 8.0) ** 2), np.exp(-(((b % 1.0) - 0.5) * 8.0) ** 2))
    line = line.astype(np.float32)
    line.flags.writeable = False
    return line


def render_background(style: WaterStyle, width: int, height: int) -> np.ndarray:
    """Open water (and the net pen) behind the fish: (H, W, 3) float32 BGR, 0..255."""
    yy, _ = _grid(width, height)
    water = np.asarray(style.water_bgr, np.float32)
    depth_shade = 1.0 - 0.35 * (yy[:, :1] / height)  # deeper water is darker
    img = np.broadcast_to(water[None, None, :] * depth_shade[..., None], (height, width, 3)).copy()
    if style.net_spacing > 0:
        line = _net_lines(width, height, round(style.net_spacing, 3), round(style.net_angle, 3))[..., None]
        k = np.float32(style.net_contrast)
        img = img * (1.0 - k * line) + 40.0 * k * line
    return img.astype(np.float32, copy=False)


def attenuate(fish_bgr: np.ndarray, style: WaterStyle, depth: float) -> np.ndarray:
    """Water between camera and fish: farther fish fade towards the water colour."""
    t = float(np.clip(style.turbidity * (0.25 + 0.75 * depth), 0.0, 0.9))
    return fish_bgr * (1.0 - t) + np.asarray(style.water_bgr, np.float32) * t


def composite(image: np.ndarray, patch_bgra: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Paint one warped fish over the image (in place); returns its full-frame alpha > 0.5 mask."""
    h, w = patch_bgra.shape[:2]
    a = patch_bgra[..., 3:4]
    region = image[y0 : y0 + h, x0 : x0 + w]
    region[:] = region * (1.0 - a) + patch_bgra[..., :3] * a
    mask = np.zeros(image.shape[:2], bool)
    mask[y0 : y0 + h, x0 : x0 + w] = patch_bgra[..., 3] > 0.5
    return mask


def finish(image: np.ndarray, style: WaterStyle, rng: np.random.Generator) -> np.ndarray:
    """Light, caustics, particles, cast, blur and sensor noise on the composed frame -> uint8 BGR."""
    height, width = image.shape[:2]
    # Light and caustics are smooth: compute them on a quarter-size grid and upsample.
    sw, sh = max(2, width // 4), max(2, height // 4)
    yy, xx = _grid(sw, sh)
    c, s = np.cos(style.light_angle), np.sin(style.light_angle)
    ramp = np.float32(s) * (xx / sw - 0.5) + np.float32(c) * (yy / sh - 0.5)  # light comes from the surface
    light = np.float32(style.brightness) * (1.0 - np.float32(style.light_tilt) * ramp)
    if style.caustics > 0:
        f = rng.uniform(0.12, 0.28, size=4).astype(np.float32)
        ph = rng.uniform(0, 2 * np.pi, size=2).astype(np.float32)
        ripple = (np.sin(xx * f[0] + yy * f[1] + ph[0]) * np.sin(xx * f[2] - yy * f[3] + ph[1])) ** 2
        light = light * (1.0 + np.float32(style.caustics) * (ripple - 0.25) * (1.0 - yy / sh))
    light = cv2.resize(light.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    gain = np.asarray(style.cast_gain, np.float32)[None, None, :]
    out = image * light[..., None] * gain
    for _ in range(style.particles):
        px, py = int(rng.integers(0, width)), int(rng.integers(0, height))
        cv2.circle(out, (px, py), int(rng.integers(1, 3)), (200.0, 210.0, 200.0), -1)
    if style.blur_sigma > 0.05:
        out = cv2.GaussianBlur(out, (0, 0), style.blur_sigma)
    out += rng.standard_normal(size=out.shape, dtype=np.float32) * np.float32(style.noise_sigma) + np.float32(0.5)
    return np.clip(out, 0, 255).astype(np.uint8)
