"""Fish crops for embedder training: P identities x K views per batch, with underwater augmentation.

Crops are decoded once, stretched to the embedder's 64x128 input exactly as the runtime does
(`embedder_preprocess()`, resize "stretch"), and kept in memory as uint8; augmentation runs in uint8
BGR image space and `to_tensor` then applies the runtime's colour order and mean/std, so training
sees the tensors the daemon will see.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from finprint.data import load_reid
from finprint.data.types import Crop
from finprint.errors import DataError
from finprint.runtime.crops import embedder_preprocess
from finprint.runtime.manifest import Preprocess
from finprint.runtime.preprocess import to_tensor

log = logging.getLogger(__name__)


def read_crop(path: Path, pre: Preprocess) -> np.ndarray:
    """Decode a crop and stretch it to the network size (uint8 BGR), as runtime preprocessing does."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(path, "cannot decode image")
    return cv2.resize(image, (pre.width, pre.height), interpolation=cv2.INTER_LINEAR)


def read_crops(crops: list[Crop], pre: Preprocess, desc: str) -> np.ndarray:
    images = [read_crop(c.path, pre) for c in tqdm(crops, desc=desc, disable=None, leave=False)]
    if not images:
        return np.zeros((0, pre.height, pre.width, 3), np.uint8)
    return np.stack(images)


@dataclass
class Augment:
    """Underwater-style photometric and small geometric changes, all in uint8 BGR space."""

    p_cast: float = 0.8  # colour/water cast: per-channel gains, brightness, contrast
    p_blur: float = 0.3
    p_noise: float = 0.3
    p_affine: float = 0.7
    max_rotate_deg: float = 8.0
    max_scale: float = 0.1
    max_shift: float = 0.06
    # The crop is stretched to 64x128 whatever the box's aspect, so a tilted or bending fish (or a
    # detector's loose box) arrives thinner or fatter: scale the height by up to this much. Measured
    # on the demo farm's videos (embed-teacher-s, GT tracks): within one track of leaving it out.
    max_aspect: float = 0.25
    p_erase: float = 0.5  # random erasing (Zhong et al., 2020): occlusion by net, other fish, bubbles
    p_flip: float = 0.5  # a fish swimming the other way shows its markings mirrored in the crop

    def __call__(self, image: np.ndarray, rng: random.Random) -> np.ndarray:
        img = image.astype(np.float32)
        h, w = img.shape[:2]
        if rng.random() < self.p_flip:
            img = img[:, ::-1]
        if rng.random() < self.p_affine:
            angle = rng.uniform(-self.max_rotate_deg, self.max_rotate_deg)
            scale = 1.0 + rng.uniform(-self.max_scale, self.max_scale)
            m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
            aspect = 1.0 + rng.uniform(-self.max_aspect, self.max_aspect)
            m[1, :] = m[1, :] * aspect + np.array([0.0, 0.0, (1 - aspect) * h / 2])  # squash about the centre row
            m[0, 2] += rng.uniform(-self.max_shift, self.max_shift) * w
            m[1, 2] += rng.uniform(-self.max_shift, self.max_shift) * h
            img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if rng.random() < self.p_cast:
            # Water absorbs red first: casts lean green/blue; gains are B, G, R.
            gains = np.array([rng.uniform(0.85, 1.2), rng.uniform(0.85, 1.2), rng.uniform(0.65, 1.05)], np.float32)
            contrast, brightness = rng.uniform(0.7, 1.3), rng.uniform(-25, 25)
            mean = img.mean()
            img = (img - mean) * contrast + mean + brightness
            img = img * gains
        if rng.random() < self.p_blur:
            img = cv2.GaussianBlur(img, (0, 0), sigmaX=rng.uniform(0.5, 1.5))
        if rng.random() < self.p_noise:
            noise = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 10), img.shape)
            img = img + noise.astype(np.float32)
        if rng.random() < self.p_erase:
            eh, ew = int(h * rng.uniform(0.15, 0.5)), int(w * rng.uniform(0.1, 0.35))
            y0, x0 = rng.randrange(0, h - eh + 1), rng.randrange(0, w - ew + 1)
            img[y0 : y0 + eh, x0 : x0 + ew] = np.array([rng.uniform(0, 255) for _ in range(3)], np.float32)
        return np.clip(img, 0, 255).astype(np.uint8)


