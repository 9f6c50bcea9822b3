"""`finprint data synth`: write a synthetic fish farm (see finprint.data.synth for what it holds)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from finprint.errors import ConfigError

log = logging.getLogger(__name__)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 480x320, got {text!r}") from exc
    return w, h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="farm folder to create")
    parser.add_argument("--images", type=int, default=200, help="still images over train/val/test (default 200)")
    parser.add_argument("--individuals", type=int, default=20, help="known individuals (default 20)")
    parser.add_argument("--unknown", type=int, default=5, help="unknown individuals, test frames only (default 5)")
    parser.add_argument("--video-seconds", type=float, default=5.0, help="length of each camera's video; 0 = none")
    parser.add_argument("--size", type=_size, default=(480, 320), help="frame size WxH (default 480x320)")
    parser.add_argument("--enrol-clips", type=float, default=0.0, metavar="SECONDS",
                        help="an enrolment clip of every known fish alone, enrol/<fish>.mp4, this long (default 0: none)")
    parser.add_argument("--enrol-clips-every-camera", action="store_true",
                        help="also an enrolment clip of every known fish in front of each other camera, enrol/<fish>_c<k>.mp4")
    parser.add_argument("--enrol-clip-crop-every", type=int, default=0, metavar="N",
                        help="every Nth enrolment-clip frame also gives reid/train a crop of the fish (default 0: none)")
    parser.add_argument("--tuning-videos", "--calib-videos", type=float, default=0.0, metavar="SECONDS",
                        help="an open-set tuning video per camera, tuning/cam<k>.mp4, with strangers of its own, this long "
                             "(default 0: none; see finprint tune-open-set)")
    parser.add_argument("--tuning-strangers", "--calib-strangers", type=int, default=6,
                        help="strangers (str000..) the tuning videos draw three each from (default 6)")
    parser.add_argument("--tuning-lookalikes", "--calib-lookalikes", type=int, default=0, metavar="N",
                        help="of those strangers, N resemble a known fish (half its spots, its bars and shade); each "
                             "tuning video then holds one (default 0)")
    parser.add_argument("--enrol-views", type=int, default=0,
                        help="extra enrolment views of every known fish in reid/train (default 0)")
    parser.add_argument("--aux-individuals", type=int, default=0,
                        help="other fish, never on the farm, in reid/train for the embedder's metric (default 0)")
    parser.add_argument("--aux-views", type=int, default=12, help="views per auxiliary fish (default 12)")
    parser.add_argument("--aux-clips", type=float, default=0.0, metavar="SECONDS",
                        help="also film the auxiliary fish, --aux-clip-fish at a time, in the farm's cameras for this "
                             "long and add crops of the video to reid/train (default 0: none)")
    parser.add_argument("--aux-clip-fish", type=int, default=5, help="auxiliary fish per clip (default 5)")
    parser.add_argument("--aux-clip-crop-every", type=int, default=5, metavar="N",
                        help="every Nth auxiliary-clip frame gives each fish in it a crop (default 5)")
    parser.add_argument("--reid-min-visible", type=float, default=0.6, metavar="FRACTION",
                        help="a fish gives a re-ID crop only when at least this fraction of its body is visible "
                             "(default 0.6); lower it to teach the embedder partly hidden fish")
    parser.add_argument("--reid-masked", action="store_true",
                        help="re-ID crops show only their fish: everything outside its mask is blanked (for an "
                             "embedder that reads masked crops)")
    parser.add_argument("--reid-mask-coarse", type=int, default=0, metavar="PX",
                        help="with --reid-masked or --reid-aligned: use the mask at 1/PX resolution, smoothed back up, "
                             "as coarse as the detector's (default 0: exact)")
    parser.add_argument("--reid-aligned", action="store_true",
                        help="re-ID crops are turned so that the fish's long axis (from its mask) lies along the crop "
                             "(for an embedder that reads aligned crops; the daemon turns its crops by the detector's masks)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same bytes (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing farm at --out")


def run(args: argparse.Namespace) -> int:
    from finprint.data.synth import SynthConfig, synthesize

    width, height = args.size
    cfg = SynthConfig(
        out=args.out,
        images=args.images,
        individuals=args.individuals,
        unknown=args.unknown,
        video_seconds=args.video_seconds,
        width=width,
        height=height,
        seed=args.seed,
        enrol_views=args.enrol_views,
        enrol_clip_seconds=args.enrol_clips,
        enrol_clip_every_camera=args.enrol_clips_every_camera,
        tuning_video_seconds=args.tuning_videos,
        tuning_strangers=args.tuning_strangers,
        tuning_lookalikes=args.tuning_lookalikes,
        enrol_clip_crop_every=args.enrol_clip_crop_every,
        aux_individuals=args.aux_individuals,
        aux_views=args.aux_views,
        aux_clip_seconds=args.aux_clips,
        aux_clip_fish=args.aux_clip_fish,
        aux_clip_crop_every=args.aux_clip_crop_every,
        reid_min_visible=args.reid_min_visible,
        reid_masked=args.reid_masked,
        reid_mask_coarse=args.reid_mask_coarse,
        reid_aligned=args.reid_aligned,
        overwrite=args.overwrite,
    )
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a file, not a folder")
    start = time.monotonic()
    summary = synthesize(cfg)
    log.info("synthesised in %.1f s", time.monotonic() - start)
    print(json.dumps(summary, indent=1, sort_keys=True))
    return 0
