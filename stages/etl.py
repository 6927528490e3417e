"""ETL stage: photos in ``data/master`` -> 224x224 RGB ``uint8`` array + image names.

Usage (as ``dvc.yaml`` runs it)::

    python stages/etl.py MASTER_DIR IMAGES_NPY NAMES_NPY REPORT_JSON --rows ROWS_NPZ

With ``--rows``, a photo already in the previous output (same content, same settings
and code: see ``lib/incremental/rows.py``) is copied from it, read from DVC's cache.
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
from lib.arrays import Layout
from lib.incremental import linker, previous_rows, recipe, row_settings
from lib.photos import run_etl


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("master", type=Path, help="folder of photos (searched recursively)")
    parser.add_argument("images", type=Path,
                        help="output .npy: (N, 224, 224, 3) uint8 RGB (or a folder of shards)")
    parser.add_argument("names", type=Path, help="output .npy: (N,) image names")
    parser.add_argument("report", type=Path, help="output JSON: counts and skipped files")
    parser.add_argument("--rows", type=Path, default=None,
                        help="output row index (.npz): makes the stage incremental")
    return parser.parse_args(argv)


def layout(args: argparse.Namespace, shard_rows: int) -> Optional[Layout]:
    """Shards (``storage.shard_rows``, with a row index to cut at), or one file."""
    if not shard_rows or args.rows is None:
        return None
    return Layout(shard_rows=shard_rows, link=linker(args.params.parent))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Reads params and runs the ETL."""
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    clean_leftovers(args.images, args.names, args.report)
    params = load_config(args.params)
    config = params.etl
    previous = (None, None) if args.rows is None else \
        previous_rows(args.params.parent, args.images, args.rows)
    run_etl(args.master, args.images, args.names, args.report, config,
            made_by=recipe(__file__, row_settings(config.to_dict())), index_out=args.rows,
            previous=previous, storage=layout(args, params.storage.shard_rows))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
