"""Feature-engineering stage: RGB ``uint8`` images -> ResNet50 ``preprocess_input`` floats.

Usage (as ``dvc.yaml`` runs it)::

    python stages/feature_engineering.py IMAGES_NPY FEATURES_NPY \
        --upstream-rows LANDING_ROWS_NPZ --rows ROWS_NPZ

With the row indexes, only rows not in the previous output are computed (see
``lib/incremental/rows.py``); the others are copied from it, read from DVC's cache.
With ``storage.shard_rows`` > 0 the feature store is a folder of shards (``lib/arrays``).
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
from lib.embedding import run_feature_engineering
from lib.arrays import Layout
from lib.incremental import add_row_index_args, linker, plan_stage, row_settings


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, help="ETL output .npy (N, 224, 224, 3) uint8")
    parser.add_argument("features", type=Path,
                        help="output .npy (N, 224, 224, 3) float32 (or a folder of shards)")
    add_row_index_args(parser)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Reads params and runs feature engineering."""
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    clean_leftovers(args.features)
    params = load_config(args.params)
    config = params.feature_engineering
    if args.rows is None or args.upstream_rows is None:
        run_feature_engineering(args.images, args.features, chunk_size=config.chunk_size)
        return 0
    index, plan = plan_stage(args.params.parent, args.upstream_rows, args.features, args.rows,
                             __file__, row_settings(config.to_dict()))
    run_feature_engineering(args.images, args.features, chunk_size=config.chunk_size,
                            plan=plan, storage=Layout(index.keys, params.storage.shard_rows,
                                                      linker(args.params.parent))
                            if params.storage.shard_rows else None)
    index.save(args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
