"""`finprint data synth|tuning-videos|check|show|merge-reid` (`calib-videos`: the old name of `tuning-videos`).

`synth` is parsed by finprint.data.cli_synth, imported only when `synth` is chosen: its words are
collected verbatim here (the sub-parser treats nothing as an option) and handed to a parser that
cli_synth fills, so `finprint data synth --help` shows the generator's own options.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# No '-' prefix: every word after `synth`, `--out X` and `--help` included, lands in synth_argv.
_VERBATIM_PREFIX = "\x00"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="{synth,tuning-videos,check,show,merge-reid}", required=True)

    synth = sub.add_parser(
        "synth",
        help="generate a synthetic fish farm (frames, masks, identities, videos); see `data synth --help`",
        add_help=False,
        prefix_chars=_VERBATIM_PREFIX,
    )
    synth.add_argument("synth_argv", nargs="*")

    tuning = sub.add_parser(
        "tuning-videos",
        aliases=["calib-videos"],
        help="write a synthetic farm's open-set tuning videos again at another length",
        description="Write a synthetic farm's open-set tuning videos (tuning/) again at another length: the same "
        "cameras, known fish and strangers, the rest of the farm untouched. More tuning video gives "
        "finprint tune-open-set more tracks to choose its settings from.",
    )
    tuning.add_argument("farm", help="farm folder written by finprint data synth")
    tuning.add_argument("--seconds", type=float, required=True, help="length of each camera's tuning video")
    tuning.add_argument("--out", required=True, help="new folder for cam<k>.mp4 and their ground truth cam<k>.json")

    check = sub.add_parser(
        "check",
        help="validate a dataset (YOLO, COCO, farm, re-ID crops), print counts and the group split",
        description="Validate a dataset: every label and image is read; broken input exits 2 naming the file and line.",
    )
    check.add_argument("path", help="YOLO folder, COCO .json, farm folder or re-ID crop folder")
    check.add_argument(
        "--split-groups",
        metavar="G1,G2",
        help="validation groups (habitats / videos; identities for re-ID), comma-separated; "
        "default: whole groups chosen at random (seed 0) until 20%% of frames",
    )
    check.add_argument("--skip-bad", action="store_true", help="list bad items and carry on instead of failing")

    show = sub.add_parser(
        "show",
        help="draw a contact sheet of frames (boxes, masks, identities) or re-ID crops",
        description="Draw a contact sheet: a grid of frames with boxes, masks and identity labels, or of re-ID crops.",
    )
    show.add_argument("path", help="YOLO folder, COCO .json, farm folder or re-ID crop folder")
    show.add_argument("--out", required=True, help="PNG to write")
    show.add_argument("--n", type=int, default=16, help="frames (or crops) on the sheet (default 16)")
    show.add_argument("--seed", type=int, default=0, help="which frames are sampled (default 0)")
    show.add_argument("--split", help="farm split to draw from (default: test, where unknown fish appear)")
    show.add_argument("--reid", action="store_true", help="for a farm: draw its reid/ crops instead of frames")
    show.add_argument("--model", help="an exported detector (.onnx + manifest): draw its predictions instead of the labels "
                      "(also on a folder of unlabelled frames); logs the fish found per frame and ms per frame")
    show.add_argument("--groups", metavar="G1,G2", help="only frames of these groups (e.g. DeepFish validation habitats)")


    merge = sub.add_parser(
        "merge-reid",
        help="link several re-ID crop folders into one (identities prefixed by source) to train one embedder on all",
        description="Link several re-ID crop folders (train/ gallery/ query/, Market-1501 names; a farm folder's reid/) "
        "into one: every source's training crops, identities prefixed NAME-, and the gallery/query of the --eval-from "
        "sources only (what checkpoint selection validates on). Crops are symlinked, not copied.",
    )
    merge.add_argument("sources", nargs="+", metavar="NAME=FOLDER", help="e.g. f4k=../shared/data/f4k-tracklets farm=runs/farm")
    merge.add_argument("--out", required=True, type=Path, help="new folder to write (must not exist)")
    merge.add_argument("--eval-from", nargs="+", metavar="NAME", help="sources whose gallery/ and query/ are kept (default: all)")


def _run_synth(synth_argv: list[str]) -> int:
    from finprint.data import cli_synth

    parser = argparse.ArgumentParser(prog="finprint data synth", description="Generate a synthetic fish farm.")
    cli_synth.add_arguments(parser)
    return int(cli_synth.run(parser.parse_args(synth_argv)) or 0)


def run(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        return _run_synth(args.synth_argv)
    if args.data_command in ("tuning-videos", "calib-videos"):
        from finprint.data.synth import write_tuning_videos

        for video in write_tuning_videos(args.farm, args.out, args.seconds):
            print(f"wrote {Path(args.out) / video['video']}: {video['frames']} frames, {video['instances']} fish instances")
        return 0
    if args.data_command == "merge-reid":
        from finprint.data.reid_merge import merge_reid, parse_source

        sources = dict(parse_source(s) for s in args.sources)
        for name, counts in merge_reid(sources, args.out, args.eval_from).items():
            print(f"{name}: " + ", ".join(f"{counts[k]} {k}" for k in ("train", "gallery", "query")))
        print(f"wrote {args.out}")
        return 0
    if args.data_command == "check":
        from finprint.data.check import check_dataset

        groups = [g.strip() for g in args.split_groups.split(",") if g.strip()] if args.split_groups else None
        report = check_dataset(args.path, split_groups=groups, skip_bad=args.skip_bad)
        print(report.text())
        return 0
    from finprint.data.show import show_dataset

    groups = [g.strip() for g in args.groups.split(",") if g.strip()] if args.groups else None
    out = show_dataset(args.path, args.out, n=args.n, seed=args.seed, split=args.split, reid=args.reid, model=args.model, groups=groups)
    print(f"wrote {out}")
    return 0
