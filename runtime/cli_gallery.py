"""`finprint enroll | individuals | forget`: manage the gallery of known individuals.

enroll      --gallery DB --id NAME --embedder MODEL PATH...   crops (image files or folders of them)
            --gallery DB --id NAME --embedder MODEL --detector MODEL VIDEO [--track N]
                                                               a fish followed through a video
individuals --gallery DB                                       table: last seen, sightings, size trend
forget      --gallery DB --id NAME                             remove an individual and its embeddings
tune-open-set --gallery DB --detector MODEL --embedder MODEL VIDEO...
                                                               set how sure a match must be (and the tracker's
                                                               detection score and appearance gate), from videos with
                                                               ground truth (VIDEO.json) of enrolled fish and strangers
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from finprint.errors import FinprintError

if TYPE_CHECKING:
    from finprint.runtime.config import TrackingConfig
    from finprint.runtime.identity import Gallery

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov"}


def add_arguments_for(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gallery", required=True, type=Path, help="the gallery database (SQLite)")
    if name == "tune-open-set":
        parser.add_argument("videos", nargs="+", type=Path,
                            help="labelled videos (ground truth in VIDEO.json beside each, as finprint data synth writes)")
        parser.add_argument("--detector", required=True, type=Path, help="the detector the daemon will run")
        parser.add_argument("--embedder", required=True, type=Path, help="the embedder the daemon will run")
        parser.add_argument("--backend", default="auto", help="auto | tensorrt | ort-gpu | cpu")
        parser.add_argument("--min-known", type=float, default=0.95, help="target: known-fish tracks named right")
        parser.add_argument("--min-unknown", type=float, default=0.90, help="target: stranger tracks flagged unknown")
        parser.add_argument("--json", type=Path, help="also write the result here")
        parser.add_argument("--dry-run", action="store_true", help="report, do not store in the gallery")
        parser.add_argument("--high-scores", type=_float_list, default=None, metavar="S,S,...",
                            help="tracker confident-detection scores to try (default 0.2,0.25,0.3,0.35,0.4,0.5)")
        parser.add_argument("--gates", type=_gate_list, default=None, metavar="G,G,...",
                            help="tracker appearance gates to try, 'off' for boxes only (default off,0,0.1,0.2,0.3)")
        parser.add_argument("--min-hits", type=_int_list, default=None, metavar="N,N,...",
                            help="tracking.min_hits values to try besides the default 3 (a track is reported once seen "
                                 "in 2 x min_hits - 1 frames; default 5,10,15,20; '3' keeps the default, for a farm "
                                 "that wants brief glimpses of its fish counted)")
        parser.add_argument("--keep-tracking", action="store_true",
                            help="tune only the threshold and margin, for the tracker settings the daemon uses now")
        parser.add_argument("--no-whitening", action="store_true",
                            help="keep plain cosine matching (by default gallery whitening is also tried at the chosen "
                                 "tracker setting, with the tracker comparing fish in the embedder's space and in the "
                                 "whitened one, and kept when it meets the targets better)")
        return
    if name in ("enroll", "forget"):
        parser.add_argument("--id", required=True, dest="individual", help="the individual's name, e.g. fish007")
    if name == "enroll":
        parser.add_argument("paths", nargs="+", type=Path, help="crop images or folders of them, or one video")
        parser.add_argument("--embedder", required=True, type=Path, help="embedder model (.onnx or .engine)")
        parser.add_argument("--detector", type=Path, help="detector model, needed to enroll from a video")
        parser.add_argument("--track", type=int, default=None, help="video: which track (default: the longest)")
        parser.add_argument("--all-tracks", action="store_true",
                            help="video: every track (an enrolment clip that shows only this fish, leaving and re-entering)")
        # The daemon follows fish through boxes down to its tracker's low score, so the gallery should hold the
        # half-hidden, edge-on views those boxes show, not only what a fixed 0.5 (the old value) let through.
        # On the results farm: 10,557 embeddings instead of 9,192; the closest enrolled fish right for 89.4 %
        # instead of 88.8 % of the minute-long tuning videos' boxes, but 88.6 % either way on three minutes
        # per camera: no measurable gain in identity, kept because it enrols what the daemon sees.
        parser.add_argument("--min-score", type=float, default=None,
                            help="video: lowest detection score a frame's fish needs to be enrolled "
                                 "(default: the detector's own score threshold, from its manifest)")
        # 20 kept per 6 s clip scored below 60 on the results farm's tuning videos, and 200 spread over a
        # minute's clip about as well as all 600 frames (docs/DEPLOY.md): each kept frame is an angle to match.
        parser.add_argument("--max-samples", type=int, default=200,
                            help="embeddings kept per enrolment, spread evenly over it (default 200)")
        parser.add_argument("--backend", default="auto", help="auto | tensorrt | ort-gpu | cpu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments_for("enroll", parser)


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"scores must be in [0, 1], got {text!r}")
    return values


def _gate_list(text: str) -> tuple[float | None, ...]:
    try:
        values = tuple(None if v.strip().lower() == "off" else float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers or 'off' separated by commas, got {text!r}") from None
    if any(v is not None and not -1.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"gates are cosine similarities in [-1, 1], got {text!r}")
    return values


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"every value must be 1 or more, got {text!r}")
    return values


def _gate_text(gate: float | None) -> str:
    return "off" if gate is None else f"{gate:g}"


def run(args: argparse.Namespace) -> int:
    return {"enroll": _enroll, "individuals": _individuals, "forget": _forget, "tune-open-set": _tune}[args.command](args)


def _open_store(path: Path, must_exist: bool):
    from finprint.runtime.store import Store

    if must_exist and not path.is_file():
        raise FinprintError(f"{path}: no such gallery")
    if not path.parent.is_dir():
        raise FinprintError(f"{path}: folder {path.parent} does not exist")
    return Store(path)


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
    from finprint.runtime.store import model_identity, validate_individual_id

    validate_individual_id(args.individual)  # before any model runs or file is touched
    store = _open_store(args.gallery, must_exist=False)  # integrity-checked
    try:
        embedder = (args.embedder.name, model_identity(args.embedder)) if args.embedder.is_file() else None
        if embedder is not None:
            store.check_embedder(embedder[1], embedder[0])
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
        n = store.enroll(args.individual, embeddings, source=source, embedder=embedder)
        print(f"{args.individual}: enrolled {n} embeddings into {args.gallery}")
    finally:
        store.close()
    return 0


def _embeddings_from_video(args: argparse.Namespace, video: Path) -> np.ndarray:
    from finprint.runtime.pipeline import Pipeline
    from finprint.runtime.tracker import ByteTracker

    if args.min_score is not None and not 0.0 <= args.min_score <= 1.0:
        raise FinprintError(f"--min-score must lie in [0, 1], got {args.min_score}")
    pipeline = Pipeline(args.detector, args.embedder, args.backend, max_batch=1)
    min_score = pipeline.score_threshold if args.min_score is None else args.min_score
    tracker = ByteTracker(high_score=min_score, low_score=min_score, min_hits=1)
    per_track: dict[int, list[np.ndarray]] = {}
    try:
        for res in pipeline.process_video(video):
            for t in tracker.update(res.detections.boxes_xyxy, res.detections.scores):
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


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "never"


def size_trend(lengths_cm: list[float]) -> str:
    """First and last measured length and the change, e.g. '18.2 -> 19.0 cm (+0.8)'."""
    if not lengths_cm:
        return "-"
    first, last = lengths_cm[0], lengths_cm[-1]
    return f"{first:.1f} -> {last:.1f} cm ({last - first:+.1f})" if len(lengths_cm) > 1 else f"{first:.1f} cm"


def _individuals(args: argparse.Namespace) -> int:
    store = _open_store(args.gallery, must_exist=True)
    try:
        rows = store.individuals()
    finally:
        store.close()
    header = ("id", "last seen", "sightings", "embeddings", "size trend")
    table = [(r["id"], _fmt_time(r["last_seen"]), str(r["sightings"]), str(r["embeddings"]), size_trend(r["lengths_cm"]))
             for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h) for i, h in enumerate(header)]
    out = sys.stdout
    out.write("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip() + "\n")
    for row in table:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
    out.write(f"{len(table)} individuals\n")
    return 0


def _forget(args: argparse.Namespace) -> int:
    store = _open_store(args.gallery, must_exist=True)
    try:
        if not store.forget(args.individual):
            raise FinprintError(f"{args.gallery}: no individual '{args.individual}'")
    finally:
        store.close()
    print(f"{args.individual}: removed from {args.gallery}")
    return 0


def _whitening_text(report: dict, skipped: bool) -> str:
    if skipped:
        return "gallery whitening: not tried (--no-whitening)"
    if report["whitened_value"] is None:
        return "gallery whitening: could not be judged (no tracks of both kinds)"
    state = "off"
    if report["strength"] is not None:
        where = "the whitened space" if report.get("tracker_space") == "gallery" else "the embedder's space"
        state = f"on (strength {report['strength']:g}; the tracker compares fish in {where})"
    values = report.get("tracker_space_values") or {}
    if len(values) > 1:  # the whitened gallery was tried with the tracker in both spaces
        whitened = ", ".join(f"whitened {v:.3f} ({SPACE_WORDS[k]})" for k, v in values.items())
    else:
        whitened = f"whitened {report['whitened_value']:.3f}"
    return f"gallery whitening: {state}; how well the targets are met, plain {report['plain_value']:.3f}, {whitened}"


def _splitting_text(report: dict, kept: bool) -> str:
    window = report["window"]
    state = f"after {window} frames that mostly show another fish" if window else "off"
    if kept or not report["values"]:
        return f"track splitting: {state} (not tuned)"
    tried = ", ".join(f"{f'{w} frames' if w else 'none'} {v:.3f}" for w, v in report["values"].items())
    return f"track splitting: {state}; how well the targets are met, {tried}"


def _min_hits_text(report: dict, kept: bool) -> str:
    hits = report["min_hits"]
    state = f"min_hits {hits} (a track is reported once seen in {2 * hits - 1} frames)"
    if kept or len(report["values"]) < 2:
        return f"tracks reported: {state} (not tuned)"
    tried = ", ".join(f"{n} {v:.3f} ({100 * report['uncovered'][n]:.0f}%)" for n, v in report["values"].items())
    return (f"tracks reported: {state}; how well the targets are met at each min_hits (share of the fish instances "
            f"then under no reported track), {tried}")


def _variants(chains: list, gallery: Gallery, base: TrackingConfig, key: str, values: tuple,
              args: argparse.Namespace) -> Iterator[tuple]:
    """(value, its trial, its tracker settings) for each value of one tracker setting that gave tracks to tune on."""
    from finprint.runtime.open_set import replay_trial

    for value in values:
        trying = base.model_copy(update={key: value})
        trial = replay_trial(chains, gallery, trying, args.min_known, args.min_unknown)
        if trial is not None:
            yield value, trial, trying


SPACE_WORDS = {"embedder": "tracker in the embedder's space", "gallery": "tracker in the whitened space"}


def _tune(args: argparse.Namespace) -> int:
    import json

    from finprint.runtime.config import TrackingConfig
    from finprint.runtime.identity import WHITENING_STRENGTH
    from finprint.runtime.open_set import (
        APPEARANCE_GATES,
        HIGH_SCORES,
        MIN_HITS,
        SPLIT_WINDOWS,
        choose_min_hits,
        file_digest,
        rates,
        replay_trial,
        tune_tracking,
    )
    from finprint.runtime.score import (
        detection_report,
        detector_recall,
        length_split,
        mixed_sentence,
        open_pipeline_and_gallery,
        replay_outcomes,
        run_chain,
        score_outcomes,
    )

    for video in args.videos:
        if not video.is_file():
            raise FinprintError(f"{video}: no such video")
        if not video.with_suffix(".json").is_file():
            raise FinprintError(f"{video}: no ground truth {video.with_suffix('.json').name} beside it")
    pipeline, gallery, before, tracking = open_pipeline_and_gallery(args.gallery, args.detector, args.embedder, args.backend)
    if not gallery.individuals:
        pipeline.close()
        raise FinprintError(f"{args.gallery}: no individuals enrolled; enroll the farm's fish first")
    try:
        chains = [run_chain(video, video.with_suffix(".json"), pipeline) for video in args.videos]
    finally:
        pipeline.close()
    per_video = [(chain.fps, replay_outcomes(chain, gallery, tracking)[0]) for chain in chains]
    outcomes = [o for _, video_outcomes in per_video for o in video_outcomes]
    found = detector_recall(chains)
    k0, u0 = rates(outcomes, before.threshold, before.margin) if outcomes else (float("nan"), float("nan"))
    plain = gallery.with_whitening(None)  # the sweep matches as an untuned gallery does; whitening is tried after
    if args.keep_tracking:  # the tracker as the daemon would run it (config, else the gallery's tuned, else defaults)
        trial = replay_trial(chains, plain, tracking, args.min_known, args.min_unknown)
        if trial is None:
            raise FinprintError(f"cannot tune on {len(args.videos)} video(s): the tracks hold no enrolled fish or no stranger")
        trials = [trial]
    else:
        trials = tune_tracking(chains, plain, TrackingConfig(), args.high_scores or HIGH_SCORES,
                               args.gates or APPEARANCE_GATES, args.min_known, args.min_unknown)
        if not trials:
            raise FinprintError(f"cannot tune on {len(args.videos)} video(s): no tracker setting gave tracks of both "
                                "enrolled fish and strangers; are the videos' fish enrolled, and are there strangers in them?")
    best = trials[0]
    best_tracking = tracking if args.keep_tracking else TrackingConfig().model_copy(
        update={"high_score": best.high_score, "appearance_gate": best.appearance_gate})
    matched = plain
    whitening_report = {"strength": None, "plain_value": best.value, "whitened_value": None, "tracker_space": None,
                        "tracker_space_values": {}}
    if not args.no_whitening:
        # The tracker can compare looks in the embedder's space or in the whitened one: which tells a farm's
        # fish apart better at crossings differed between embedders (docs/ARCHITECTURE.md), so both are tried
        # when the tracker is being tuned.
        whitened = plain.with_whitening(WHITENING_STRENGTH)
        spaces = (best_tracking.appearance_space,) if args.keep_tracking else ("embedder", "gallery")
        for space, trial, trying in _variants(chains, whitened, best_tracking, "appearance_space", spaces, args):
            whitening_report["tracker_space_values"][space] = trial.value
            if trial.rank_key() < best.rank_key():
                best, matched, best_tracking = trial, whitened, trying
                whitening_report["strength"], whitening_report["tracker_space"] = WHITENING_STRENGTH, space
        if whitening_report["tracker_space_values"]:
            whitening_report["whitened_value"] = max(whitening_report["tracker_space_values"].values())
    # Splitting a track that has come to follow another fish helped one embedder and cost others
    # (docs/ARCHITECTURE.md): tried with the tracker and gallery chosen above.
    splitting_report: dict = {"window": best_tracking.split_window, "values": {}}
    if not args.keep_tracking:
        splitting_report["values"][0] = best.value
        for window, trial, trying in _variants(chains, matched, best_tracking, "split_window", SPLIT_WINDOWS, args):
            splitting_report["values"][window] = trial.value
            if trial.rank_key() < best.rank_key():
                best, best_tracking = trial, trying
                splitting_report["window"] = window
    # Waiting longer before reporting a track drops short tracks: mostly fish seen in part, which the embedder
    # names badly, but also brief sightings; so the report says how much of the fish each choice leaves untracked,
    # and choose_min_hits keeps the shorter wait unless the longer one names fish strictly better.
    by_hits = {best_tracking.min_hits: (best, best_tracking)}
    if not args.keep_tracking:
        tried = tuple(sorted(set(args.min_hits or MIN_HITS) - {best_tracking.min_hits}))
        by_hits.update((hits, (trial, trying)) for hits, trial, trying in
                       _variants(chains, matched, best_tracking, "min_hits", tried, args))
        best, best_tracking = by_hits[choose_min_hits({hits: trial for hits, (trial, _) in by_hits.items()})]
    hits_report = {"min_hits": best_tracking.min_hits,
                   "values": {hits: trial.value for hits, (trial, _) in sorted(by_hits.items())},
                   "uncovered": {hits: trial.uncovered for hits, (trial, _) in sorted(by_hits.items())}}
    tuned = best.tuned
    per_box = detection_report(chains, matched)
    covered: Counter = Counter()
    per_video = [(chain.fps, replay_outcomes(chain, matched, best_tracking, covered=covered)[0]) for chain in chains]
    by_length = length_split(per_video, tuned.threshold, tuned.margin)
    chosen = score_outcomes([o for _, outcomes in per_video for o in outcomes], tuned.threshold, tuned.margin,
                            covered=covered)
    report = {
        "threshold": tuned.threshold, "margin": tuned.margin,
        "known_tracks": tuned.known_tracks, "unknown_tracks": tuned.unknown_tracks,
        "known_accuracy": tuned.known_accuracy, "unknown_flag_rate": tuned.unknown_flag_rate,
        "tracking": {"high_score": best.high_score, "appearance_gate": best.appearance_gate,
                     "appearance_space": best_tracking.appearance_space, "split_window": best_tracking.split_window,
                     "min_hits": best_tracking.min_hits, "tuned": not args.keep_tracking},
        "before": {"threshold": before.threshold, "margin": before.margin, "source": before.source,
                   "high_score": tracking.high_score, "appearance_gate": tracking.appearance_gate,
                   "known_accuracy": k0, "unknown_flag_rate": u0},
        "trials": [{"high_score": t.high_score, "appearance_gate": t.appearance_gate, "threshold": t.tuned.threshold,
                    "margin": t.tuned.margin, "known_accuracy": t.tuned.known_accuracy,
                    "unknown_flag_rate": t.tuned.unknown_flag_rate, "tracks": t.tracks} for t in trials],
        "whitening": whitening_report,
        "splitting": splitting_report,
        "reporting": hits_report,
        "videos": [str(v) for v in args.videos],
        "per_detection": per_box.to_json(),
        "detector": found.to_json(),
        "by_track_length": by_length.to_json(),
        "mixed_wrong": chosen.mixed_wrong, "wrong_tracks": chosen.mistakes.total(),
        "known_frames": chosen.known_frames, "known_frames_right": chosen.known_frames_right,
        "unknown_frames": chosen.unknown_frames, "unknown_frames_flagged": chosen.unknown_frames_flagged,
        "covered": list(chosen.covered),
    }
    print(f"tuned on {tuned.known_tracks} tracks of enrolled fish and {tuned.unknown_tracks} of strangers "
          f"({len(args.videos)} video(s), {len(trials)} tracker setting(s) tried):")
    print(f"  tracker high_score {best.high_score:g}, appearance_gate {_gate_text(best.appearance_gate)}; threshold {tuned.threshold:.2f}, "
          f"margin {tuned.margin:.2f}: known named right {100 * tuned.known_accuracy:.1f}%, "
          f"strangers flagged {100 * tuned.unknown_flag_rate:.1f}%")
    print(f"  {_whitening_text(whitening_report, args.no_whitening)}")
    print(f"  {_splitting_text(splitting_report, args.keep_tracking)}")
    print(f"  {_min_hits_text(hits_report, args.keep_tracking)}")
    print(f"  before ({before.source}; tracker high_score {tracking.high_score:g}, appearance_gate "
          f"{_gate_text(tracking.appearance_gate)}): {100 * k0:.1f}% and {100 * u0:.1f}%")
    print(f"  {by_length.report()}")
    print(f"  {mixed_sentence(chosen.mixed_wrong, chosen.mistakes.total())}")
    for line in chosen.fragmentation_lines():
        print(f"  {line}")
    print(f"  {per_box.report()}")
    print(f"  {found.report()}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if not args.dry_run:
        store = _open_store(args.gallery, must_exist=True)
        try:
            tuned_on = ", ".join(v.name for v in args.videos)
            emb_sha = file_digest(args.embedder)
            store.set_open_set(tuned.threshold, tuned.margin, args.embedder.name, emb_sha, tuned_on, matched.whitening)
            if not args.keep_tracking:
                store.set_tracking(best.high_score, best.appearance_gate, args.detector.name, file_digest(args.detector),
                                   emb_sha, tuned_on, best_tracking.appearance_space, best_tracking.split_window,
                                   best_tracking.min_hits)
        finally:
            store.close()
        print(f"stored in {args.gallery}; the daemon uses it unless its config sets models.open_set_threshold/margin "
              "or tracking.high_score/appearance_gate/appearance_space/split_window/min_hits")
    return 0
