"""Serving: the N images of the collection most similar to a query image.

The query goes through the same ETL and feature-engineering functions as the
collection, is embedded with the saved vectorizer model, and is ranked by cosine
similarity, after the saved PCA whitening and with the query expansion that
``params.yaml`` sets (both off by default), through the collection's vector index
(the index stage's; an approximate one's candidates are re-scored by exact cosine).
Prints which artifact version answers, rank, score and name, and writes a picture of
the results (each match drawn from its original photo in the collection folder when it
is there, else from its thumbnail; never stretched). ``--folder``, ``--min-score`` and
``--offset`` scope the search to a folder of the collection, cut off low scores and
page through the results (:mod:`lib.retrieval.controls`, the same rules as the
service); the header line names the ones given.

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

``--compare REV`` answers the query at git revision ``REV`` and in the workspace (both
pinned): both rankings, what entered, left or moved, a picture row per version.

``--http`` runs the resident search service with its web page instead
(:mod:`lib.service`): loaded once, answering over HTTP until interrupted.

Usage::

    python stages/serve.py QUERY [-n N] [--folder F] [--min-score S] [--offset K]
                           [--output result.png] [--rev REV] [--verify-full | --no-verify]
    printf '%s\n' a.jpg b.jpg | python stages/serve.py - [-n N] [--folder F] [--min-score S]
                                                       [--offset K] [--output result.png]
    python stages/serve.py --compare REV QUERY [-n N] [--folder F] [--min-score S]
                           [--output result.png] [--verify-full | --no-verify]
    python stages/serve.py --http [--host 127.0.0.1] [--port 8000] [--rev REV]
                           [--verify-full | --no-verify] [--allow-host NAME]
                           [--token TOKEN] [--quiet]
"""
import argparse
import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from lib import cli
from lib.artifacts import load_npy
from lib.config import Config, load_config
from lib.errors import InputError, one_line, printable, UserError
from lib.photos import (
    decode_with, match_image, max_file_bytes, query_caption, read_file, render_results)
from lib.pinning import pin, PinnedArtifacts
from lib.retrieval import (
    check_folder, check_min_score, check_offset, ImageSearchEngine, require_folder, rows_under,
    search_page, SearchControls)

STDIN = Path("-")
Value = TypeVar("Value")


def _argument(check: Callable[[str], Value]) -> Callable[[str], Value]:
    """An ``argparse`` type from a control's check (its message becomes a usage error)."""
    def parse(text: str) -> Value:
        try:
            return check(text)
        except InputError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return parse


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
    parser.add_argument("--folder", type=_argument(check_folder), default=None,
                        help="search only the images under this folder of the collection "
                             "(the start of their names, e.g. shoes)")
    parser.add_argument("--min-score", type=_argument(check_min_score), default=None,
                        metavar="S", help="only results with at least this cosine (-1 to 1)")
    parser.add_argument("--offset", type=_argument(check_offset), default=0, metavar="K",
                        help="skip the K best results first (the next page: K = n, 2n, ...)")
    parser.add_argument("--rev", default=None,
                        help="serve the artifacts recorded at this git tag, branch or "
                             "commit (fetched from the DVC cache or remote, no checkout)")
    parser.add_argument("--compare", default=None, metavar="REV",
                        help="the query's results at this git revision beside the "
                             "workspace's: what entered, left or moved; a row per version")
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
    if args.compare is not None:
        clash = [name for name, given in (("--http", args.http), ("--rev", args.rev),
                                          ("--offset", args.offset),
                                          ("- (stdin)", args.query == STDIN)) if given]
        if clash:
            parser.error(f"--compare does not go with {clash[0]}: it answers one query "
                         "file at REV and in the workspace, from rank 1")
        if not args.compare.strip():
            parser.error("--compare needs a git revision: a tag, branch or commit (HEAD~1)")
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
    if args.http and (args.folder is not None or args.min_score is not None or args.offset):
        parser.error("--folder, --min-score and --offset do not apply to --http (each "
                     "request gives them)")
    if args.port is not None and not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0-65535, got {args.port}")
    return args


@dataclass(frozen=True)
class Asked:
    """What every query of one run asks for.

    Attributes:
        n: Results per query.
        controls: Folder scope, score cutoff, offset.
        master: The collection folder, where the pictures take the matches' originals.
    """

    n: int
    controls: SearchControls
    master: Path


def format_results(results: List[Tuple[float, str]], first: int = 1) -> str:
    """One line per match: rank (from ``first``), cosine score with 4 decimals, image
    name (escaped)."""
    return "\n".join(f"{rank:>3}  {score:.4f}  {printable(name)}"
                     for rank, (score, name) in enumerate(results, start=first))


