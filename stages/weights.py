"""Weights stage: checks ``modelling.weights`` before the slow stages run.

Runs first (also on a fresh clone, where its record is not built yet, and again when
``modelling.weights`` or this code changes), so that unreachable, missing or wrong
ResNet50 weights stop ``dvc repro`` at once with one line, before the ETL and feature
engineering. With ``imagenet`` it downloads Keras' file into Keras' cache if it is not
there yet. It writes a record of the weights it found, their SHA-256 (not their path,
which differs between machines): the modelling stage depends on it, so other weights
rebuild the model, the same weights elsewhere do not.

Usage (as ``dvc.yaml`` runs it)::

    python stages/weights.py RECORD_JSON [--params params.yaml]
"""
import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from lib import cli
from lib.artifacts import save_json
from lib.config import load_config
from lib.embedding import resolve_weights
from lib.incremental import file_sha256

logger = logging.getLogger("stages.weights")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("record", type=Path, help="output JSON: the weights' SHA-256")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Reads ``modelling.weights`` and checks the file it leads to."""
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    weights = load_config(args.params).modelling.weights
    found = resolve_weights(weights)
    logger.info("modelling.weights %s: ResNet50 no-top weights in %s", weights, found)
    save_json(args.record, {"sha256": file_sha256(found)})
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