class IdentityViews(Dataset):
    """Item i = K augmented views of identity (i mod #identities): a plain shuffled DataLoader with
    batch_size P then yields P x K batches, which batch-hard triplet and relational KD need.

    With `set_partners` (hard identity pairs) an item also holds K views of one of that identity's
    nearest identities, so a batch of P items holds P such pairs: the batch-hard triplet then meets, for
    most anchors, the identity the embedder confuses it with, which a random batch of 16 out of 500
    identities almost never holds. Before the first table an item pairs with a random other identity."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        pre: Preprocess,
        views: int = 4,
        repeats: int = 4,
        augment: Augment | None = None,
        seed: int = 0,
        pairs: bool = False,
        aug_variants: int = 0,
    ) -> None:
        if views < 2:
            raise ValueError(f"need >= 2 views per identity, got {views}")
        self.images, self.labels, self.pre = images, labels, pre
        self.views, self.repeats, self.augment, self.seed = views, repeats, augment, seed
        by_label: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(labels.tolist()):
            by_label[label].append(index)
        self.identities = sorted(by_label)
        self.by_label = by_label
        self.pairs = pairs
        if pairs and len(self.identities) < 2:
            raise ValueError("identity pairs need at least 2 identities")
        # Row = an identity's label, columns = labels of its nearest identities (the caller's measure).
        self.partners: np.ndarray | None = None
        self._calls = 0
        # > 0: crop i is only ever seen as one of `aug_variants` fixed augmentations, so a teacher's embedding of
        # (i, variant) can be computed once and cached (EmbedTask.teacher_targets).
        self.aug_variants = aug_variants

    @property
    def num_classes(self) -> int:
        return len(self.identities)

    def set_partners(self, partners: np.ndarray) -> None:
        """Nearest identities by label: row l lists the labels an item of identity l may pair with.
        (DataLoader workers copy the dataset when an epoch starts, so with workers a new table reaches
        them at the next epoch.)"""
        if not self.pairs:
            raise ValueError("set_partners needs a dataset built with pairs=True")
        if partners.ndim != 2 or partners.shape[1] < 1 or partners.shape[0] <= max(self.identities):
            raise ValueError(f"partner table of shape {partners.shape} does not cover labels 0..{max(self.identities)}")
        self.partners = partners

    def __len__(self) -> int:
        return len(self.identities) * self.repeats

    def _views_of(self, label: int, rng: random.Random, keys: list[tuple[int, int]]) -> list[torch.Tensor]:
        members = self.by_label[label]
        chosen = rng.sample(members, self.views) if len(members) >= self.views else rng.choices(members, k=self.views)
        tensors = []
        for i in chosen:
            img, variant = self.images[i], 0
            if self.augment is not None and self.aug_variants:
                variant = rng.randrange(self.aug_variants)
                img = self.augment(img, random.Random(hash((self.seed, i, variant))))
            elif self.augment is not None:
                img = self.augment(img, rng)
            keys.append((i, variant))
            tensors.append(torch.from_numpy(to_tensor(img, self.pre)))
        return tensors

    def _partner_of(self, label: int, rng: random.Random) -> int:
        if self.partners is not None:
            candidates = [int(p) for p in self.partners[label] if int(p) != label and int(p) in self.by_label]
            if candidates:
                return rng.choice(candidates)
        return rng.choice([i for i in self.identities if i != label])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(views [K, 3, H, W], labels [K], keys [K, 2]: each view's crop index and augmentation variant)."""
        label = self.identities[index % len(self.identities)]
        # Fresh randomness per call (and per worker) but reproducible for a given seed and order.
        self._calls += 1
        rng = random.Random(hash((self.seed, index, self._calls, torch.initial_seed())))
        labels = [label] * self.views
        keys: list[tuple[int, int]] = []
        tensors = self._views_of(label, rng, keys)
        if self.pairs:
            partner = self._partner_of(label, rng)
            tensors += self._views_of(partner, rng, keys)
            labels += [partner] * self.views
        return torch.stack(tensors), torch.tensor(labels, dtype=torch.long), torch.tensor(keys, dtype=torch.long)


