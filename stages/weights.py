"""Weights stage: checks ``modelling.weights`` before the slow stages run.

Runs first (and again only when ``modelling.weights`` or this code changes), so that
unreachable, missing or wrong ResNet50 weights stop ``dvc repro`` at once with one
line, not after the ETL and feature engineering. With ``imagenet`` it downloads Keras'
file into Keras' cache if it is not there yet. Writes nothing: the ETL and feature
engineering do not depend on it, and the modelling stage checks the weights again
when it builds the model.

Usage (as ``dvc.yaml`` runs it)::

    python stages/weights.py [--params params.yaml]
"""
import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from lib import cli
from lib.config import load_config
from lib.embedding import resolve_weights

logger = logging.getLogger("stages.weights")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Reads ``modelling.weights`` and checks the file it leads to."""
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    weights = load_config(args.params).modelling.weights
    logger.info("modelling.weights %s: ResNet50 no-top weights in %s", weights,
                resolve_weights(weights))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
