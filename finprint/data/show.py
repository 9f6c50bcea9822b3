"""`finprint data show`: a contact sheet to eyeball a dataset before training on it.

Frame datasets: a grid of frames sampled across groups, with boxes, mask overlays and identity
labels in one colour per identity (unknown fish get a red "?" tag). Re-ID folders: one row per
identity, its crops stretched to the embedder's 2:1 shape, labelled with camera and subset.
Everything is drawn at tile resolution so lines and text stay crisp whatever the source size.
"""

from __future__ import annotations

import colorsys
import hashlib
import logging
import random
from pathlib import Path

import cv2
import numpy as np

from finprint.data.coco import farm_splits, load_farm
from finprint.data.loaders import detect_format, load_detection
from finprint.data.reid import load_reid
from finprint.data.types import Crop, DetectionSet, Frame, ReidSet
from finprint.errors import DataError, FinprintError

log = logging.getLogger(__name__)

TILE = 320  # frame tile edge, pixels
CAPTION_H = 22
HEADER_H = 40
GAP = 6
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
MUTED = (150, 150, 150)
UNKNOWN_RED = (40, 40, 230)
FONT = cv2.FONT_HERSHEY_SIMPLEX
CROP_W, CROP_H = 192, 96  # the embedder's 128x64 input, 1.5x
ROW_LABEL_W = 150


def identity_colour(key: str) -> tuple[int, int, int]:
    """A stable, saturated BGR colour for an identity (or instance) key."""
    hue = 0.07 + 0.83 * int(hashlib.md5(key.encode()).hexdigest()[:6], 16) / 0xFFFFFF
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def instance_colour(index: int) -> tuple[int, int, int]:
    """Well-separated BGR colours (golden-ratio hue steps), never red: red marks unknown fish."""
    hue = 0.07 + 0.83 * ((0.05 + index * 0.618034) % 1.0)
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(path, "unreadable image")
    return image


def _text(canvas: np.ndarray, text: str, org: tuple[int, int], scale: float, colour, thickness: int = 1) -> None:
    cv2.putText(canvas, text, org, FONT, scale, colour, thickness, cv2.LINE_AA)


def _fit(text: str, width: int, scale: float) -> str:
    """Shorten text with an ellipsis until it fits `width` pixels."""
    while text and cv2.getTextSize(text, FONT, scale, 1)[0][0] > width:
        text = text[:-4] + "..." if len(text) > 4 else text[:-1]
    return text


def _tag(canvas: np.ndarray, text: str, x: int, y: int, colour) -> None:
    """A filled label above (x, y), kept inside the canvas."""
    scale = 0.42
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    x = int(np.clip(x, 0, canvas.shape[1] - tw - 4))
    y = int(np.clip(y, th + base + 2, canvas.shape[0]))
    cv2.rectangle(canvas, (x, y - th - base - 2), (x + tw + 4, y), colour, -1)
    luminance = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
    _text(canvas, text, (x + 2, y - base), scale, (0, 0, 0) if luminance > 140 else (255, 255, 255))


def content_bounds(image: np.ndarray, threshold: int = 12) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of the image inside any black letterbox borders the source export added
    (DeepFish frames are 16:9 video padded to 360x360); the whole image when there are none."""
    bright = image.max(axis=2) > threshold
    rows, cols = np.flatnonzero(bright.any(axis=1)), np.flatnonzero(bright.any(axis=0))
    if len(rows) < image.shape[0] // 8 or len(cols) < image.shape[1] // 8:
        return 0, 0, image.shape[1], image.shape[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def identity_palette(identities: set[str]) -> dict[str, tuple[int, int, int]]:
    """Distinct colours for a dataset's identities (hashing alone lets two neighbours collide)."""
    return {identity: instance_colour(k) for k, identity in enumerate(sorted(identities))}


