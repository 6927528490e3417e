"""Near-duplicates: lists the groups of near-identical photos of the collection.

Every photo's nearest neighbours are found through the collection's index (the exact
scan, block by block, or the approximate index, re-scored by exact cosine); pairs at
or above ``duplicates.threshold`` cosine are joined into groups. Writes
``duplicates.json``, ``duplicates.csv`` and one picture per group (the photos side by
side) into the report folder. Loads the artifact versions ``dvc.lock`` pins, as
serving does (``--rev`` and ``--no-verify`` as in ``serve.py``); no model is loaded.
The report records the artifact hashes of that version: the service shows it
(``GET /duplicates`` and the page's Duplicates view) only while it serves that version.

Usage::

    python stages/duplicates.py [--threshold T] [--neighbours K] [--output DIR]
                                [--rev REV] [--no-verify]
"""
import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from lib import cli
from lib.arrays import read_array, row_view
from lib.artifacts import load_npy
from lib.config import DuplicatesConfig, load_config
from lib.errors import ConfigError
from lib.pinning import pin
from lib.retrieval import (
    check_index, find_pairs, group_pairs, load_index, load_whitening, write_report)

logger = logging.getLogger(__name__)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=None,
                        help="lowest cosine of a near-duplicate pair (default: "
                             "duplicates.threshold in params.yaml)")
    parser.add_argument("--neighbours", type=cli.positive_int, default=None,
                        help="neighbours examined per photo (default: duplicates.neighbours)")
    parser.add_argument("--output", type=Path, default=None,
                        help="report folder (default: duplicates.output), replaced")
    parser.add_argument("--rev", default=None, help="use the artifacts of this git revision")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip checking the artifacts against dvc.lock")
    return parser.parse_args(argv)


def settings(args: argparse.Namespace, config: DuplicatesConfig) -> DuplicatesConfig:
    """The params' settings, overridden by the command line (validated the same way)."""
    values = config.to_dict()
    for key in ("threshold", "neighbours", "output"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key) if key != "output" else str(args.output)
    if not -1.0 <= values["threshold"] <= 1.0:
        raise ConfigError(f"duplicates.threshold {values['threshold']} is not a cosine: "
                          "expected a number from -1 to 1")
    return DuplicatesConfig(**values)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Loads the pinned artifacts, finds the groups, writes the report."""
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    config = load_config(args.params)
    wanted = settings(args, config.duplicates)
    with pin(args.params.parent, config, rev=args.rev,
             verify=not args.no_verify) as pinned:        # arrays stay mapped after release
        built = pinned.config
        paths = pinned.paths
        vectors = read_array(paths["vectors"], dtype=np.float32, ndim=2)
        names = load_npy(paths["names"], kind="U", ndim=1)
        side = built.etl.image_size
        images = row_view(paths["images"], dtype=np.uint8, ndim=4,
                          trailing_shape=(side, side, 3))
        check_index(vectors, names, images)
        whitening = None
        if "whitening" in paths:
            whitening = load_whitening(paths["whitening"], vectors.shape[1], vectors.shape[0],
                                       expected_dim=built.whitening.dim)
        index = None
        if "index" in paths and built.augmentation.k:
            # The index holds the augmented vectors; duplicates compare the photos' own.
            logger.info("augmentation.k is set: the exact scan finds the duplicates")
        elif "index" in paths:
            index = load_index(paths["index"], vectors, whitening, built.index)
    pairs = find_pairs(vectors, whitening, index, built.index, wanted.threshold,
                       wanted.neighbours)
    groups = group_pairs(pairs)
    folder = write_report(wanted.output, groups, names, images, {
        "threshold": wanted.threshold, "neighbours": wanted.neighbours,
        "index": "exact" if index is None else index.kind, "photos": int(vectors.shape[0]),
        "version": pinned.version.describe(), "hashes": pinned.version.hashes},
        wanted.max_pictures)
    print(pinned.version.describe())
    print(f"{len(groups)} groups of near-duplicates ({sum(g.rows.shape[0] for g in groups)} "
          f"photos, {len(pairs)} pairs at cosine >= {wanted.threshold}) among "
          f"{vectors.shape[0]} photos: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