def answer(engine: ImageSearchEngine, query: Path, query_bgr: np.ndarray, asked: Asked,
           output: Optional[Path]) -> None:
    """Answers one query: prints the ranking and, if ``output`` is set, writes the picture."""
    controls = asked.controls
    page = search_page(engine, engine.embed(query_bgr), asked.n, controls)
    results = [(score, str(engine.names[row])) for score, row in page.hits]
    if asked.n > page.scope and not controls.offset and controls.min_score is None:
        holder = "the collection" if controls.folder is None else \
            f"the folder {printable(controls.folder)!r}"
        print(f"note: asked for {asked.n} results, {holder} holds {page.scope}: showing all",
              file=sys.stderr)
    given = controls.describe(page.scope)
    print(f"{len(results)} most similar of {len(engine)} images to {printable(str(query))}"
          f"{f' ({printable(given)})' if given else ''}:")
    print(format_results(results, first=controls.offset + 1))
    if output is not None:
        matches = [(match_image(asked.master, name, engine.thumbnail(name), engine.etl_config),
                    name, score) for score, name in results]
        render_results(np.ascontiguousarray(query_bgr[:, :, ::-1]), matches,   # BGR -> RGB
                       output, query_name=query_caption(str(query)),
                       first_rank=controls.offset + 1)
        print(f"picture: {printable(str(output))}")


def serve_stdin(engine: ImageSearchEngine, asked: Asked, output: Optional[Path]) -> int:
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
            answer(engine, Path(text), engine.read_query(Path(text)), asked, picture)
        except UserError as err:
            failed += 1
            print(f"error: {one_line(err)}")
        print(flush=True)
    return 1 if failed else 0


def load_pinned(pinned: PinnedArtifacts, data: Optional[bytes], query: Path,
                folder: Optional[str]) -> Tuple[Optional[np.ndarray], ImageSearchEngine]:
    """The query decoded as a pinned version decodes (a revision's own settings with
    ``--rev``: it is then transformed, whitened and expanded as its artifacts were), and
    its engine. A bad query, or a folder holding no image, fails before the model loads."""
    query_bgr = None if data is None else decode_with(data, pinned.config.etl, str(query))
    if folder is not None:
        names = load_npy(pinned.paths["names"], kind="U", ndim=1)
        require_folder(rows_under(names, folder), folder)
    return query_bgr, ImageSearchEngine.load(pinned.config, pinned.paths)


def compare(args: argparse.Namespace, config: Config, data: bytes,
            controls: SearchControls) -> int:
    """``--compare REV``: the query at REV and in the workspace, side by side. Both are
    pinned (checked) before either model loads."""
    # Off a plain query's path (import time): pylint: disable-next=import-outside-toplevel
    from lib.evaluation import answer_at, render_side_by_side, side_by_side
    root, answers = args.params.parent, []
    with contextlib.ExitStack() as stack:
        old, new = (stack.enter_context(pin(root, config, rev=rev, verify=not args.no_verify,
                                            full=args.verify_full)) for rev in (args.compare, None))
        print(f"{old.version.describe()}\n{new.version.describe()}", flush=True)
        for pinned, label, tag in ((old, args.compare, str(old.version.git_rev)[:12]),
                                   (new, "the workspace", "workspace")):
            query_bgr, engine = load_pinned(pinned, data, args.query, controls.folder)
            answers.append(answer_at(engine, query_bgr, args.n or config.serve.top_n, controls,
                                     pinned.config.paths.resolve(root)["master"],
                                     label=label, tag=tag))
        query_rgb = np.ascontiguousarray(query_bgr[:, :, ::-1])       # the workspace's, RGB
    print(side_by_side(str(args.query), answers[0], answers[1], controls))
    output = args.output if args.output is not None else Path(config.serve.output)
    render_side_by_side(query_rgb, answers, output, query_caption(str(args.query)))
    print(f"picture: {printable(str(output))}")
    return 0


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
    controls = SearchControls(args.folder, args.min_score, args.offset)
    data = None
    if args.query != STDIN:                # a missing or oversized query fails fast
        data = read_file(args.query, max_file_bytes(config.etl.max_pixels))
    if args.compare is not None:
        return compare(args, config, data, controls)
    with pin(args.params.parent, config, rev=args.rev, verify=not args.no_verify,
             full=args.verify_full) as pinned:
        query_bgr, engine = load_pinned(pinned, data, args.query, controls.folder)
    print(pinned.version.describe(), flush=True)
    asked = Asked(args.n if args.n is not None else config.serve.top_n, controls,
                  pinned.config.paths.resolve(args.params.parent)["master"])
    if query_bgr is None:
        return serve_stdin(engine, asked, args.output)
    output = args.output if args.output is not None else Path(config.serve.output)
    answer(engine, args.query, query_bgr, asked, output)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
