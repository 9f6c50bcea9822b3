"""`finprint tune-open-set`: set how sure a match must be, and the tracker's settings, from labelled video.

tune-open-set --gallery DB --detector MODEL --embedder MODEL VIDEO...
    videos with ground truth (VIDEO.json) of enrolled fish and strangers; the chosen open-set rule and tracker
    settings are stored in the gallery, where the daemon and the scorer find them (runtime/tuned.py)
tune-open-set --gallery DB --embedder MODEL --from-reviews
    the threshold and margin only, from the tracks people judged on the daemon's page (tune/reviewed.py)

Either way the tuning must rest on enough tracks (`--min-tracks`, tune/search.py's floor): below it nothing is
stored, the gallery keeps its settings, and the command says so (exit 2).
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from finprint.errors import FinprintError
from finprint.runtime.cli_individuals import open_store
from finprint.tune.search import MIN_KNOWN_TRACKS, MIN_STRANGER_TRACKS, below_floor

if TYPE_CHECKING:
    from finprint.runtime.config import TrackingConfig
    from finprint.runtime.identity import Gallery


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gallery", required=True, type=Path, help="the gallery database (SQLite)")
    parser.add_argument("videos", nargs="*", type=Path,
                        help="labelled videos (ground truth in VIDEO.json beside each, as finprint data synth writes)")
    parser.add_argument("--from-reviews", action="store_true",
                        help="tune the threshold and margin on the tracks reviewed on the daemon's page instead of videos")
    parser.add_argument("--min-tracks", type=_int_list, default=(MIN_KNOWN_TRACKS, MIN_STRANGER_TRACKS), metavar="KNOWN,STRANGERS",
                        help=f"the floor: tune only on at least this many tracks of enrolled fish and of strangers "
                             f"(default {MIN_KNOWN_TRACKS},{MIN_STRANGER_TRACKS})")
    parser.add_argument("--detector", type=Path, help="the detector the daemon will run (with videos)")
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
    if len(args.min_tracks) != 2:
        raise FinprintError(f"--min-tracks: two numbers, KNOWN,STRANGERS (got {len(args.min_tracks)})")
    if args.from_reviews:
        if args.videos:
            raise FinprintError("--from-reviews tunes on reviewed tracks: give no videos")
        return _tune_from_reviews(args)
    if not args.videos:
        raise FinprintError("give labelled videos to tune on, or --from-reviews")
    if args.detector is None:
        raise FinprintError("--detector: the detector the daemon will run is needed with videos")
    return _tune(args)


def _tune_from_reviews(args: argparse.Namespace) -> int:
    """Threshold and margin from reviewed tracks; the tracker settings stay as they are."""
    import json

    from finprint.runtime.review import ensure_schema
    from finprint.runtime.tuned import file_digest
    from finprint.tune.reviewed import reviewed_outcomes
    from finprint.tune.search import goodness, tune

    if not args.embedder.is_file():
        raise FinprintError(f"{args.embedder}: no such embedder")
    store = open_store(args.gallery, must_exist=True)
    try:
        ensure_schema(store)
        found = reviewed_outcomes(store)
        known = sum(not o.truth_unknown for o in found.outcomes)
        strangers = len(found.outcomes) - known
        rests = (f"{found.confirmed} reviewed tracks confirmed as a known fish, {found.strangers} reviewed as a new fish, "
                 f"plus {found.enrolment_genuine} enrolment tracks held out of their fish and {found.enrolment_strangers} "
                 "enrolled fish held out of the gallery")
        why = below_floor(known, strangers, tuple(args.min_tracks))
        if why is not None:
            raise FinprintError(f"{args.gallery}: {why} ({rests})")
        tuned = tune(found.outcomes, args.min_known, args.min_unknown)
        print(f"tuned on {known} tracks of enrolled fish and {strangers} of strangers: {rests}")
        print(f"  threshold {tuned.threshold:.2f}, margin {tuned.margin:.2f}: known named right {100 * tuned.known_accuracy:.1f}%, "
              f"strangers flagged {100 * tuned.unknown_flag_rate:.1f}% (targets met: {goodness(tuned, args.min_known, args.min_unknown):.3f})")
        report = {"threshold": tuned.threshold, "margin": tuned.margin, "known_tracks": known, "unknown_tracks": strangers,
                  "known_accuracy": tuned.known_accuracy, "unknown_flag_rate": tuned.unknown_flag_rate,
                  "reviewed_confirmed": found.confirmed, "reviewed_strangers": found.strangers,
                  "enrolment_genuine": found.enrolment_genuine, "enrolment_strangers": found.enrolment_strangers,
                  "source": "reviews"}
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        if not args.dry_run:
            store.set_open_set(tuned.threshold, tuned.margin, args.embedder.name, file_digest(args.embedder),
                               f"{found.confirmed + found.strangers} reviewed tracks", None)
            print(f"stored in {args.gallery} (plain cosine matching; the tracker settings are unchanged)")
    finally:
        store.close()
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
    from finprint.tune.search import replay_trial

    for value in values:
        trying = base.model_copy(update={key: value})
        trial = replay_trial(chains, gallery, trying, args.min_known, args.min_unknown)
        # A setting that leaves fewer tracks than the floor (a long min_hits on short videos) is not judged on so few.
        if trial is not None and below_floor(trial.tuned.known_tracks, trial.tuned.unknown_tracks, tuple(args.min_tracks)) is None:
            yield value, trial, trying


SPACE_WORDS = {"embedder": "tracker in the embedder's space", "gallery": "tracker in the whitened space"}


def _tune(args: argparse.Namespace) -> int:
    import json

    from finprint.runtime.config import TrackingConfig
    from finprint.runtime.identity import WHITENING_STRENGTH
    from finprint.runtime.tuned import file_digest
    from finprint.tune.score import (
        detection_report,
        detector_recall,
        length_split,
        mixed_sentence,
        open_pipeline_and_gallery,
        replay_outcomes,
        run_chain,
        score_outcomes,
    )
    from finprint.tune.search import (
        APPEARANCE_GATES,
        HIGH_SCORES,
        MIN_HITS,
        SPLIT_WINDOWS,
        choose_min_hits,
        rates,
        replay_trial,
        tune_tracking,
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
    known_n = sum(not o.truth_unknown for o in outcomes)
    why = below_floor(known_n, len(outcomes) - known_n, tuple(args.min_tracks))
    if why is not None:
        raise FinprintError(f"{len(args.videos)} video(s) hold {why}; film more of the pens, or review tracks on the daemon's page")
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
        trials = [t for t in trials if below_floor(t.tuned.known_tracks, t.tuned.unknown_tracks, tuple(args.min_tracks)) is None]
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
        store = open_store(args.gallery, must_exist=True)
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