def draw_frame(
    frame: Frame,
    class_names: list[str],
    tile_w: int = TILE,
    tile_h: int = TILE,
    palette: dict[str, tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """One frame, black borders trimmed, letterboxed into a tile with its annotations on top."""
    image = _read(frame.image_path)
    bx1, by1, bx2, by2 = content_bounds(image)
    image = image[by1:by2, bx1:bx2]
    h, w = image.shape[:2]
    scale = min(tile_w / w, tile_h / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    tile = np.full((tile_h, tile_w, 3), BACKGROUND, np.uint8)
    ox, oy = (tile_w - new_w) // 2, (tile_h - new_h) // 2
    tile[oy : oy + new_h, ox : ox + new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)

    def to_tile(points: np.ndarray) -> np.ndarray:
        return ((points - (bx1, by1)) * scale + (ox, oy)).round().astype(np.int32)

    colours = [
        (palette or {}).get(inst.individual_id) or identity_colour(inst.individual_id)
        if inst.individual_id
        else instance_colour(k)
        for k, inst in enumerate(frame.instances)
    ]
    overlay = tile.copy()
    for inst, colour in zip(frame.instances, colours, strict=True):
        for polygon in inst.polygons or []:
            cv2.fillPoly(overlay, [to_tile(polygon)], colour, cv2.LINE_AA)
    tile = cv2.addWeighted(overlay, 0.45, tile, 0.55, 0)
    for inst, colour in zip(frame.instances, colours, strict=True):
        for polygon in inst.polygons or []:
            cv2.polylines(tile, [to_tile(polygon)], True, colour, 1, cv2.LINE_AA)
        x1, y1, x2, y2 = to_tile(inst.box_xyxy.reshape(2, 2)).reshape(4)
        cv2.rectangle(tile, (x1, y1), (x2, y2), UNKNOWN_RED if inst.unknown else colour, 2, cv2.LINE_AA)
        if inst.individual_id:
            label = f"{inst.individual_id} ?" if inst.unknown else inst.individual_id
        else:
            label = class_names[inst.category] if inst.category < len(class_names) else str(inst.category)
        _tag(tile, label, x1, y1 - 1, UNKNOWN_RED if inst.unknown else colour)
    return tile


def _caption(frame: Frame, width: int) -> np.ndarray:
    strip = np.full((CAPTION_H, width, 3), BACKGROUND, np.uint8)
    count = f"{len(frame.instances)} fish" if frame.instances else "no fish"
    cw = cv2.getTextSize(count, FONT, 0.4, 1)[0][0]
    _text(strip, _fit(frame.image_path.stem, width - cw - 14, 0.4), (2, 15), 0.4, MUTED)
    _text(strip, count, (width - cw - 2, 15), 0.4, TEXT if frame.instances else MUTED)
    return strip


def sample_frames(frames: list[Frame], n: int, seed: int) -> list[Frame]:
    """n frames spread over the groups (round robin over shuffled groups, so one long video does
    not fill the sheet), with frames holding fish and empty frames in the dataset's proportion."""
    rng = random.Random(seed)
    full = [f for f in frames if f.instances]
    n_empty = min(len(frames) - len(full), round(n * (1 - len(full) / len(frames))))
    chosen = _round_robin(full, n - n_empty, rng) + _round_robin([f for f in frames if not f.instances], n_empty, rng)
    chosen = chosen[:n]
    rng.shuffle(chosen)
    return chosen


def _round_robin(frames: list[Frame], n: int, rng: random.Random) -> list[Frame]:
    by_group: dict[str, list[Frame]] = {}
    for frame in frames:
        by_group.setdefault(frame.group, []).append(frame)
    queues = [rng.sample(group, len(group)) for _, group in sorted(by_group.items())]
    rng.shuffle(queues)
    chosen: list[Frame] = []
    while len(chosen) < n and any(queues):
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop())
    return chosen


def grid_columns(count: int, tile_aspect: float, sheet_aspect: float = 1.5) -> int:
    """Columns that leave the fewest empty cells, then come closest to a `sheet_aspect` sheet."""
    def cost(cols: int) -> tuple[int, float]:
        rows = -(-count // cols)
        return rows * cols - count, abs(np.log(cols * tile_aspect / rows / sheet_aspect))

    return min(range(1, count + 1), key=cost)


def _header(width: int, title: str, subtitle: str) -> np.ndarray:
    strip = np.full((HEADER_H, width, 3), BACKGROUND, np.uint8)
    _text(strip, _fit(title, width - 12, 0.6), (GAP, 18), 0.6, TEXT, 1)
    _text(strip, _fit(subtitle, width - 12, 0.42), (GAP, 35), 0.42, MUTED)
    return strip


def _grid(tiles: list[np.ndarray], cols: int) -> np.ndarray:
    th, tw = tiles[0].shape[:2]
    rows = -(-len(tiles) // cols)
    sheet = np.full((rows * (th + GAP) + GAP, cols * (tw + GAP) + GAP, 3), BACKGROUND, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = GAP + r * (th + GAP), GAP + c * (tw + GAP)
        sheet[y : y + th, x : x + tw] = tile
    return sheet


def frame_sheet(dataset: DetectionSet, n: int = 16, seed: int = 0, title: str | None = None) -> np.ndarray:
    frames = sample_frames(dataset.frames, n, seed)
    # One tile shape for the sheet: the median aspect of the sampled frames' content.
    aspects = []
    for frame in frames:
        x1, y1, x2, y2 = content_bounds(_read(frame.image_path))
        aspects.append((x2 - x1) / (y2 - y1))
    aspect = float(np.clip(np.median(aspects), 0.75, 2.0))
    tile_h = round(TILE / aspect)
    palette = identity_palette({i.individual_id for f in dataset.frames for i in f.instances if i.individual_id})
    tiles = [
        np.vstack([draw_frame(f, dataset.class_names, TILE, tile_h, palette), _caption(f, TILE)]) for f in frames
    ]
    grid = _grid(tiles, grid_columns(len(tiles), TILE / (tile_h + CAPTION_H)))
    boxes = sum(len(f.instances) for f in dataset.frames)
    ids = {i.individual_id for f in dataset.frames for i in f.instances if i.individual_id}
    title = title or f"{dataset.root.name}  ({dataset.format})"
    subtitle = (
        f"{len(dataset.frames):,} images, {boxes:,} boxes, {len({f.group for f in dataset.frames})} groups"
        + (f", {len(ids)} identities" if ids else "")
        + f"  |  {len(frames)} frames sampled across groups, seed {seed}"
    )
    return np.vstack([_header(grid.shape[1], title, subtitle), grid])


def _crop_tile(crop: Crop, colour: tuple[int, int, int]) -> np.ndarray:
    tile = np.full((CROP_H + CAPTION_H, CROP_W, 3), BACKGROUND, np.uint8)
    tile[:CROP_H] = cv2.resize(_read(crop.path), (CROP_W, CROP_H), interpolation=cv2.INTER_AREA)
    cv2.rectangle(tile, (0, 0), (CROP_W - 1, CROP_H - 1), colour, 3)
    caption = " ".join(p for p in (crop.camera, crop.subset) if p) or crop.path.stem
    _text(tile, _fit(caption, CROP_W - 4, 0.4), (2, CROP_H + 15), 0.4, MUTED)
    return tile


def crop_sheet(dataset: ReidSet, n: int = 16, seed: int = 0, per_identity: int = 4) -> np.ndarray:
    """One row per sampled identity, up to `per_identity` crops each (different cameras first)."""
    rng = random.Random(seed)
    by_identity: dict[str, list[Crop]] = {}
    for crop in dataset.crops:
        by_identity.setdefault(crop.identity, []).append(crop)
    palette = identity_palette(set(by_identity))
    # Unknown fish are the open-set half of the problem: give them up to a quarter of the rows.
    n_rows = max(1, -(-n // per_identity))
    known = sorted(i for i, crops in by_identity.items() if not crops[0].unknown)
    unknown = sorted(i for i, crops in by_identity.items() if crops[0].unknown)
    rng.shuffle(known)
    rng.shuffle(unknown)
    n_unknown = min(len(unknown), max(1 if unknown else 0, n_rows // 4))
    identities = known[: n_rows - n_unknown] + unknown[:n_unknown]
    identities += [i for i in known + unknown if i not in identities][: n_rows - len(identities)]
    rows = []
    for identity in identities:
        crops = rng.sample(by_identity[identity], len(by_identity[identity]))
        picked, seen = [], set()
        for crop in crops:  # one per (subset, camera) first, so the row shows the identity's variety
            if (crop.subset, crop.camera) not in seen:
                picked.append(crop)
                seen.add((crop.subset, crop.camera))
        picked += [c for c in crops if c not in picked]
        unknown = by_identity[identity][0].unknown
        colour = UNKNOWN_RED if unknown else palette[identity]
        tiles = [_crop_tile(c, colour) for c in picked[:per_identity]]
        tiles += [np.full_like(tiles[0], BACKGROUND)] * (per_identity - len(tiles))
        label = np.full((CROP_H + CAPTION_H, ROW_LABEL_W, 3), BACKGROUND, np.uint8)
        cv2.rectangle(label, (0, 8), (8, CROP_H - 8), colour, -1)
        _text(label, _fit(identity, ROW_LABEL_W - 18, 0.55), (16, CROP_H // 2), 0.55, TEXT, 1)
        note = ("unknown, " if unknown else "") + f"{len(by_identity[identity])} crops"
        _text(label, note, (16, CROP_H // 2 + 20), 0.4, UNKNOWN_RED if unknown else MUTED)
        rows.append(np.hstack([label] + [np.hstack([np.full((CROP_H + CAPTION_H, GAP, 3), BACKGROUND, np.uint8), t]) for t in tiles]))
    grid = _grid(rows, 1)
    cameras = {c.camera for c in dataset.crops if c.camera}
    subtitle = (
        f"{len(dataset.crops):,} crops, {len(by_identity)} identities, {len(cameras)} cameras"
        f"  |  {len(rows)} identities sampled, seed {seed}; red = unknown (never in train)"
    )
    return np.vstack([_header(grid.shape[1], f"{dataset.root.parent.name}/{dataset.root.name}  (re-ID crops)", subtitle), grid])


RIGHT_GREEN = (80, 200, 80)


def matches_sheet(
    query: list[Crop], query_emb: np.ndarray, gallery: list[Crop], gallery_emb: np.ndarray, n: int = 8, k: int = 5, seed: int = 0
) -> np.ndarray:
    """`n` queries (evenly spread, reproducible) each followed by its top-`k` gallery crops by cosine
    similarity: green frame = the same identity, red = another; the similarity under each crop."""
    q = query_emb / np.maximum(np.linalg.norm(query_emb, axis=1, keepdims=True), 1e-12)
    g = gallery_emb / np.maximum(np.linalg.norm(gallery_emb, axis=1, keepdims=True), 1e-12)
    picks = sorted(random.Random(seed).sample(range(len(query)), min(n, len(query))))
    rows, right = [], 0
    for i in picks:
        sims = g @ q[i]
        top = np.argsort(-sims, kind="stable")[:k]
        right += gallery[top[0]].identity == query[i].identity
        tiles = [_crop_tile(query[i], MUTED)]
        for j in top:
            tile = _crop_tile(gallery[j], RIGHT_GREEN if gallery[j].identity == query[i].identity else UNKNOWN_RED)
            tile[CROP_H:] = BACKGROUND
            _text(tile, f"{gallery[j].identity}  {sims[j]:.2f}", (2, CROP_H + 15), 0.4, TEXT)
            tiles.append(tile)
        label = np.full((CROP_H + CAPTION_H, ROW_LABEL_W, 3), BACKGROUND, np.uint8)
        _text(label, _fit(query[i].identity, ROW_LABEL_W - 8, 0.55), (4, CROP_H // 2), 0.55, TEXT, 1)
        _text(label, "query, then top-5", (4, CROP_H // 2 + 20), 0.4, MUTED)
        rows.append(np.hstack([label] + [np.hstack([np.full((CROP_H + CAPTION_H, GAP, 3), BACKGROUND, np.uint8), t]) for t in tiles]))
    grid = _grid(rows, 1)
    subtitle = f"{right}/{len(picks)} right at rank 1  |  green = same identity, red = another; cosine similarity under each crop"
    return np.vstack([_header(grid.shape[1], "queries and their nearest gallery crops", subtitle), grid])


def plain_image_frames(folder: Path) -> DetectionSet:
    """A folder of unlabelled frames (e.g. a farm's tank footage) as a frame set without instances."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    if not paths:
        raise DataError(folder, "no images")
    frames = []
    for p in paths:
        h, w = _read(p).shape[:2]
        frames.append(Frame(p, w, h, [], group=p.stem.split("_")[0]))
    return DetectionSet(folder, "images", frames)


def predicted(dataset: DetectionSet, model: Path, frames: list[Frame]) -> tuple[list[Frame], float]:
    """`frames` with the exported detector's boxes and masks (at its manifest's score threshold) in place of
    their labels; also the detector's mean milliseconds per frame on this machine (ONNX Runtime CPU)."""
    import time

    from finprint.data.frame import mask_polygons
    from finprint.data.types import Instance
    from finprint.distill.evaluate import detect_frames
    from finprint.runtime.engines import open_engine
    from finprint.runtime.manifest import load_manifest, manifest_path_for

    manifest = load_manifest(manifest_path_for(model))
    if manifest.kind != "detector":
        raise FinprintError(f"{model}: --model must be an exported detector (its manifest says {manifest.kind})")
    engine = open_engine(model, backend="cpu", manifest=manifest, require_manifest=True)
    try:
        start = time.perf_counter()
        detections = detect_frames(engine, manifest.preprocess, frames, batch=1, score_threshold=manifest.score_threshold or 0.25,
                                   iou_threshold=manifest.iou_threshold or 0.6)
        ms = 1000 * (time.perf_counter() - start) / max(1, len(frames))
    finally:
        engine.close()
    out = []
    for frame, det in zip(frames, detections, strict=True):
        instances = [Instance(box, mask_polygons(det.masks[k]) if det.masks is not None else [])
                     for k, box in enumerate(det.boxes_xyxy)]
        out.append(Frame(frame.image_path, frame.width, frame.height, instances, group=frame.group))
    return out, ms


def show_dataset(
    path: str | Path, out: str | Path, n: int = 16, seed: int = 0, split: str | None = None, reid: bool = False,
    model: str | Path | None = None, groups: list[str] | None = None,
) -> Path:
    """Write a contact sheet of any supported dataset to `out` (PNG); returns its path. With `model` (an
    exported detector) the sheet shows its predictions on the sampled frames instead of the labels."""
    if n < 1:
        raise FinprintError(f"--n must be at least 1, got {n}")
    path, out = Path(path), Path(out)
    if model is not None:
        plain = path.is_dir() and not any((path / name).exists() for name in ("labels", "images", "annotations", "farm.json"))
        dataset = plain_image_frames(path) if plain else load_detection(path, split=split, skip_bad=True)[0]
        if groups:
            dataset = DetectionSet(dataset.root, dataset.format, [f for f in dataset.frames if f.group in set(groups)], dataset.class_names)
            if not dataset.frames:
                raise DataError(path, f"no frames in groups {groups}")
        chosen, ms = predicted(dataset, Path(model), sample_frames(dataset.frames, n, seed))
        counts = [len(f.instances) for f in chosen]
        sheet = frame_sheet(DetectionSet(dataset.root, dataset.format, chosen, dataset.class_names), n, seed,
                            title=f"{path.name}: predictions of {Path(model).name}")
        log.info("%s: %d frames, %s fish found per frame (mean %.1f), detector %.1f ms per frame", out, len(chosen), counts,
                 float(np.mean(counts)), ms)
        return _write_sheet(sheet, out)
    kind = detect_format(path)
    if kind == "reid" or reid:
        if kind == "farm":
            path = path / "reid"
        sheet = crop_sheet(load_reid(path, skip_bad=True)[0], n, seed)
    elif kind == "farm":
        splits = farm_splits(path)
        chosen = split or ("test" if "test" in splits else splits[0])
        dataset = load_farm(path, chosen, skip_bad=True)[0]
        sheet = frame_sheet(dataset, n, seed, title=f"{path.name}  (farm, {chosen} split; red = unknown fish)")
    else:
        sheet = frame_sheet(load_detection(path, split=split, skip_bad=True)[0], n, seed)
    return _write_sheet(sheet, out)


def _write_sheet(sheet: np.ndarray, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise FinprintError(f"could not write {out} (is the suffix .png or .jpg?)")
    log.info("wrote %s (%dx%d)", out, sheet.shape[1], sheet.shape[0])
    return out
