"""Index stage: builds the vector index serving ranks through (or records the exact scan).

The index covers the collection's vectors in the search space (their DBA vectors when
``augmentation.k`` is set, whitened when whitening is on). ``index.kind: auto`` keeps
the exact scan below ``index.exact_below`` rows, so small collections are searched
exactly as before. When the previous index (kept by DVC
as a persistent output) has the same kind and build params and all of its entries are
still in the collection, only the new vectors are added to it; otherwise it is rebuilt.

Usage (as ``dvc.yaml`` runs it)::

    python stages/index.py VECTORS_NPY WHITENING_NPZ INDEX_DIR [--augmented AUGMENTED_NPY]
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
from lib.arrays import read_array
from lib.config import load_config
from lib.retrieval import (
    build_index, load_augmented, load_previous, load_whitening, save_index)

logger = logging.getLogger(__name__)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vectors", type=Path, help="collection vectors .npy (N, D) float32")
    parser.add_argument("whitening", type=Path, help="whitening artifact .npz")
    parser.add_argument("index", type=Path, help="index folder (read, then replaced)")
    parser.add_argument("--augmented", type=Path, default=None,
                        help="the augmented vectors .npy (searched when DBA is on)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Reads params, builds or extends the index, saves it."""
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    settings = load_config(args.params)
    vectors = read_array(args.vectors, dtype=np.float32, ndim=2)
    whitening = load_whitening(args.whitening, vectors.shape[1], vectors.shape[0],
                               expected_dim=settings.whitening.dim)
    if args.augmented is not None:
        augmented = load_augmented(args.augmented, vectors, settings.augmentation.k)
        vectors = vectors if augmented is None else augmented                 # (N, D)
    index, action = build_index(vectors, whitening, settings.index,
                                previous=load_previous(args.index))
    save_index(args.index, index)
    logger.info("index: %s", action)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
