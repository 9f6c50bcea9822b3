"""Train/validation splits that keep every group (habitat, video, identity) on one side only.

Neighbouring video frames are near-duplicates; a random frame split would leak them across the
split and flatter every validation number. Frames split by `Frame.group`, re-ID crops by identity.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from typing import TypeVar

from finprint.data.types import Crop, Frame
from finprint.errors import FinprintError

log = logging.getLogger(__name__)

Item = TypeVar("Item", Frame, Crop)


def group_of(item: Frame | Crop) -> str:
    """The split key: a frame's group, a crop's identity."""
    return item.identity if isinstance(item, Crop) else item.group


def split_by_group(
    frames: Sequence[Item],
    val_groups: Iterable[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[list[Item], list[Item]]:
    """(train, val) with no group on both sides.

    `val_groups` names the validation groups; otherwise whole groups, in a seeded random order,
    go to validation until it holds at least `val_fraction` of the items (at least one group, never
    every group; fewer than two groups is an error).
    """
    groups: dict[str, int] = {}
    for item in frames:
        groups[group_of(item)] = groups.get(group_of(item), 0) + 1
    if val_groups is not None:
        chosen = {str(g) for g in val_groups}
        missing = sorted(chosen - groups.keys())
        if missing:
            raise FinprintError(
                f"validation group(s) {', '.join(missing)} not in the data (groups: {', '.join(sorted(groups))})"
            )
    else:
        if not 0 < val_fraction < 1:
            raise FinprintError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        if len(groups) < 2:
            raise FinprintError(
                f"cannot split by group: the data has {len(groups)} group(s); name validation data with val_groups"
            )
        order = sorted(groups)
        random.Random(seed).shuffle(order)
        chosen, taken, target = set(), 0, val_fraction * len(frames)
        for group in order[: max(1, len(order) - 1)]:
            if taken >= target:
                break
            chosen.add(group)
            taken += groups[group]
    train = [f for f in frames if group_of(f) not in chosen]
    val = [f for f in frames if group_of(f) in chosen]
    leaked = {group_of(f) for f in train} & {group_of(f) for f in val}
    assert not leaked, f"groups on both sides of the split: {leaked}"
    log.info("split: %d train / %d val items, val groups %s", len(train), len(val), sorted(chosen))
    return train, val
