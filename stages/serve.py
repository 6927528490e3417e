"""Serving: the N images of the collection most similar to a query image.

The query goes through the same ETL and feature-engineering functions as the
collection, is embedded with the saved vectorizer model, and is ranked by cosine
similarity, after the saved PCA whitening and with the query expansion that
``params.yaml`` sets (both off by default), through the collection's vector index
(the index stage's; an approximate one's candidates are re-scored by exact cosine).
Prints which artifact version answers, rank, score and name, and writes a picture of
the results.

Before loading, the artifacts are checked against the versions recorded in
``dvc.lock`` (``--no-verify`` skips that); ``--rev`` serves the artifacts recorded
at any git revision, fetched through DVC without a checkout.

Warm mode (``-`` as the query) loads everything once, then answers one query path per
line of stdin, each with a result block ended by an empty line; a bad query gets a
one-line ``error:`` block and the loop goes on.

Usage::

    python stages/serve.py QUERY [-n N] [--output result.png] [--rev REV] [--no-verify]
    printf '%s\n' a.jpg b.jpg | python stages/serve.py - [-n N] [--output result.png]
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from lib import cli
from lib.config import load_config
from lib.errors import UserError, one_line
from lib.images import read_file
from lib.pinning import pin
from lib.render import render_results
from lib.search import ImageSearchEngine

STDIN = Path("-")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("query", type=Path,
                        help="query image file, or - to read query paths from stdin, one "
                             "per line (loads once, answers each)")
    parser.add_argument("-n", type=cli.positive_int, default=None,
                        help="number of results (default: serve.top_n in params.yaml)")
    parser.add_argument("--output", type=Path, default=None,
                        help="result picture, PNG (default: serve.output in params.yaml; "
                             "with -, only when given, numbered per query: NAME-1.png, ...)")
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


def answer(engine: ImageSearchEngine, query: Path, query_bgr: np.ndarray, n: int,
           output: Optional[Path]) -> None:
    """Answers one query: prints the ranking and, if ``output`` is set, writes the picture."""
    results = engine.most_similar(query_bgr, n)
    if n > len(engine):
        print(f"note: asked for {n} results, the collection holds {len(engine)}: showing all",
              file=sys.stderr)
    print(f"{len(results)} most similar of {len(engine)} images to {query}:")
    print(format_results(results))
    if output is not None:
        render_results(np.ascontiguousarray(query_bgr[:, :, ::-1]),    # BGR -> RGB
                       [(engine.thumbnail(name), name, score) for score, name in results],
                       output)
        print(f"picture: {output}")


def serve_stdin(engine: ImageSearchEngine, n: int, output: Optional[Path]) -> int:
    """Warm mode: one query path per stdin line, one block per query, ended by a blank line.

    Returns:
        0 if every query was answered, 1 if some failed (each reported in one line).
    """
    failed = 0
    for count, line in enumerate(sys.stdin, start=1):
        text = line.strip()
        if not text:
            continue
        picture = None if output is None else output.with_name(
            f"{output.stem}-{count}{output.suffix}")
        try:
            answer(engine, Path(text), engine.read_query(Path(text)), n, picture)
        except UserError as err:
            failed += 1
            print(f"error: {one_line(err)}")
        print(flush=True)
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Loads the engine once, then answers the query (or every query from stdin)."""
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    config = load_config(args.params)
    n = args.n if args.n is not None else config.serve.top_n
    query = None
    if args.query != STDIN:                              # a missing query fails fast
        query = read_file(args.query)
    pinned = pin(args.params.parent, config, rev=args.rev, verify=not args.no_verify)
    # The configuration the artifacts were built with (a revision's own with --rev):
    # the query is decoded, transformed, whitened and expanded as they were.
    engine = ImageSearchEngine.from_config(pinned.config, pinned.paths)
    print(pinned.version.describe(), flush=True)
    if query is None:
        return serve_stdin(engine, n, args.output)
    output = args.output if args.output is not None else Path(config.serve.output)
    answer(engine, args.query, engine.read_query(query, source=str(args.query)), n, output)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
