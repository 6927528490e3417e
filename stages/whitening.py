"""Whitening stage: the search space, fitted on the collection's vectors and saved.

PCA whitening (``whitening.dim``) and database-side augmentation (``augmentation.k``:
each vector summed with its nearest rows, ``lib.retrieval.augmentation``), each saved
as its own artifact. With ``whitening.dim: 0`` and ``augmentation.k: 0`` (the defaults)
the artifacts record that both are off, and search stays the plain cosine of the
design. A separate stage, so changing either never re-embeds the collection.

Usage (as ``dvc.yaml`` runs it)::

    python stages/whitening.py VECTORS_NPY WHITENING_NPZ [--augmented AUGMENTED_NPY]
"""
import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from lib import cli
from lib.arrays import read_array
from lib.artifacts import clean_leftovers
from lib.config import AugmentationConfig, load_config
from lib.retrieval import augment, fit_whitening, save_augmented, save_whitening

logger = logging.getLogger(__name__)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vectors", type=Path, help="collection vectors .npy (N, D) float32")
    parser.add_argument("whitening", type=Path, help="output whitening artifact .npz")
    parser.add_argument("--augmented", type=Path, default=None,
                        help="output augmented vectors .npy (a (0, D) record when off)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Reads params, fits (or switches off) the whitening and the augmentation, saves them."""
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    clean_leftovers(*[path for path in (args.whitening, args.augmented) if path is not None])
    settings = load_config(args.params)
    dim = settings.whitening.dim
    vectors = read_array(args.vectors, dtype=np.float32, ndim=2)
    whitening = fit_whitening(vectors, dim) if dim else None
    save_whitening(args.whitening, whitening, input_dim=vectors.shape[1],
                   rows=vectors.shape[0])
    logger.info("whitening %s", f"fitted: {vectors.shape[1]} -> {dim} dimensions on "
                f"{vectors.shape[0]} vectors" if dim else "off (whitening.dim: 0)")
    if args.augmented is not None:
        write_augmented(args.augmented, vectors, settings.augmentation)
    return 0


def write_augmented(path: Path, vectors: np.ndarray, settings: AugmentationConfig) -> None:
    """Augments the (N, D) vectors (or records that DBA is off) and saves the result."""
    started = time.perf_counter()
    augmented = augment(vectors, settings.k, settings.alpha) if settings.k else None
    save_augmented(path, augmented, dim=vectors.shape[1])
    logger.info("augmentation %s", f"of {vectors.shape[0]} vectors with their {settings.k} "
                f"nearest (alpha {settings.alpha:g}) in {time.perf_counter() - started:.1f} s"
                if settings.k else "off (augmentation.k: 0)")


if __name__ == "__main__":
    sys.exit(cli.run(main))
