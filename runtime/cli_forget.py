"""`finprint forget`: remove an individual and its embeddings from the gallery."""

from __future__ import annotations

import argparse
from pathlib import Path

from finprint.errors import FinprintError
from finprint.runtime.cli_individuals import open_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gallery", required=True, type=Path, help="the gallery database (SQLite)")
    parser.add_argument("--id", required=True, dest="individual", help="the individual's name, e.g. fish007")


def run(args: argparse.Namespace) -> int:
    store = open_store(args.gallery, must_exist=True)
    try:
        if not store.forget(args.individual):
            raise FinprintError(f"{args.gallery}: no individual '{args.individual}'")
    finally:
        store.close()
    print(f"{args.individual}: removed from {args.gallery}")
    return 0
