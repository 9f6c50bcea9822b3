"""Calibration sets for INT8: a representative, hashed selection of preprocessed model inputs.

Selection is stratified, not the first N: every image gets cheap statistics (brightness,
contrast, colour cast ~ turbidity, fish count) and falls into a stratum (tertiles of each
statistic x density bucket, empty frames their own bucket); strata are then visited round-robin
so rare conditions (dark, murky, crowded, empty) are represented. The selected images are
preprocessed by finprint.runtime.preprocess, exactly as the engine will see them in the field.

On disk (CALIB/):
  tensors.npy   float32 [N,3,H,W]
  calib.json    preprocess, per-item source path + sha256 of the source file and of its tensor,
                strata, and `set_sha256` (the set's hash, copied into each INT8 model's manifest)
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from finprint.errors import DataError, FinprintError
from finprint.runtime.manifest import Preprocess
from finprint.runtime.preprocess import preprocess_image

log = logging.getLogger(__name__)

CALIB_VERSION = 1
TENSORS_FILE = "tensors.npy"
MANIFEST_FILE = "calib.json"
FEATURES = ("brightness", "contrast", "colour_cast")


@dataclass
class Candidate:
    path: Path
    fish: int | None  # None = unknown (crop folders)


@dataclass
class CalibSet:
    root: Path
    tensors: np.ndarray  # [N,3,H,W] float32
    preprocess: Preprocess
    set_sha256: str
    items: list[dict]

    def __len__(self) -> int:
        return len(self.tensors)

    def batches(self, batch: int = 1):
        for i in range(0, len(self.tensors), batch):
            yield self.tensors[i : i + batch]


def list_candidates(data: str | Path, kind: str, exclude_groups: list[str] | None = None) -> list[Candidate]:
    """Images to choose from: detection frames (with fish counts) or re-ID crops. Frames of
    `exclude_groups` (the held-out habitats / videos) stay out, so the gate measures on unseen data."""
    data = Path(data)
    if not data.exists():
        raise DataError(data, "no such file or folder")
    if kind == "detector" and data.is_dir() and _is_plain_image_folder(data):
        # Unlabelled frames (e.g. a farm's own tank footage): light and colour strata, no fish count.
        return [Candidate(p, None) for p in sorted(data.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if kind == "embedder":
        from finprint.data import load_reid

        reid, _ = load_reid(data, skip_bad=True)
        return [Candidate(c.path, None) for c in reid.crops]
    from finprint.data import load_detection

    dets, skipped = load_detection(data, skip_bad=True)
    if skipped:
        log.warning("calib: %d bad items skipped in %s (first: %s)", len(skipped), data, skipped[0])
    excluded = set(exclude_groups or ())
    return [Candidate(f.image_path, len(f.instances)) for f in dets.frames if f.group not in excluded]


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _is_plain_image_folder(folder: Path) -> bool:
    if any((folder / name).exists() for name in ("labels", "annotations", "images", "farm.json")):
        return False
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def image_statistics(image_bgr: np.ndarray) -> dict[str, float]:
    """Light, contrast and colour cast: what distinguishes dawn/noon/night and clear/murky water."""
    small = cv2.resize(image_bgr, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    gray = small.mean(axis=2)
    b, g, r = (small[..., i].mean() for i in range(3))
    return {
        "brightness": float(gray.mean() / 255.0),
        "contrast": float(gray.std() / 255.0),
        # Turbid / deep water shifts towards green-blue and loses red.
        "colour_cast": float(((b + g) / 2 - r) / 255.0),
    }


def _density_bucket(fish: int | None) -> str:
    if fish is None:
        return "na"
    if fish == 0:
        return "empty"
    return "few" if fish <= 2 else "many"


def _tertile(values: np.ndarray) -> np.ndarray:
    edges = np.quantile(values, [1 / 3, 2 / 3])
    return np.digitize(values, edges)


def stratified_select(strata: list[str], size: int, seed: int = 0) -> list[int]:
    """Indices of `size` items visiting strata round-robin (shuffled within each), so every stratum
    present gets at least one item before any gets a second."""
    rng = random.Random(seed)
    by_stratum: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(strata):
        by_stratum[s].append(i)
    queues = []
    for key in sorted(by_stratum):
        members = by_stratum[key]
        rng.shuffle(members)
        queues.append(members)
    chosen: list[int] = []
    while len(chosen) < size and any(queues):
        for q in queues:
            if q and len(chosen) < size:
                chosen.append(q.pop())
    return sorted(chosen)


def _hash_array(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _set_hash(item_hashes: list[str], pre: Preprocess) -> str:
    # crop_mask and crop_align joined the preprocessing later: left out while off, so sets built before still verify.
    off = {flag for flag in ("crop_mask", "crop_align") if not getattr(pre, flag)}
    digest = hashlib.sha256(pre.model_dump_json(exclude=off or None).encode())
    for h in item_hashes:
        digest.update(h.encode())
    return digest.hexdigest()


def build_calibset(
    data: str | Path | list[str | Path],
    out: str | Path,
    preprocess: Preprocess,
    kind: str = "detector",
    size: int = 128,
    seed: int = 0,
    exclude_groups: list[str] | None = None,
) -> CalibSet:
    sources = data if isinstance(data, list) else [data]
    candidates = [c for source in sources for c in list_candidates(source, kind, exclude_groups)]
    where = Path(sources[0]) if len(sources) == 1 else Path(" + ".join(str(s) for s in sources))
    if not candidates:
        raise DataError(where, "no images found to calibrate on")
    stats: list[dict[str, float]] = []
    usable: list[Candidate] = []
    for cand in tqdm(candidates, desc="calib: image statistics", disable=None, leave=False):
        img = cv2.imread(str(cand.path), cv2.IMREAD_COLOR)
        if img is None:
            log.warning("calib: cannot read %s, skipped", cand.path)
            continue
        stats.append(image_statistics(img))
        usable.append(cand)
    if not usable:
        raise DataError(where, "no readable images to calibrate on")
    bins = {f: _tertile(np.array([s[f] for s in stats])) for f in FEATURES}
    strata = [
        f"b{bins['brightness'][i]}c{bins['contrast'][i]}t{bins['colour_cast'][i]}-{_density_bucket(c.fish)}"
        for i, c in enumerate(usable)
    ]
    chosen = stratified_select(strata, size, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = np.zeros((len(chosen), 3, preprocess.height, preprocess.width), np.float32)
    items = []
    for row, idx in enumerate(tqdm(chosen, desc="calib: preprocess", disable=None, leave=False)):
        cand = usable[idx]
        img = cv2.imread(str(cand.path), cv2.IMREAD_COLOR)
        tensors[row], _ = preprocess_image(img, preprocess)
        items.append(
            {
                "source": str(cand.path),
                "source_sha256": hashlib.sha256(cand.path.read_bytes()).hexdigest(),
                "tensor_sha256": _hash_array(tensors[row]),
                "stratum": strata[idx],
                "fish": cand.fish,
                **{k: round(v, 4) for k, v in stats[idx].items()},
            }
        )
    np.save(out / TENSORS_FILE, tensors)
    set_sha = _set_hash([it["tensor_sha256"] for it in items], preprocess)
    covered = sorted({it["stratum"] for it in items})
    manifest = {
        "calib_version": CALIB_VERSION,
        "kind": kind,
        "data": [str(s) for s in sources] if len(sources) > 1 else str(sources[0]),
        "size": len(items),
        "candidates": len(usable),
        "seed": seed,
        "excluded_groups": sorted(exclude_groups or []),
        "preprocess": preprocess.model_dump(),
        "set_sha256": set_sha,
        "strata_total": len(set(strata)),
        "strata_covered": covered,
        "items": items,
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("calib: %d of %d images, %d/%d strata, set %s", len(items), len(usable), len(covered), len(set(strata)), set_sha[:12])
    return CalibSet(out, tensors, preprocess, set_sha, items)


def save_tensors_as_calibset(tensors: np.ndarray, out: str | Path, preprocess: Preprocess, sources: list[str] | None = None) -> CalibSet:
    """A calibration set from tensors already preprocessed (held-out slices, tests, experiments)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = np.ascontiguousarray(tensors, dtype=np.float32)
    items = [
        {"source": (sources[i] if sources else f"tensor:{i}"), "tensor_sha256": _hash_array(t)} for i, t in enumerate(tensors)
    ]
    set_sha = _set_hash([it["tensor_sha256"] for it in items], preprocess)
    np.save(out / TENSORS_FILE, tensors)
    manifest = {"calib_version": CALIB_VERSION, "size": len(items), "preprocess": preprocess.model_dump(), "set_sha256": set_sha, "items": items}
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return CalibSet(out, tensors, preprocess, set_sha, items)


