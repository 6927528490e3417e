"""Serving: the N images of the collection most similar to a query image.

The query goes through the same ETL and feature-engineering functions as the
collection, is embedded with the saved vectorizer model, and is ranked by cosine
similarity, after the saved PCA whitening and with the query expansion that
``params.yaml`` sets (both off by default), through the collection's vector index
(the index stage's; an approximate one's candidates are re-scored by exact cosine).
Prints which artifact version answers, rank, score and name, and writes a picture of
the results.

Before loading, the artifacts are checked against the versions recorded in
``dvc.lock``, under DVC's repository lock, then copied into a private snapshot (a
reflink, else a real copy), every byte hashed as it is copied and compared with
``dvc.lock``, and loaded from there (``--no-verify`` skips the check, and the version
line names the md5 of the vectors actually loaded); ``--rev`` serves the artifacts
recorded at any git revision, fetched through DVC without a checkout. Image names are
printed escaped (:func:`lib.errors.printable`), so each result is one line whatever
the file names.

Warm mode (``-`` as the query) loads everything once, then answers one query path per
line of stdin (bytes, not necessarily UTF-8), each with a result block ended by an
empty line; a bad query (missing, unreadable, a folder, a FIFO, a name too long, not an
image) gets a one-line ``error:`` block naming the path and the reason, and the loop
goes on.

``--http`` runs the resident search service with its web page instead
(:mod:`lib.service`): loaded once, answering over HTTP until interrupted.

Usage::

    python stages/serve.py QUERY [-n N] [--output result.png] [--rev REV]
                           [--verify-full | --no-verify]
    printf '%s\n' a.jpg b.jpg | python stages/serve.py - [-n N] [--output result.png]
    python stages/serve.py --http [--host 127.0.0.1] [--port 8000] [--rev REV]
                           [--verify-full | --no-verify] [--allow-host NAME]
                           [--token TOKEN] [--quiet]
"""
import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from lib import cli
from lib.config import load_config
from lib.errors import one_line, printable, UserError
from lib.photos import decode_with, max_file_bytes, query_caption, read_file, render_results
from lib.pinning import pin
from lib.retrieval import ImageSearchEngine

STDIN = Path("-")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("query", type=Path, nargs="?",
                        help="query image file, or - to read query paths from stdin, one "
                             "per line (loads once, answers each); none with --http")
    parser.add_argument("-n", type=cli.positive_int, default=None,
                        help="number of results (default: serve.top_n in params.yaml)")
    parser.add_argument("--output", type=Path, default=None,
                        help="result picture, PNG (default: serve.output in params.yaml; "
                             "with -, only when given, numbered per query: NAME-1.png, ...)")
    parser.add_argument("--rev", default=None,
                        help="serve the artifacts recorded at this git tag, branch or "
                             "commit (fetched from the DVC cache or remote, no checkout)")
    check = parser.add_mutually_exclusive_group()
    check.add_argument("--verify-full", action="store_true",
                       help="hash every byte of the artifacts (now always done: they are "
                            "hashed as they are copied; kept for scripts)")
    check.add_argument("--no-verify", action="store_true",
                       help="skip checking the artifacts against dvc.lock")
    http = parser.add_argument_group("HTTP service")
    http.add_argument("--http", action="store_true",
                      help="run the search service and its web page (until Ctrl-C)")
    http.add_argument("--host", default=None,
                      help="address to bind (default: service.host in params.yaml, "
                           "127.0.0.1)")
    http.add_argument("--port", type=int, default=None,
                      help="port (default: service.port in params.yaml, 8000; 0: any free)")
    http.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                      help="also answer requests for this Host name (repeatable; besides "
                           "localhost, IP addresses and service.allowed_hosts; * for any)")
    http.add_argument("--token", default=None,
                      help="require 'Authorization: Bearer TOKEN' on every data request "
                           "(default: $IMAGE_SEARCH_TOKEN; prefer it, a command line is "
                           "visible to other users of the machine)")
    http.add_argument("--quiet", action="store_true",
                      help="no access log (one line per request on stderr)")
    args = parser.parse_args(argv)
    if args.http and args.query is not None:
        parser.error("--http takes no query: upload queries to the service instead")
    if not args.http and args.query is None:
        parser.error("a query image (or -, or --http) is required")
    service_only = (args.host, args.port, args.token, args.allow_host or None,
                    args.quiet or None)
    if not args.http and any(value is not None for value in service_only):
        parser.error("--host, --port, --allow-host, --token and --quiet go with --http")
    if args.http and (args.n is not None or args.output is not None):
        parser.error("-n and --output do not apply to --http (each request gives n)")
    if args.port is not None and not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0-65535, got {args.port}")
    return args


