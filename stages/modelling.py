"""Modelling stage: builds the ResNet50 vectorizer, saves it, embeds the collection.

The collection is embedded with the model as *reloaded from disk*, the same artifact
serving loads, so the index and queries cannot drift apart: in this process
(``modelling.engine: local``) or by actors on a Ray cluster (``ray``, which connects
first, so that an unreachable cluster fails before any work).

Usage (as ``dvc.yaml`` runs it)::

    python stages/modelling.py FEATURES_NPY VECTORS_NPY MODEL_DIR
"""
import argparse
import contextlib
import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from lib import cli
from lib.config import load_config
from lib.ray_engine import ray_session, run_ray_embedding
from lib.resnet import ResNet50Helper
from lib.vectorizer import Vectorizer, run_embedding


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features", type=Path, help="feature store .npy (N, 224, 224, 3)")
    parser.add_argument("vectors", type=Path, help="output .npy (N, 2048) float32")
    parser.add_argument("model", type=Path, help="output directory of the saved Keras model")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Reads params, saves the model, embeds the feature store."""
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    config = load_config(args.params)
    modelling = config.modelling
    on_ray = modelling.engine == "ray"
    with ray_session(modelling.ray_address) if on_ray else contextlib.nullcontext():
        helper = ResNet50Helper.from_config(modelling, config.etl)
        Vectorizer(helper.build(), batch_size=modelling.batch_size).save(args.model)
        vectorizer = Vectorizer.load(args.model, batch_size=modelling.batch_size,
                                     runtime=modelling.runtime)
        if on_ray:
            run_ray_embedding(args.features, args.vectors, vectorizer, modelling)
        else:
            run_embedding(args.features, args.vectors, vectorizer,
                          chunk_size=modelling.chunk_size)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
