"""Pre-flight of ``dvc repro``: refuses what DVC would hang or fail on in ``data/master``.

DVC hashes every file of the collection folder before any stage runs, so a FIFO
there blocks ``dvc status`` and ``dvc repro`` for ever (and a broken link or a link
loop stops them with an error). This check finds them from the directory listing,
without opening anything, and names each one; ``make repro`` runs it before
``dvc repro``. (Serving runs the same check before its own DVC check.)

Usage::

    python stages/check_master.py [MASTER_DIR] [--params params.yaml]
"""
import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from lib import cli
from lib.config import load_config
from lib.errors import InputError, printable
from lib.photos import dvc_hazards


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("master", type=Path, nargs="?", default=None,
                        help="the collection folder (default: paths.master in params)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Lists every hazard on stderr, one per line; exit 1 if there is any."""
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    master = args.master
    if master is None:
        master = args.params.parent / load_config(args.params).paths.master
    hazards = dvc_hazards(master)
    for hazard in hazards[:-1]:
        print(f"check_master.py: {printable(hazard.reason)}", file=sys.stderr)
    if hazards:
        raise InputError(f"{hazards[-1].reason}: {len(hazards)} entr"
                         f"{'y' if len(hazards) == 1 else 'ies'} in {master} that DVC would "
                         "hang or fail on: remove them, then run dvc repro")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
