"""The synthetic fish farm: a seeded, byte-reproducible dataset for detection, instance masks and re-ID.

What a farm contains (`finprint data synth --out FARM`, layout in docs/CONTRACTS.md section 1):

- Individuals: `--individuals` known fish (`fish000`..) and `--unknown` unknown fish (`unk000`..),
  spread evenly over three body shapes (salmon-like spindle, bream-like deep body, char-like
  elongated), each with a true length in cm. Fish of one shape share base colours; an individual's
  own shade differs by at most 6 levels per channel, much less than what the water does. What makes
  a fish itself is its marking: 16-22 spots at its own places, one or two bars, a gill-cover spot
  and a notch in the tail fin. These are painted once into a canonical texture and warped into
  every view (scale, tilt, mirrored by swimming direction, a sinusoidal body bend), so they survive
  every appearance.
- Cameras: two, each with its own water (clear blue, green or turbid), colour cast, light fall-off,
  caustics, net-pen mesh, marine snow, blur and sensor noise, and a scale `px_per_cm` (a fish of
  L cm is L * px_per_cm pixels long, snout to tail tip). Every frame jitters the camera's water.
- Still images in sequences ("groups") of a few neighbouring frames from one camera, where the
  fish drift between frames. Splits are by group, so neighbouring frames never straddle train/test.
  4-8 known fish per frame; test frames also hold 0-2 unknown fish, which never appear in train/val
  images or reid/train. Fish overlap: nearer fish hide farther ones, the hidden part is cut from
  the instance mask, and an instance with less than `min_visible_fraction` of its body (or fewer
  than `min_visible_px` pixels) visible gets no annotation. Fish cut by the frame edge are common.
- reid/: crops (box + 10 %, native resolution) of instances with at least 60 % of the body
  visible: train/ from the train split, gallery/ and query/ from the test split (each known
  individual's test groups alternate gallery, query, so a query never has its neighbouring frame in
  the gallery; unknown fish only in query/).
- videos/: one clip per camera (`video_seconds` at `fps`) where the same fish, some unknown, swim
  smooth paths wider than the view (they leave and come back), change depth (they cross and hide
  each other), with per-frame ground truth JSON.

How hard: identity is not in global colour. On crops from `finprint.data.views.render_reid_views`
(10 individuals, 30 training views each, 10 held-out views with new pose, water, light and
occluders), an HSV-histogram nearest neighbour scores rank-1 0.12, while a tiny CNN (7 convs,
36 epochs, under a minute on 2 CPU cores) reaches 0.85-0.94 (tests/data/test_identity_learnable.py;
view seeds 11-13).

Reproducible: all randomness comes from one `np.random.default_rng(seed)`, JSON is written with
sorted keys, JPEGs at a fixed quality, no timestamps; the same seed gives the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from finprint.data.fish import Individual, Pose, make_lookalike, make_population, render_texture
from finprint.data.frame import Placement, Visible, mask_box_xyxy, mask_polygons, render_frame
from finprint.data.scene import WaterStyle, jitter_style, sample_camera_water, sample_view_style
from finprint.data.video import write_video
from finprint.data.views import render_view
from finprint.errors import ConfigError
from finprint.runtime.crops import crop_fish, polygon_mask

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
GENERATOR_VERSION = 2


@dataclass
class SynthConfig:
    out: Path
    images: int = 200
    individuals: int = 20
    unknown: int = 5
    video_seconds: float = 5.0
    width: int = 480
    height: int = 320
    seed: int = 0
    cameras: int = 2
    fps: int = 10
    frames_per_group: int = 5
    fish_per_image: tuple[int, int] = (4, 8)
    unknown_per_test_image: tuple[int, int] = (0, 2)
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    min_visible_fraction: float = 0.15
    min_visible_px: int = 60
    reid_min_visible: float = 0.6
    # Re-ID crops show only their fish (runtime/crops.py mask_background, from the ground-truth mask): for
    # an embedder whose manifest sets preprocess.crop_mask, which the daemon feeds the detector's masks.
    reid_masked: bool = False
    # ... through a mask as coarse as the detector's (ground truth at 1/N resolution, smoothed back up;
    # 0 = exact): the daemon's masks come from prototypes at stride 8 of the detector input.
    reid_mask_coarse: int = 0
    # Re-ID crops turned so that the fish's long axis (from its mask, coarse as above) lies along the crop
    # (runtime/crops.py crop_fish's `align`): for an embedder whose manifest sets preprocess.crop_align, which
    # the daemon turns by the detector's masks.
    reid_aligned: bool = False
    video_fish: int = 6  # fish per video (known), plus up to 2 unknown
    jpeg_quality: int = 92
    # Enrolment photos: extra views of every known fish (fresh pose, its camera's water, sometimes
    # behind another fish) added to reid/train, as a farm photographs a fish when it tags it.
    enrol_views: int = 0
    # Other fish, never on this farm (ids aux000..), reid/train only: the many identities a re-ID
    # embedder learns its metric from, so that a stranger is not pulled onto the nearest known fish.
    # Both are off by default: they need a longer schedule (experiments/2026-11-27-model-design).
    aux_individuals: int = 0
    aux_views: int = 12
    # Video of the auxiliary fish: clips of `aux_clip_fish` of them swimming together in one of the farm's
    # cameras (its water varied per clip), cut into reid/train crops every `aux_clip_crop_every`-th decoded
    # frame, as for the enrolment clips. The still views above are a render, not what the daemon sees (mp4
    # frames, fish passing in front of each other); these put the many identities of the metric in the
    # daemon's domain. The clips themselves are not kept. Own random stream; 0 = none. Off in every preset: the
    # embedder named fish no better with them (experiments/2026-11-27-model-design).
    aux_clip_seconds: float = 0.0
    aux_clip_fish: int = 5
    aux_clip_crop_every: int = 5
    # Processes that render the auxiliary clips (0 = one per CPU core); the bytes written do not depend on it.
    jobs: int = 0
    # Enrolment clips: enrol/<fish>.mp4, each known fish alone in front of one camera, as a farm films a
    # fish when it tags it. Enrolling from the daemon's own detections on video puts the gallery in the
    # domain of what the daemon later sees (mp4 frames, the detector's boxes), which still crops are not;
    # every `enrol_clip_crop_every`-th decoded clip frame also gives reid/train a crop (0 = none), so
    # the embedder learns the known fish in that domain too. Drawn from their own random stream:
    # images, labels and the farm videos are unchanged by these options.
    enrol_clip_seconds: float = 0.0
    enrol_clip_crop_every: int = 0
    # Also film every known fish in front of each other camera (enrol/<fish>_c<camera>.mp4): its
    # gallery then holds it in every pen's water and light. Own random stream.
    enrol_clip_every_camera: bool = False
    # Open-set tuning videos: tuning/cam<k>.mp4, one per camera, like videos/ (known fish with strangers)
    # but with their own strangers (ids str000..; never in videos/, images or reid/), as a farm films a
    # pen holding its tagged fish and a few fish from elsewhere to set how sure a match must be
    # (`finprint tune-open-set`). Own random stream: everything else is unchanged by this option.
    tuning_video_seconds: float = 0.0
    tuning_strangers: int = 6
    # Of those strangers, this many resemble a known fish (`fish.make_lookalike`: half its spots, its bars
    # and gill-cover spot, its shade), and every tuning video holds one of them: a farm's own strain looks
    # alike, and tune-open-set can only learn a margin for lookalikes it has seen. Own random stream.
    # These siblings did not stand in for a real lookalike (experiments/2026-11-28-gallery-whitening-and-splitting).
    tuning_lookalikes: int = 0
    overwrite: bool = False
    water: list[str] = field(default_factory=lambda: ["clear", "green", "turbid"])  # water type per camera, cycled

    def validate(self) -> None:
        if self.images < 3:
            raise ConfigError("images must be >= 3 (one group each for train, val and test)")
        if self.individuals < 1:
            raise ConfigError("individuals must be >= 1")
        if self.unknown < 0 or self.video_seconds < 0:
            raise ConfigError("unknown and video_seconds must be >= 0")
        if self.width < 64 or self.height < 64:
            raise ConfigError(f"size {self.width}x{self.height} is too small (minimum 64x64)")
        if self.cameras < 1:
            raise ConfigError("cameras must be >= 1")
        if not 0 <= self.val_fraction + self.test_fraction < 1:
            raise ConfigError("val_fraction + test_fraction must be in [0, 1)")
        if self.enrol_clip_seconds < 0 or self.enrol_clip_crop_every < 0:
            raise ConfigError("enrol_clip_seconds and enrol_clip_crop_every must be >= 0")
        if self.tuning_video_seconds < 0 or self.tuning_strangers < 0:
            raise ConfigError("tuning_video_seconds and tuning_strangers must be >= 0")
        if not 0 <= self.tuning_lookalikes <= self.tuning_strangers:
            raise ConfigError(f"tuning_lookalikes must be between 0 and tuning_strangers ({self.tuning_strangers}), "
                              f"got {self.tuning_lookalikes}")
        if self.enrol_views < 0 or self.aux_individuals < 0 or self.aux_views < 1:
            raise ConfigError("enrol_views and aux_individuals must be >= 0, aux_views >= 1")
        if self.aux_clip_seconds < 0 or self.aux_clip_fish < 1 or self.aux_clip_crop_every < 1:
            raise ConfigError("aux_clip_seconds must be >= 0, aux_clip_fish and aux_clip_crop_every >= 1")
        if self.reid_mask_coarse < 0:
            raise ConfigError(f"reid_mask_coarse must be >= 0 pixels, got {self.reid_mask_coarse}")
        if self.reid_mask_coarse and not (self.reid_masked or self.reid_aligned):
            raise ConfigError("reid_mask_coarse needs reid_masked or reid_aligned: plain crops use no mask")
        if not 0 < self.reid_min_visible <= 1:
            raise ConfigError(f"reid_min_visible must be in (0, 1], got {self.reid_min_visible}")
        if self.jobs < 0:
            raise ConfigError("jobs must be >= 0 (0 = one per CPU core)")


def _write_tuning_videos(
    folder: Path, cfg: SynthConfig, known: list[Individual], textures: dict[str, np.ndarray], cameras: list[dict]
) -> list[dict]:
    """One open-set tuning video per camera: known fish and three strangers of their own."""
    rng = np.random.default_rng([cfg.seed, 3])
    strangers = make_population(cfg.tuning_strangers - cfg.tuning_lookalikes, rng, prefix="str", unknown=True)
    look_rng = np.random.default_rng([cfg.seed, 9])
    lookalikes = [make_lookalike(known[int(look_rng.integers(len(known)))], f"str{len(strangers) + i:03d}", look_rng)
                  for i in range(cfg.tuning_lookalikes)]
    stranger_textures = {ind.id: render_texture(ind) for ind in strangers + lookalikes}
    folder.mkdir(parents=True, exist_ok=True)
    videos = []
    for k, camera in enumerate(tqdm(cameras, desc="open-set tuning videos", unit="camera", disable=None)):
        ids = sorted(rng.choice(len(known), size=min(cfg.video_fish, len(known)), replace=False))
        cast = [(known[i], textures[known[i].id]) for i in ids]
        # Three strangers per video, one of them a lookalike when there are any.
        others = 3 - (1 if lookalikes else 0)
        if strangers and others:
            picked = sorted(rng.choice(len(strangers), size=min(others, len(strangers)), replace=False))
            cast += [(strangers[i], stranger_textures[strangers[i].id]) for i in picked]
        if lookalikes:
            twin = lookalikes[k % len(lookalikes)]
            cast.append((twin, stranger_textures[twin.id]))
        videos.append(write_video(
            folder / f"cam{camera['id']}.mp4", {"id": camera["id"], "px_per_cm": camera["px_per_cm"]},
            camera["water"], cast, cfg.tuning_video_seconds, cfg.fps, cfg.width, cfg.height, rng, cfg.min_visible_px,
        ))
    return videos


def _write_extra_views(
    folder: Path,
    cfg: SynthConfig,
    known: list[Individual],
    textures: dict[str, np.ndarray],
    cameras: list[dict],
    counters: dict[tuple[str, str], int],
) -> tuple[int, list[tuple[Individual, np.ndarray]]]:
    """Enrolment views of the known fish and views of the auxiliary fish -> crops in reid/train; returns
    the number written and the auxiliary fish with their textures."""
    # Its own random stream: adding views leaves every frame, label and video byte-identical.
    rng = np.random.default_rng([cfg.seed, 7])
    aux = make_population(cfg.aux_individuals, rng, prefix="aux")
    aux_textures = {ind.id: render_texture(ind) for ind in aux}
    jobs = [(ind, textures[ind.id], cfg.enrol_views, False) for ind in known]
    jobs += [(ind, aux_textures[ind.id], cfg.aux_views, True) for ind in aux] if aux else []
    total = sum(n for *_, n, _ in jobs)
    aux_cast = [(ind, aux_textures[ind.id]) for ind in aux]
    if not total:
        return 0, aux_cast
    pool = list(textures.values()) + list(aux_textures.values())
    written = 0
    with tqdm(total=total, desc="re-ID views", unit="crop", disable=None, leave=False) as progress:
        for ind, texture, views, foreign in jobs:
            others = [t for t in pool if t is not texture]
            for _ in range(views):
                camera = cameras[int(rng.integers(len(cameras)))]
                style = sample_view_style(rng) if foreign else jitter_style(camera["water"], rng, amount=0.6)
                length_px = ind.length_cm * camera["px_per_cm"] * float(rng.uniform(0.9, 1.1))
                image, box, mask = render_view(texture, others, style, length_px, rng)
                n = counters.get(("train", ind.id), 0)
                counters[("train", ind.id)] = n + 1
                _write_jpeg(folder / f"{ind.id}_c{camera['id']}_{n:04d}.jpg", _reid_crop(cfg, image, box, mask=mask),
                            cfg.jpeg_quality)
                written += 1
                progress.update(1)
    return written, aux_cast


def _write_aux_clips(
    reid_train: Path, cfg: SynthConfig, aux: list[tuple[Individual, np.ndarray]], cameras: list[dict],
    counters: dict[tuple[str, str], int],
) -> int:
    """Clips of the auxiliary fish in the farm's cameras -> crops in reid/train (the clips are deleted).

    Clips render in parallel, each from its own random stream, and their crops are named in clip order,
    so the bytes do not depend on the number of processes."""
    order = np.random.default_rng([cfg.seed, 11]).permutation(len(aux))
    groups = [[aux[i] for i in order[j:j + cfg.aux_clip_fish]] for j in range(0, len(order), cfg.aux_clip_fish)]
    jobs = cfg.jobs or os.cpu_count() or 1
    written = 0
    with tempfile.TemporaryDirectory(prefix="finprint-aux-") as tmp:
        tasks = [(Path(tmp) / f"clip{k:04d}", cfg, group, cameras, k) for k, group in enumerate(groups)]
        with ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as pool:
            for staged in tqdm(pool.map(_aux_clip_crops, tasks), total=len(tasks), desc="auxiliary clips", unit="clip", disable=None):
                for crop in sorted(staged.glob("*.jpg")):
                    ident, cam, _ = crop.stem.rsplit("_", 2)
                    n = counters.get(("train", ident), 0)
                    counters[("train", ident)] = n + 1
                    crop.rename(reid_train / f"{ident}_{cam}_{n:04d}.jpg")
                    written += 1
                shutil.rmtree(staged)
    return written


def _aux_clip_crops(task: tuple[Path, SynthConfig, list[tuple[Individual, np.ndarray]], list[dict], int]) -> Path:
    """One auxiliary clip, rendered and cut into crops in its own folder (a worker process)."""
    folder, cfg, cast, cameras, k = task
    rng = np.random.default_rng([cfg.seed, 11, k])
    camera = cameras[int(rng.integers(len(cameras)))]
    folder.mkdir()
    clip = folder / "clip.mp4"
    write_video(
        clip, {"id": camera["id"], "px_per_cm": camera["px_per_cm"]}, jitter_style(camera["water"], rng, amount=0.6),
        cast, cfg.aux_clip_seconds, cfg.fps, cfg.width, cfg.height, rng, cfg.min_visible_px,
    )
    _clip_crops(clip, folder, cfg, {}, cfg.aux_clip_crop_every)
    return folder


@dataclass
class _Annotation:
    individual: Individual
    box_xyxy: np.ndarray
    polygons: list[np.ndarray]
    area: int
    visible_fraction: float


def _clip_crops(clip: Path, reid_train: Path, cfg: SynthConfig, reid_next: dict[tuple[str, str], int], every: int) -> int:
    """Crops of the fish in a written clip, cut from the decoded mp4 frames (codec artefacts included)."""
    truth = json.loads(clip.with_suffix(".json").read_text())
    frames = {f["frame"]: f["instances"] for f in truth["frames"]}
    cap = cv2.VideoCapture(str(clip))
    written = index = 0
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            if index % every == 0:
                for inst in frames.get(index, []):
                    if inst["visible_fraction"] < cfg.reid_min_visible:
                        continue
                    ident = inst["individual_id"]
                    n = reid_next.get(("train", ident), 0)
                    reid_next[("train", ident)] = n + 1
                    crop = _reid_crop(cfg, image, np.asarray(inst["box_xyxy"], np.float32), polygons=[inst["polygon"]])
                    _write_jpeg(reid_train / f"{ident}_c{truth['camera']}_{n:04d}.jpg", crop, cfg.jpeg_quality)
                    written += 1
            index += 1
    finally:
        cap.release()
    return written


def _farm_config(data: str | Path | None) -> dict:
    """The generator's config of the farm a crop folder or farm folder belongs to ({} for a plain folder)."""
    if data is None:
        return {}
    root = Path(data)
    farm_json = next((p / "farm.json" for p in (root, root.parent) if (p / "farm.json").is_file()), None)
    return json.loads(farm_json.read_text()).get("config", {}) if farm_json else {}


