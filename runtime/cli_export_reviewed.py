"""`finprint export-reviewed --gallery DB --out DIR`: what people confirmed on the daemon's page, as training data.

DIR/reid/     the crops of every track confirmed as a fish ("this is", "new fish"), Market-1501 names
              `<pid>_c<camera>s1_<track>_<n>.jpg` (pid 0001.. per fish, camera per source, see DIR/reid.json), laid
              out as `finprint distill` / `finprint data check` read a farm: train/ every track but each fish's
              newest when it has two or more, which goes to query/; gallery/ the training crops (the farm's
              gallery holds the fish the embedder learnt), so validation asks "is the newest sighting that fish"
DIR/frames/   a sample of the reviewed tracks' whole frames: a calibration set's input (`finprint calib build --data`)

The farm's next student then learns from this farm's own fish. Nothing in the gallery or the review folder is
changed; an existing non-empty DIR is refused rather than mixed with.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from collections import Counter
from pathlib import Path

from finprint.errors import FinprintError
from finprint.runtime.cli_individuals import open_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gallery", required=True, type=Path, help="the gallery database the daemon reviews into")
    parser.add_argument("--out", required=True, type=Path, help="a new (or empty) folder to write")
    parser.add_argument("--review-folder", type=Path, default=None,
                        help="the daemon's review folder (review.folder; default: `review` beside the gallery)")
    parser.add_argument("--frames", type=int, default=128, help="whole frames to sample for calibration (default 128)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from finprint.runtime.review import ensure_schema, reviewed_tracks
    from finprint.runtime.web_auth import safe_file

    if args.frames < 0:
        raise FinprintError(f"--frames must be 0 or more, got {args.frames}")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise FinprintError(f"{args.out}: exists and is not an empty folder; choose a new one")
    folder = args.review_folder or args.gallery.parent / "review"
    if not folder.is_dir():
        raise FinprintError(f"{folder}: no review folder (the daemon writes one beside the gallery; or pass --review-folder)")
    store = open_store(args.gallery, must_exist=True)
    try:
        ensure_schema(store)
        confirmed = [(t, fish) for t, action, fish in reviewed_tracks(store) if action in ("confirm", "new") and fish]
    finally:
        store.close()
    if not confirmed:
        raise FinprintError(f"{args.gallery}: no track was confirmed as a fish on the review page yet")
    pids = {fish: f"{k:04d}" for k, fish in enumerate(sorted({f for _, f in confirmed}), start=1)}
    cams = {cam: f"c{k}" for k, cam in enumerate(sorted({t.camera for t, _ in confirmed}), start=1)}
    reid, frames_dir = args.out / "reid", args.out / "frames"
    reid.mkdir(parents=True)
    frames_dir.mkdir()
    for subset in ("train", "gallery", "query"):
        (reid / subset).mkdir()
    newest = {}  # each fish's newest track, held out as queries where the fish has older ones
    for n, (track, fish) in enumerate(confirmed):
        if fish not in newest or track.first_ts >= confirmed[newest[fish]][0].first_ts:
            newest[fish] = n
    tracks_of = Counter(fish for _, fish in confirmed)
    crops, frames, missing, queries = 0, [], 0, 0
    for n, (track, fish) in enumerate(confirmed):
        held = newest[fish] == n and tracks_of[fish] > 1
        for k, name in enumerate(track.crops):
            src = safe_file(folder, name)
            if src is None:
                missing += 1
                continue
            file = f"{pids[fish]}_{cams[track.camera]}s1_{n:06d}_{k:02d}.jpg"
            for subset in ("query",) if held else ("train", "gallery"):
                shutil.copyfile(src, reid / subset / file)
            crops += 1
            queries += held
        frame = safe_file(folder, track.frame) if track.frame else None
        if frame is not None:
            frames.append(frame)
    if not crops:
        shutil.rmtree(args.out)
        raise FinprintError(f"{folder}: none of the confirmed tracks' crops are there (moved or cleaned up?)")
    for frame in sorted(random.Random(args.seed).sample(frames, min(args.frames, len(frames)))):
        shutil.copyfile(frame, frames_dir / frame.name)
    (args.out / "reid.json").write_text(json.dumps({"identities": {pid: fish for fish, pid in pids.items()},
                                                    "cameras": {c: cam for cam, c in cams.items()}}, indent=2) + "\n")
    print(f"{args.out}: {crops} crops of {len(pids)} fish from {len(confirmed)} confirmed tracks in reid/ ({queries} of "
          f"them queries), {min(args.frames, len(frames))} frames in frames/"
          + (f"; {missing} crops missing from {folder}" if missing else ""))
    if not queries:
        print("  no fish was confirmed on two tracks yet: reid/query/ is empty, and `finprint distill` needs queries to "
              "validate on; review more tracks and export again")
    return 0
