"""Modelling stage: builds the ResNet50 vectorizer, saves it, embeds the collection.

The collection is embedded with the model as *reloaded from disk*, the same artifact
serving loads, so the index and queries cannot drift apart. The inference model
records the precision (``modelling.precision``) and, for ``int8``, holds the model
quantised on a sample of the feature store, which embeds the collection and queries.

Usage (as ``dvc.yaml`` runs it)::

    python stages/modelling.py FEATURES_NPY VECTORS_NPY MODEL_DIR INFERENCE_MODEL_DIR
"""
import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from lib import cli
from lib.artifacts import clean_leftovers
from lib.config import load_config
from lib.precision import write_inference_model
from lib.resnet import ResNet50Helper
from lib.runtime import choose_runtime
from lib.vectorizer import MODEL_FILE, Vectorizer, run_embedding


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features", type=Path, help="feature store .npy (N, 224, 224, 3)")
    parser.add_argument("vectors", type=Path, help="output .npy (N, 2048) float32")
    parser.add_argument("model", type=Path, help="output directory of the saved Keras model")
    parser.add_argument("inference_model", type=Path,
                        help="output directory: the precision record (and the int8 model)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Reads params, saves the model, embeds the feature store."""
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    clean_leftovers(args.vectors, args.model)
    config = load_config(args.params)
    modelling = config.modelling
    choose_runtime(modelling.runtime, modelling.precision)    # e.g. no bf16: fail first
    helper = ResNet50Helper.from_config(modelling, config.etl)
    Vectorizer(helper.build(), batch_size=modelling.batch_size).save(args.model)
    write_inference_model(args.inference_model, args.model / MODEL_FILE, args.features,
                          modelling)
    vectorizer = Vectorizer.load(args.model, batch_size=modelling.batch_size,
                                 runtime=modelling.runtime, precision=modelling.precision,
                                 inference_model=args.inference_model)
    run_embedding(args.features, args.vectors, vectorizer, chunk_size=modelling.chunk_size)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