def format_results(results: List[Tuple[float, str]]) -> str:
    """One line per match: rank, cosine score with 4 decimals, image name (escaped)."""
    return "\n".join(f"{rank:>3}  {score:.4f}  {printable(name)}"
                     for rank, (score, name) in enumerate(results, start=1))


def answer(engine: ImageSearchEngine, query: Path, query_bgr: np.ndarray, n: int,
           output: Optional[Path]) -> None:
    """Answers one query: prints the ranking and, if ``output`` is set, writes the picture."""
    results = engine.most_similar(query_bgr, n)
    if n > len(engine):
        print(f"note: asked for {n} results, the collection holds {len(engine)}: showing all",
              file=sys.stderr)
    print(f"{len(results)} most similar of {len(engine)} images to {printable(str(query))}:")
    print(format_results(results))
    if output is not None:
        render_results(np.ascontiguousarray(query_bgr[:, :, ::-1]),    # BGR -> RGB
                       [(engine.thumbnail(name), name, score) for score, name in results],
                       output, query_name=query_caption(str(query)))
        print(f"picture: {printable(str(output))}")


def serve_stdin(engine: ImageSearchEngine, n: int, output: Optional[Path]) -> int:
    """Warm mode: one query path per stdin line, one block per query, ended by a blank line.

    Returns:
        0 if every query was answered, 1 if some failed (each reported in one line).
    """
    failed = 0
    # Bytes, decoded as the file system decodes names: a path that is not UTF-8 is
    # still that path (and is shown escaped), never a crash of the loop.
    for count, line in enumerate(sys.stdin.buffer, start=1):
        text = os.fsdecode(line.rstrip(b"\r\n").strip(b" \t"))
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
    if args.http:
        # Imported here: the one-shot command line does not pay for the web stack.
        from lib.service import serve_http  # pylint: disable=import-outside-toplevel
        return serve_http(args.params, rev=args.rev, verify=not args.no_verify,
                          full=args.verify_full, host=args.host, port=args.port,
                          verbose=args.verbose, allow_hosts=args.allow_host,
                          token=args.token, quiet=args.quiet)
    config = load_config(args.params)
    n = args.n if args.n is not None else config.serve.top_n
    data = None
    if args.query != STDIN:                # a missing or oversized query fails fast
        data = read_file(args.query, max_file_bytes(config.etl.max_pixels))
    with pin(args.params.parent, config, rev=args.rev, verify=not args.no_verify,
             full=args.verify_full) as pinned:
        # The configuration the artifacts were built with (a revision's own with --rev):
        # the query is decoded, transformed, whitened and expanded as they were. A bad
        # query still fails before the model loads.
        query_bgr = None if data is None else decode_with(data, pinned.config.etl,
                                                          str(args.query))
        engine = ImageSearchEngine.load(pinned.config, pinned.paths)
    print(pinned.version.describe(), flush=True)
    if query_bgr is None:
        return serve_stdin(engine, n, args.output)
    output = args.output if args.output is not None else Path(config.serve.output)
    answer(engine, args.query, query_bgr, n, output)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
