"""Whitening stage: fits PCA whitening on the collection's vectors and saves it.

With ``whitening.dim: 0`` (the default) the artifact records that whitening is off,
and search stays the plain cosine of the design. The fit is a separate stage, so
changing the dimension never re-embeds the collection.

Usage (as ``dvc.yaml`` runs it)::

    python stages/whitening.py VECTORS_NPY WHITENING_NPZ
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
from lib.artifacts import clean_leftovers
from lib.config import load_config
from lib.retrieval import fit_whitening, save_whitening

logger = logging.getLogger(__name__)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vectors", type=Path, help="collection vectors .npy (N, D) float32")
    parser.add_argument("whitening", type=Path, help="output whitening artifact .npz")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Reads params, fits (or switches off) the whitening, saves it."""
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    clean_leftovers(args.whitening)
    dim = load_config(args.params).whitening.dim
    vectors = read_array(args.vectors, dtype=np.float32, ndim=2)
    whitening = fit_whitening(vectors, dim) if dim else None
    save_whitening(args.whitening, whitening, input_dim=vectors.shape[1],
                   rows=vectors.shape[0])
    logger.info("whitening %s", f"fitted: {vectors.shape[1]} -> {dim} dimensions on "
                f"{vectors.shape[0]} vectors" if dim else "off (whitening.dim: 0)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
