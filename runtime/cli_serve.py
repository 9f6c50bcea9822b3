"""`finprint serve --config farm.yaml`: validate the whole config, then run the daemon until signalled."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="farm.yaml: cameras, models, gallery, sinks")
    parser.add_argument("--check", action="store_true", help="validate the config and the models, then exit")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames (tests, soak)")


def run(args: argparse.Namespace) -> int:
    from finprint.runtime.config import load_config

    cfg = load_config(args.config)  # ConfigError -> one line, exit 2, before anything starts
    if args.check:
        from finprint.runtime.pipeline import Pipeline

        m = cfg.models
        pipeline = Pipeline(m.detector, m.embedder, m.backend, m.max_batch, m.score_threshold, m.open_set_threshold,
                            engine_cache=m.engine_cache)
        backends = f"{pipeline.detector.backend}/{pipeline.embedder.backend}"
        pipeline.close()
        print(f"{args.config}: ok ({len(cfg.cameras)} cameras, models load on {backends})")
        return 0
    from finprint.runtime.daemon import Daemon

    daemon = Daemon(cfg)
    return daemon.run_until_signalled(max_frames=args.max_frames)
