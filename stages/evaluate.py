"""Evaluate stage: search quality on a labelled query set, through the serving path.

Each query of the CSV (columns ``path,label``, paths relative to the CSV's folder) is
embedded and ranked by the engine serving uses, with the same ETL, saved model,
whitening and query expansion. The relevant images of a query are the collection
images whose first folder is its label. Writes mean average precision, P@1, P@5,
P@10 and R@10 as JSON (DVC metrics), the precision-recall curve as CSV and as a PNG
picture (DVC plots; the picture needs no internet to view), and the reproduction
record (each query's top 10 and their checksum, see ``lib/evaluation/reproduction.py``),
so that ``dvc metrics diff`` after a rebuild elsewhere shows whether the rankings
reproduced.

``--against REV`` compares instead of evaluating: the workspace's metrics and
reproduction record beside those git holds at REV (metric deltas, and the queries
whose top 10 changed most: what entered, left or moved), as a table and, with
``--json FILE``, as JSON; ``--max-map-drop X`` exits 3 when mAP fell by more than X
(a quality gate: CI runs it on the demo against the committed metrics).

When no query label is a folder of the collection (your own photos, say), the query
set does not apply: the stage logs one warning, writes metrics that say so (no
scores) and an empty curve, and succeeds, so ``dvc repro`` works on any photos.

Usage (as ``dvc.yaml`` runs it)::

    python stages/evaluate.py QUERY_LABELS_CSV METRICS_JSON PR_CURVE_CSV PR_CURVE_PNG \
        REPRODUCTION_JSON
    python stages/evaluate.py --against REV [--max-map-drop X] [--json FILE]
"""
import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position

from lib import cli
from lib.artifacts import clean_leftovers, load_npy, save_json
from lib.config import load_config
from lib.evaluation import (
    compare, comparison_table, evaluate_engine, not_applicable, not_applicable_metrics,
    query_fingerprint, query_vectors, read_query_set, render_pr_curve, reproduction_record,
    write_results)
from lib.retrieval import ImageSearchEngine

logger = logging.getLogger(__name__)

EXIT_QUALITY_DROP = 3        # --max-map-drop exceeded


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    outputs = (("queries", "labelled query set, CSV path,label"),
               ("metrics", "output metrics JSON"),
               ("curve", "output precision-recall curve CSV"),
               ("picture", "output precision-recall curve PNG"),
               ("reproduction", "output reproduction record JSON"))
    for name, text in outputs:
        parser.add_argument(name, type=Path, nargs="?", help=text)
    gate = parser.add_argument_group("comparing with another version")
    gate.add_argument("--against", metavar="REV", default=None,
                      help="compare the workspace's evaluation with the one git holds at REV")
    gate.add_argument("--max-map-drop", type=float, default=None, metavar="X",
                      help="with --against: exit 3 when mAP fell by more than X")
    gate.add_argument("--json", type=Path, default=None, metavar="FILE",
                      help="with --against: also write the comparison as JSON")
    args = parser.parse_args(argv)
    if args.against is None and (args.reproduction is None or args.max_map_drop is not None
                                 or args.json is not None):
        parser.error("give the five paths to evaluate, or --against REV to compare")
    if args.max_map_drop is not None and not args.max_map_drop >= 0:
        parser.error(f"--max-map-drop must be >= 0, got {args.max_map_drop}")
    return args


def against(args: argparse.Namespace) -> int:
    """Compares with ``args.against``; 3 when mAP dropped by more than allowed."""
    config = load_config(args.params)
    result = compare(args.params.parent, args.against, config.paths.metrics,
                     config.paths.reproduction)
    print(comparison_table(result))
    if args.json is not None:
        save_json(args.json, result)
    drop = -result["metrics"]["mAP"]["delta"]
    if args.max_map_drop is not None and drop > args.max_map_drop:
        print(f"evaluate.py: mAP fell by {drop:.4f}, more than --max-map-drop "
              f"{args.max_map_drop}", file=sys.stderr)
        return EXIT_QUALITY_DROP
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Loads the engine as serving does, ranks every query, writes the metrics."""
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    if args.against is not None:
        return against(args)
    clean_leftovers(args.metrics, args.curve, args.reproduction)
    config = load_config(args.params)
    queries = read_query_set(args.queries)
    # DVC runs this stage on the artifacts it has just built: the workspace's own.
    paths = config.paths.resolve(args.params.parent)
    reason = not_applicable(load_npy(paths["names"], ndim=1, kind="U"), queries)
    if reason:
        logger.warning("the labelled query set %s does not apply, nothing to score: %s",
                       args.queries, reason)
        write_results(not_applicable_metrics(queries, reason), np.empty((0, 2)),
                      args.metrics, args.curve)
        save_json(args.reproduction, {"applicable": False, "reason": reason})
        render_pr_curve(np.empty((0, 2)), args.picture, "Not evaluated: the labelled query "
                        "set does not apply to this collection")
        print(f"not evaluated: {reason}")
        return 0
    engine = ImageSearchEngine.load(config, paths, with_images=False)
    root = args.params.parent
    vectors = query_vectors(root, [path for path, _ in queries],
                            query_fingerprint(root, config, __file__), engine.embed)
    metrics, curve, scores = evaluate_engine(engine, queries, vectors)
    write_results(metrics, curve, args.metrics, args.curve)
    names = [os.path.relpath(path, args.queries.parent) for path, _ in queries]
    save_json(args.reproduction, reproduction_record(engine.names, names, scores))
    render_pr_curve(curve, args.picture, f"Precision-recall (interpolated), mean over "
                    f"{metrics['queries_evaluated']} queries: mAP {metrics['mAP']:.3f}, "
                    f"P@5 {metrics['P@5']:.3f}")
    print(" ".join(f"{key}={metrics[key]:.4f}" for key in ("mAP", "P@1", "P@5", "P@10", "R@10")))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
