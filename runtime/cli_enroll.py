"""`finprint enroll`: add an individual to the gallery.

enroll --gallery DB --id NAME --embedder MODEL PATH...              crops (image files or folders of them)
enroll --gallery DB --id NAME --embedder MODEL --detector MODEL VIDEO [--track N | --all-tracks]
                                                                    a fish followed through a video
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from finprint.errors import FinprintError
from finprint.runtime.cli_individuals import open_store

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gallery", required=True, type=Path, help="the gallery database (SQLite)")
    parser.add_argument("--id", required=True, dest="individual", help="the individual's name, e.g. fish007")
    parser.add_argument("paths", nargs="+", type=Path, help="crop images or folders of them, or one video")
    parser.add_argument("--embedder", required=True, type=Path, help="embedder model (.onnx or .engine)")
    parser.add_argument("--detector", type=Path, help="detector model, needed to enroll from a video")
    parser.add_argument("--track", type=int, default=None, help="video: which track (default: the longest)")
    parser.add_argument("--all-tracks", action="store_true",
                        help="video: every track (an enrolment clip that shows only this fish, leaving and re-entering)")
    # The daemon follows fish through boxes down to its tracker's low score, so the gallery holds the half-hidden,
    # edge-on views those boxes show (experiments/2026-11-27-track-identity).
    parser.add_argument("--min-score", type=float, default=None,
                        help="video: lowest detection score a frame's fish needs to be enrolled "
                             "(default: the detector's own score threshold, from its manifest)")
    # Each kept frame is an angle to match (experiments/2026-11-27-track-identity).
    parser.add_argument("--max-samples", type=int, default=200,
                        help="embeddings kept per enrolment, spread evenly over it (default 200)")
    parser.add_argument("--backend", default="auto", help="auto | tensorrt | ort-gpu | cpu")


def run(args: argparse.Namespace) -> int:
    return _enroll(args)


def _collect_images(paths: list[Path]) -> list[Path]:
    images: list[Path] = []
    for p in paths:
        if p.is_dir():
            images += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            images.append(p)
        else:
            raise FinprintError(f"{p}: not found")
    return images


def _sample(rows: np.ndarray, k: int) -> np.ndarray:
    if len(rows) <= k:
        return rows
    return rows[np.linspace(0, len(rows) - 1, k).round().astype(int)]


def _enroll(args: argparse.Namespace) -> int:
    import cv2

    from finprint.runtime.crops import embedder_preprocess
    from finprint.runtime.engines import find_manifest, open_engine
    from finprint.runtime.preprocess import preprocess_image

    store = open_store(args.gallery, must_exist=False)
    try:
        videos = [p for p in args.paths if p.suffix.lower() in VIDEO_SUFFIXES]
        if videos:
            if len(args.paths) != 1:
                raise FinprintError("enroll from a video takes exactly one video path")
            if args.detector is None:
                raise FinprintError("enroll from a video needs --detector to find the fish")
            if args.all_tracks and args.track is not None:
                raise FinprintError("--track and --all-tracks exclude each other")
            embeddings = _embeddings_from_video(args, videos[0])
            source = f"video:{videos[0].name}"
        else:
            images = _collect_images(args.paths)
            if not images:
                raise FinprintError("no crop images found in the given paths")
            manifest = find_manifest(args.embedder, None, False)
            pre = manifest.preprocess if manifest else embedder_preprocess()
            if pre.crop_mask or pre.crop_align:
                log.warning("%s reads crops %s by the fish's mask; still crops are used as they are, so cut them the same "
                            "way, or enroll from a video with --detector", args.embedder,
                            " and ".join(w for w, on in (("masked", pre.crop_mask), ("turned", pre.crop_align)) if on))
            engine = open_engine(args.embedder, args.backend, manifest=manifest)
            tensors = []
            for path in images:
                img = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if img is None:
                    raise FinprintError(f"{path}: not a readable image")
                tensors.append(preprocess_image(img, pre)[0])
            out = engine.infer({engine.inputs[0].name: np.stack(tensors)})
            engine.close()
            embeddings = next(iter(out.values()))
            source = f"crops:{len(images)}"
        embeddings = _sample(np.asarray(embeddings, np.float32), args.max_samples)
        n = store.enroll(args.individual, embeddings, source=source)
        print(f"{args.individual}: enrolled {n} embeddings into {args.gallery}")
    finally:
        store.close()
    return 0


def _embeddings_from_video(args: argparse.Namespace, video: Path) -> np.ndarray:
    from finprint.runtime.chain import CameraChain, ChainFrame
    from finprint.runtime.config import TrackingConfig
    from finprint.runtime.identity import DEFAULT_OPEN_SET_MARGIN, Gallery
    from finprint.runtime.pipeline import Pipeline

    if args.min_score is not None and not 0.0 <= args.min_score <= 1.0:
        raise FinprintError(f"--min-score must lie in [0, 1], got {args.min_score}")
    pipeline = Pipeline(args.detector, args.embedder, args.backend, max_batch=1)
    min_score = pipeline.score_threshold if args.min_score is None else args.min_score
    # The daemon's chain, with the tracker following boxes alone (no gallery to compare looks with yet) from the
    # first frame, on every box down to min_score.
    tracking = TrackingConfig(high_score=min_score, low_score=min_score, min_hits=1, appearance_gate=None)
    chain = CameraChain("enrol", tracking, Gallery(), DEFAULT_OPEN_SET_MARGIN)
    per_track: dict[int, list[np.ndarray]] = {}
    try:
        for index, res in enumerate(pipeline.process_video(video)):
            tracks, _ = chain.step(ChainFrame(res.detections.boxes_xyxy, res.detections.scores, res.embeddings), float(index))
            for t in tracks:
                per_track.setdefault(t.track_id, []).append(res.embeddings[t.det_index])
    finally:
        pipeline.close()
    if not per_track:
        raise FinprintError(f"{video}: no fish found with a detection score of at least {min_score:g}")
    if args.all_tracks:
        log.info("enrolling %d tracks (%d frames)", len(per_track), sum(map(len, per_track.values())))
        return np.concatenate([np.stack(rows) for _, rows in sorted(per_track.items())])
    track = args.track if args.track is not None else max(per_track, key=lambda k: len(per_track[k]))
    if track not in per_track:
        raise FinprintError(f"{video}: no track {track}; tracks found: {sorted(per_track)}")
    log.info("enrolling track %d (%d frames)", track, len(per_track[track]))
    return np.stack(per_track[track])