def reid_crops_masked(data: str | Path | None) -> bool:
    """Whether a farm's re-ID crops were written masked (`--reid-masked`): an embedder trained on them
    must be fed masked crops, so its export says so in the manifest. A plain crop folder: no."""
    return bool(_farm_config(data).get("reid_masked", False))


def reid_crops_aligned(data: str | Path | None) -> bool:
    """Whether a farm's re-ID crops were turned along the fish (`--reid-aligned`): the daemon must turn its
    crops the same way, so the export says so in the manifest (preprocess.crop_align)."""
    return bool(_farm_config(data).get("reid_aligned", False))


def embedder_crop_flags(data: str | Path | None) -> dict[str, bool]:
    """The preprocess flags an embedder trained on this farm's crops needs (Preprocess.crop_mask, crop_align)."""
    return {"crop_mask": reid_crops_masked(data), "crop_align": reid_crops_aligned(data)}


def _reid_mask(cfg: SynthConfig, mask: np.ndarray | None = None, polygons: list | None = None,
               shape: tuple[int, ...] = ()) -> np.ndarray | None:
    """The mask a re-ID crop is cut or turned with (given, or drawn from the polygons in a frame of `shape`):
    none when crops are plain, else the exact one or one as coarse as a detector's."""
    if not (cfg.reid_masked or cfg.reid_aligned):
        return None
    if mask is None:
        mask = polygon_mask(polygons or [], shape)
    k = cfg.reid_mask_coarse
    if k <= 1:
        return mask
    h, w = mask.shape[:2]
    small = cv2.resize(mask.astype(np.float32), (max(1, round(w / k)), max(1, round(h / k))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5


def _reid_crop(cfg: SynthConfig, image: np.ndarray, box: np.ndarray, mask: np.ndarray | None = None,
               polygons: list | None = None) -> np.ndarray:
    """A re-ID crop as the config asks: plain, masked and/or turned along the fish (`_reid_mask`)."""
    cut = _reid_mask(cfg, mask, polygons, image.shape)
    return crop_fish(image, box, mask=cut if cfg.reid_masked else None, align=cut if cfg.reid_aligned else None)


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise ConfigError(f"{out} exists and is not empty; pass --overwrite or pick another --out")
        if not (out / "farm.json").exists():
            raise ConfigError(f"{out} is not a farm folder (no farm.json); refusing to delete it")
        shutil.rmtree(out)
    for split in SPLITS:
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    for sub in ("annotations", "reid/train", "reid/gallery", "reid/query", "videos"):
        (out / sub).mkdir(parents=True, exist_ok=True)


def _split_groups(n_groups: int, cfg: SynthConfig, rng: np.random.Generator) -> list[str]:
    """Split name per group; every split gets at least one group."""
    order = rng.permutation(n_groups)
    n_test = max(1, int(round(cfg.test_fraction * n_groups)))
    n_val = max(1, int(round(cfg.val_fraction * n_groups))) if n_groups >= 3 else 0
    split = ["train"] * n_groups
    for rank, g in enumerate(order):
        if rank < n_test:
            split[g] = "test"
        elif rank < n_test + n_val:
            split[g] = "val"
    return split


def _annotate(visible: list[Visible], cast: list[Individual], cfg: SynthConfig) -> list[_Annotation]:
    anns = []
    for v in sorted(visible, key=lambda v: v.key):
        area = int(v.mask.sum())
        if area < cfg.min_visible_px or area < cfg.min_visible_fraction * v.full_area:
            continue
        polys = mask_polygons(v.mask, min_area=20.0)
        if not polys:
            continue
        anns.append(_Annotation(cast[v.key], mask_box_xyxy(v.mask), polys, area, area / max(v.full_area, 1)))
    return anns


def _write_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    path.write_bytes(buf.tobytes())


def _coco_annotation(ann_id: int, image_id: int, a: _Annotation) -> dict:
    x0, y0, x1, y1 = (float(v) for v in a.box_xyxy)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "segmentation": [[round(float(c), 2) for c in p.reshape(-1)] for p in a.polygons],
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": float(a.area),
        "iscrowd": 0,
        "individual_id": a.individual.id,
        "unknown": bool(a.individual.unknown),
        "length_cm": round(a.individual.length_cm, 2),
        "visible_fraction": round(a.visible_fraction, 3),
    }


def _yolo_line(a: _Annotation, width: int, height: int) -> str:
    poly = a.polygons[0]  # YOLO-seg holds one polygon per object: the largest visible part
    coords = " ".join(f"{x / width:.6f} {y / height:.6f}" for x, y in poly)
    return f"0 {coords}"


def _group_poses(n: int, cfg: SynthConfig, scales: list[float], rng: np.random.Generator) -> list[tuple[Pose, float, float, float]]:
    """Start pose, depth and per-frame drift (dx, dy) of each fish of a sequence."""
    out = []
    for k in range(n):
        length = scales[k]
        pose = Pose(
            cx=float(rng.uniform(-0.1, 1.1) * cfg.width),
            cy=float(rng.uniform(0.1, 0.9) * cfg.height),
            length_px=length,
            angle=float(rng.uniform(-0.4, 0.4)),
            facing_right=bool(rng.random() < 0.5),
            bend=float(rng.uniform(-0.08, 0.08)),
            bend_phase=float(rng.uniform(0, 2 * np.pi)),
        )
        speed = float(rng.uniform(0.05, 0.2) * length)
        out.append((pose, float(rng.uniform(0, 1)), speed, float(rng.uniform(-0.03, 0.03) * length)))
    return out


def _population(cfg: SynthConfig) -> tuple[np.random.Generator, list[Individual], list[Individual], dict[str, np.ndarray], list[dict]]:
    """The farm's fish and cameras, drawn first from the main random stream -> (that stream, known fish, unknown
    fish, every fish's texture, cameras)."""
    rng = np.random.default_rng(cfg.seed)
    known = make_population(cfg.individuals, rng, prefix="fish")
    unknown = make_population(cfg.unknown, rng, prefix="unk", unknown=True)
    textures = {ind.id: render_texture(ind) for ind in known + unknown}
    cameras = []
    for c in range(cfg.cameras):
        water = sample_camera_water(rng, cfg.water[c % len(cfg.water)] if cfg.water else None)
        cameras.append({"id": c + 1, "px_per_cm": round(float(rng.uniform(2.0, 3.0)), 3), "water": water})
    return rng, known, unknown, textures, cameras


# A farm's open-set tuning videos. Farms written before the rename keep them in calib/, which now means only
# INT8 calibration sets; `tuning_videos` reads either.
TUNING_DIR = "tuning"
OLD_TUNING_DIR = "calib"
# farm.json config keys of those farms -> today's SynthConfig fields.
OLD_CONFIG_NAMES = {"calib_video_seconds": "tuning_video_seconds", "calib_strangers": "tuning_strangers",
                    "calib_lookalikes": "tuning_lookalikes"}


def tuning_videos(farm: str | Path) -> list[Path]:
    """A farm's open-set tuning videos (tuning/cam<k>.mp4; calib/ in a farm written before the rename)."""
    farm = Path(farm)
    for name in (TUNING_DIR, OLD_TUNING_DIR):
        found = sorted((farm / name).glob("*.mp4"))
        if found:
            return found
    return []


def write_tuning_videos(farm: str | Path, out: str | Path, seconds: float) -> list[dict]:
    """A farm's open-set tuning videos written again at another length into `out` (cam<k>.mp4 and .json): the
    same cameras, known fish and strangers as its tuning/ (their own random stream, drawn after everything else,
    so the farm is otherwise untouched and one at this length from `synth --tuning-videos` would hold the same
    videos). More tuning video gives `finprint tune-open-set` more tracks to choose from."""
    farm, out = Path(farm), Path(out)
    doc_path = farm / "farm.json"
    if not doc_path.is_file():
        raise ConfigError(f"{farm}: no farm.json; is this a farm written by finprint data synth?")
    if seconds <= 0:
        raise ConfigError(f"--seconds must be positive, got {seconds:g}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: not empty; give a new folder (nothing there is overwritten)")
    config = json.loads(doc_path.read_text()).get("config")
    if not isinstance(config, dict):
        raise ConfigError(f"{doc_path}: no generator config (written by an older finprint)")
    fields = SynthConfig.__dataclass_fields__
    config = {OLD_CONFIG_NAMES.get(k, k): v for k, v in config.items()}
    cfg = SynthConfig(out=farm, **{k: v for k, v in config.items() if k in fields and k != "out"})
    cfg.tuning_video_seconds = float(seconds)
    cfg.validate()
    _, known, _, textures, cameras = _population(cfg)
    return _write_tuning_videos(out, cfg, known, textures, cameras)


def synthesize(cfg: SynthConfig) -> dict:
    """Write a whole farm under cfg.out; returns a summary (counts per split, crops, videos)."""
    cfg.validate()
    out = Path(cfg.out)
    _prepare_out(out, cfg.overwrite)
    rng, known, unknown, textures, cameras = _population(cfg)

    # Small farms get shorter sequences, so train, val and test each still get a group.
    per_group = max(1, min(cfg.frames_per_group, cfg.images // 3))
    n_groups = (cfg.images + per_group - 1) // per_group
    group_split = _split_groups(n_groups, cfg, rng)
    coco: dict[str, dict] = {s: {"images": [], "annotations": []} for s in SPLITS}
    reid_counts = {"train": 0, "gallery": 0, "query": 0}
    reid_next: dict[tuple[str, str], int] = {}
    reid_side: dict[str, tuple[str, int]] = {}  # fish -> (last test group, 0 gallery | 1 query)
    image_id = ann_id = 0
    progress = tqdm(total=cfg.images, desc="farm images", unit="img", disable=None)
    for g in range(n_groups):
        split = group_split[g]
        group = f"seq{g:03d}"
        camera = cameras[g % len(cameras)]
        style: WaterStyle = jitter_style(camera["water"], rng, amount=0.6)
        n_fish = int(rng.integers(cfg.fish_per_image[0], cfg.fish_per_image[1] + 1))
        cast = [known[i] for i in sorted(rng.choice(len(known), size=min(n_fish, len(known)), replace=False))]
        if split == "test" and unknown:
            n_unk = int(rng.integers(cfg.unknown_per_test_image[0], cfg.unknown_per_test_image[1] + 1))
            cast += [unknown[i] for i in sorted(rng.choice(len(unknown), size=min(n_unk, len(unknown)), replace=False))]
        scales = [ind.length_cm * camera["px_per_cm"] for ind in cast]
        starts = _group_poses(len(cast), cfg, scales, rng)
        n_frames = min(per_group, cfg.images - g * per_group)
        for f in range(n_frames):
            placements = []
            for k, (pose, depth, speed, drift_y) in enumerate(starts):
                step = speed * f * (1 if pose.facing_right else -1)
                moved = Pose(pose.cx + step, pose.cy + drift_y * f, pose.length_px, pose.angle, pose.facing_right,
                             pose.bend, pose.bend_phase + 1.1 * f)
                placements.append(Placement(k, textures[cast[k].id], moved, depth))
            image, visible = render_frame(placements, jitter_style(style, rng, amount=0.15), cfg.width, cfg.height, rng)
            name = f"{group}_c{camera['id']}_f{f:02d}"
            _write_jpeg(out / "images" / split / f"{name}.jpg", image, cfg.jpeg_quality)
            anns = _annotate(visible, cast, cfg)
            (out / "labels" / split / f"{name}.txt").write_text(
                "".join(_yolo_line(a, cfg.width, cfg.height) + "\n" for a in anns))
            coco[split]["images"].append({"id": image_id, "file_name": f"{name}.jpg", "width": cfg.width,
                                          "height": cfg.height, "camera": camera["id"], "group": group})
            for a in anns:
                coco[split]["annotations"].append(_coco_annotation(ann_id, image_id, a))
                ann_id += 1
                if a.visible_fraction < cfg.reid_min_visible or split == "val":
                    continue
                ident = a.individual.id
                if split == "train":
                    subset = "train"
                elif a.individual.unknown:
                    subset = "query"
                else:
                    # Whole groups alternate between gallery and query per fish: neighbouring frames are
                    # near-duplicates, and a query whose twin sits in the gallery measures nothing.
                    last_group, side = reid_side.get(ident, ("", 1))
                    if group != last_group:
                        side = 1 - side
                        reid_side[ident] = (group, side)
                    subset = "gallery" if side == 0 else "query"
                n = reid_next.get((subset, ident), 0)
                reid_next[(subset, ident)] = n + 1
                crop = _reid_crop(cfg, image, a.box_xyxy, polygons=a.polygons)
                _write_jpeg(out / "reid" / subset / f"{ident}_c{camera['id']}_{n:04d}.jpg", crop, cfg.jpeg_quality)
                reid_counts[subset] += 1
            image_id += 1
            progress.update(1)
    progress.close()

    extra_views, aux = _write_extra_views(out / "reid" / "train", cfg, known, textures, cameras, reid_next)
    reid_counts["train"] += extra_views
    if cfg.aux_clip_seconds > 0 and aux:
        reid_counts["train"] += _write_aux_clips(out / "reid" / "train", cfg, aux, cameras, reid_next)

    categories = [{"id": 1, "name": "fish", "supercategory": "animal"}]
    for split in SPLITS:
        doc = {"info": {"description": "finprint synthetic farm", "version": GENERATOR_VERSION, "seed": cfg.seed},
               "categories": categories, **coco[split]}
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc, sort_keys=True))

    videos = []
    if cfg.video_seconds > 0:
        for camera in cameras:
            n_known = min(cfg.video_fish, len(known))
            ids = sorted(rng.choice(len(known), size=n_known, replace=False))
            cast_v = [known[i] for i in ids]
            if unknown:
                cast_v += [unknown[i] for i in sorted(rng.choice(len(unknown), size=min(2, len(unknown)), replace=False))]
            videos.append(write_video(
                out / "videos" / f"cam{camera['id']}.mp4", {"id": camera["id"], "px_per_cm": camera["px_per_cm"]},
                camera["water"], [(ind, textures[ind.id]) for ind in cast_v], cfg.video_seconds, cfg.fps,
                cfg.width, cfg.height, rng, cfg.min_visible_px,
            ))

    enrol_clips = []
    if cfg.enrol_clip_seconds > 0:
        enrol_rng = np.random.default_rng([cfg.seed, 1])
        (out / "enrol").mkdir(exist_ok=True)
        for k, ind in enumerate(tqdm(known, desc="enrolment clips", unit="fish", disable=None)):
            camera = cameras[k % len(cameras)]
            enrol_clips.append(write_video(
                out / "enrol" / f"{ind.id}.mp4", {"id": camera["id"], "px_per_cm": camera["px_per_cm"]},
                camera["water"], [(ind, textures[ind.id])], cfg.enrol_clip_seconds, cfg.fps,
                cfg.width, cfg.height, enrol_rng, cfg.min_visible_px,
            ))
            if cfg.enrol_clip_crop_every:
                reid_counts["train"] += _clip_crops(out / "enrol" / f"{ind.id}.mp4", out / "reid" / "train", cfg, reid_next,
                                                       cfg.enrol_clip_crop_every)
        if cfg.enrol_clip_every_camera:
            other_rng = np.random.default_rng([cfg.seed, 4])
            for k, ind in enumerate(known):
                for j, camera in enumerate(cameras):
                    if j == k % len(cameras):
                        continue  # filmed above
                    enrol_clips.append(write_video(
                        out / "enrol" / f"{ind.id}_c{camera['id']}.mp4", {"id": camera["id"], "px_per_cm": camera["px_per_cm"]},
                        camera["water"], [(ind, textures[ind.id])], cfg.enrol_clip_seconds, cfg.fps,
                        cfg.width, cfg.height, other_rng, cfg.min_visible_px,
                    ))

    tuning_videos = _write_tuning_videos(out / TUNING_DIR, cfg, known, textures, cameras) if cfg.tuning_video_seconds > 0 else []

    summary = {
        "out": str(out),
        "images": {s: len(coco[s]["images"]) for s in SPLITS},
        "annotations": {s: len(coco[s]["annotations"]) for s in SPLITS},
        "reid": reid_counts,
        "videos": videos,
        "enrol_clips": enrol_clips,
        "tuning_videos": tuning_videos,
        "individuals": len(known),
        "unknown": len(unknown),
    }
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k not in ("out", "overwrite", "jobs")}
    farm = {
        "generator": "finprint.data.synth",
        "version": GENERATOR_VERSION,
        "seed": cfg.seed,
        "config": config,
        "individuals": [ind.to_json() for ind in known + unknown],
        "cameras": [{"id": c["id"], "px_per_cm": c["px_per_cm"], "water": c["water"].to_json()} for c in cameras],
        "split": {s: sorted({f"seq{g:03d}" for g in range(n_groups) if group_split[g] == s}) for s in SPLITS},
        "image_root": "images/<split>/<file_name>",
        "counts": {k: v for k, v in summary.items() if k != "out"},
    }
    (out / "farm.json").write_text(json.dumps(farm, sort_keys=True, indent=1))
    log.info("farm written to %s: %s", out, summary["images"])
    return summary