def collate_views(items: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.cat(parts) for parts in zip(*items, strict=True))


@dataclass
class ReidEvalData:
    """Preprocessed gallery/query tensors for validation (no augmentation)."""

    gallery: torch.Tensor
    gallery_ids: list[str]
    gallery_cams: list[str]
    query: torch.Tensor
    query_ids: list[str]
    query_cams: list[str]
    query_unknown: list[bool]


def held_out_identities(train: list[Crop], gallery: list[Crop], val_identities: int | str) -> set[str]:
    """Training identities kept out of training for validation ("auto": a tenth of them, at least 2, where the
    test identities are disjoint from the training ones as in Market-1501; none where they are shared, as
    on a farm whose gallery holds the fish it trained on)."""
    names = sorted({c.identity for c in train}, key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    if val_identities == "auto":
        disjoint = not ({c.identity for c in gallery} & set(names))
        count = max(2, round(0.1 * len(names))) if disjoint else 0
    else:
        count = int(val_identities)
    if count and len(names) - count < 2:
        raise DataError(gallery[0].path.parent if gallery else Path("."), f"val_identities={count} leaves fewer than 2 training identities")
    return set(names[:count])


def _split_in_time(crops: list[Crop]) -> tuple[list[Crop], list[Crop]]:
    """Each identity's crops in name (time) order: the first half a gallery, the second half queries."""
    by_id: dict[str, list[Crop]] = defaultdict(list)
    for c in sorted(crops, key=lambda c: c.path.name):
        by_id[c.identity].append(c)
    gallery, query = [], []
    for items in by_id.values():
        half = (len(items) + 1) // 2
        gallery += items[:half]
        query += items[half:]
    return gallery, query


def load_reid_splits(
    path: str | Path, pre: Preprocess | None = None, val_identities: int | str = "auto"
) -> tuple[np.ndarray, np.ndarray, list[str], ReidEvalData]:
    """A reid folder with train/ gallery/ query/ -> (train uint8 images, train labels, identity names, eval data).

    Validation (checkpoint selection) uses identities held out of train/ where `held_out_identities` says
    so, so the test gallery/query never picks the checkpoint; otherwise the folder's gallery/ and query/."""
    pre = pre or embedder_preprocess()
    root = Path(path)
    if (root / "reid").is_dir():  # a farm folder
        root = root / "reid"
    reid, skipped = load_reid(root)
    for s in skipped:
        log.warning("skipped %s", s)
    train = [c for c in reid.crops if c.subset == "train"]
    gallery = [c for c in reid.crops if c.subset == "gallery"]
    query = [c for c in reid.crops if c.subset == "query"]
    if not train or not gallery or not query:
        raise DataError(root, "embedder training needs train/, gallery/ and query/ crop folders")
    held_out = held_out_identities(train, gallery, val_identities)
    if held_out:
        gallery, query = _split_in_time([c for c in train if c.identity in held_out])
        train = [c for c in train if c.identity not in held_out]
        log.info("validation: %d training identities held out (first half of their crops enrolled, second half queried)", len(held_out))
    names = sorted({c.identity for c in train})
    if len(names) < 2:
        raise DataError(root / "train", f"need at least 2 identities to train, found {len(names)}")
    index = {n: i for i, n in enumerate(names)}
    train_images = read_crops(train, pre, "train crops")
    labels = np.array([index[c.identity] for c in train], np.int64)

    def tensors(crops: list[Crop], desc: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([to_tensor(im, pre) for im in read_crops(crops, pre, desc)]))

    eval_data = ReidEvalData(
        gallery=tensors(gallery, "gallery crops"),
        gallery_ids=[c.identity for c in gallery],
        gallery_cams=[c.camera for c in gallery],
        query=tensors(query, "query crops"),
        query_ids=[c.identity for c in query],
        query_cams=[c.camera for c in query],
        query_unknown=[c.identity not in {g.identity for g in gallery} for c in query],
    )
    log.info("reid %s: %d train crops of %d identities, %d gallery, %d query (%d unknown)", root, len(train),
             len(names), len(gallery), len(query), sum(eval_data.query_unknown))
    return train_images, labels, names, eval_data
