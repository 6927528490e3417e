"""Serving: the N images of the collection most similar to a query image.

The query goes through the same ETL and feature-engineering functions as the
collection, is embedded with the saved vectorizer model, and is ranked by cosine
similarity. Prints which artifact version answers, rank, score and name, and
writes a picture of the results.

Before loading, the artifacts are checked against the versions recorded in
``dvc.lock`` (``--no-verify`` skips that); ``--rev`` serves the artifacts recorded
at any git revision, fetched through DVC without a checkout.

Usage::

    python stages/serve.py QUERY [-n N] [--output result.png] [--rev REV] [--no-verify]
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from lib import cli
from lib.images import EtlConfig, read_image_bgr
from lib.params import get_int, load_params, section
from lib.pinning import pin
from lib.render import render_results
from lib.search import ImageSearchEngine
from lib.vectorizer import batch_size_from_params


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("query", type=Path, help="query image file")
    parser.add_argument("-n", type=cli.positive_int, default=None,
                        help="number of results (default: serve.top_n in params.yaml)")
    parser.add_argument("--output", type=Path, default=None,
                        help="result picture, PNG (default: serve.output in params.yaml)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params file; artifact paths are relative to its folder")
    parser.add_argument("--rev", default=None,
                        help="serve the artifacts recorded at this git tag, branch or "
                             "commit (fetched from the DVC cache or remote, no checkout)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip checking the artifacts against dvc.lock")
    return parser.parse_args(argv)


def format_results(results: List[Tuple[float, str]]) -> str:
    """One line per match: rank, cosine score with 4 decimals, image name."""
    return "\n".join(f"{rank:>3}  {score:.4f}  {name}"
                     for rank, (score, name) in enumerate(results, start=1))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Loads the engine, answers the query, prints the ranking and writes the picture."""
    args = parse_args(argv)
    cli.setup_logging()
    params = load_params(args.params)
    serve = section(params, "serve")
    n = args.n if args.n is not None else get_int(serve, "top_n")
    max_pixels = EtlConfig.from_params(section(params, "etl")).max_pixels
    query_bgr = read_image_bgr(args.query, max_pixels)  # a bad query fails fast
    pinned = pin(args.params.parent, params, rev=args.rev, verify=not args.no_verify)
    params, paths = pinned.params, pinned.paths        # a revision's own params with --rev
    etl_config = EtlConfig.from_params(section(params, "etl"))
    engine = ImageSearchEngine.load(
        paths["vectors"], paths["names"], paths["model"], etl_config,
        images_path=paths["images"],
        batch_size=batch_size_from_params(section(params, "modelling")))
    results = engine.most_similar(query_bgr, n)
    if n > len(engine):
        print(f"note: asked for {n} results, the collection holds {len(engine)}: showing all",
              file=sys.stderr)
    print(pinned.version.describe())
    print(f"{len(results)} most similar of {len(engine)} images to {args.query}:")
    print(format_results(results))
    output = args.output if args.output is not None else Path(serve["output"])
    render_results(np.ascontiguousarray(query_bgr[:, :, ::-1]),    # BGR -> RGB
                   [(engine.thumbnail(name), name, score) for score, name in results], output)
    print(f"picture: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