def load_calibset(path: str | Path, expect: Preprocess | None = None) -> CalibSet:
    """Read a calibration set, checking every tensor against its recorded hash and, when given, that
    it was preprocessed the way the model to quantise expects."""
    root = Path(path)
    mpath, tpath = root / MANIFEST_FILE, root / TENSORS_FILE
    if not mpath.is_file() or not tpath.is_file():
        raise FinprintError(f"{root}: not a calibration set (needs {MANIFEST_FILE} and {TENSORS_FILE}); build one with `finprint calib build`")
    try:
        manifest = json.loads(mpath.read_text())
        tensors = np.load(tpath, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FinprintError(f"{root}: unreadable calibration set ({exc}); rebuild it with `finprint calib build`") from exc
    pre = Preprocess.model_validate(manifest["preprocess"])
    items = manifest["items"]
    if len(items) != len(tensors):
        raise FinprintError(f"{root}: {len(tensors)} tensors but {len(items)} items in {MANIFEST_FILE}; rebuild it")
    for i, (t, item) in enumerate(zip(tensors, items, strict=True)):
        if _hash_array(t) != item["tensor_sha256"]:
            raise FinprintError(f"{root}: tensor {i} ({item['source']}) does not match its sha256; rebuild the set")
    if _set_hash([it["tensor_sha256"] for it in items], pre) != manifest["set_sha256"]:
        raise FinprintError(f"{root}: set hash does not match its items; rebuild the set")
    if expect is not None and expect != pre:
        def said(p: Preprocess) -> str:
            return (f"{p.width}x{p.height} {p.resize} mean={p.mean}" + (" masked crops" if p.crop_mask else "")
                    + (" aligned crops" if p.crop_align else ""))

        raise FinprintError(f"{root}: calibrated with preprocessing {said(pre)}, but the model expects {said(expect)}; "
                            "rebuild with matching --imgsz/--kind (and crops as the model was trained on)")
    return CalibSet(root, tensors, pre, manifest["set_sha256"], items)
