"""Evaluating search quality on a labelled query set, through the serving path.

A query set is a CSV with columns ``path,label``; paths are relative to the CSV's
folder. A database image's label is the first folder of its name (``shoes/x.jpg`` is
``shoes``), so a collection arranged as ``data/master/<label>/<file>`` is labelled by
its layout; images directly in ``data/master`` carry no label and are never relevant.
The relevant images of a query are the database images with its label.

Every query is read, transformed, embedded and ranked by
:class:`lib.retrieval.engine.ImageSearchEngine` exactly as ``stages/serve.py`` does it, whitening
and query expansion included; :mod:`lib.evaluation.metrics` then scores the rankings. The
rankings scored are the exact scan's (every row's cosine); beside them, the top 10 the
engine's index returns is compared with the exact top 10 (``index_recall@10``).
"""
import csv
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from lib.artifacts import atomic_path, save_json
from lib.errors import InputError, PathLike
from lib.evaluation.metrics import evaluate
from lib.retrieval import ImageSearchEngine, top_k

logger = logging.getLogger(__name__)


def read_query_set(csv_path: PathLike) -> List[Tuple[Path, str]]:
    """Reads a labelled query set: (image path, label) rows in file order.

    Raises:
        InputError: Missing file, missing columns, empty path or label, duplicate
            paths, or no rows at all.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"query set {csv_path} not found")
    with open(csv_path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label"} - set(reader.fieldnames or ())
        if missing:
            raise InputError(f"query set {csv_path} must have the columns path,label; "
                             f"it lacks {', '.join(sorted(missing))}")
        rows = []
        for line, row in enumerate(reader, start=2):
            path, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            if not path or not label:
                raise InputError(f"query set {csv_path} line {line}: empty path or label")
            rows.append((csv_path.parent / path, label))
    if not rows:
        raise InputError(f"query set {csv_path} has no queries")
    seen = set()
    for path, _ in rows:
        if path in seen:
            raise InputError(f"query set {csv_path} lists {path} twice")
        seen.add(path)
    return rows


def database_labels(names: np.ndarray) -> np.ndarray:
    """The label of each database image: the first folder of its name, '' if none."""
    labels = np.array([name.split("/", 1)[0] if "/" in name else "" for name in names.tolist()])
    if not (labels != "").any():
        raise InputError("no database image is in a label folder: arrange the collection "
                         "as data/master/<label>/<file> to evaluate it")
    return labels


def not_applicable(names: np.ndarray, queries: List[Tuple[Path, str]]) -> str:
    """Why the labelled query set does not apply to a collection, or '' if it does.

    It applies when at least one query's label is the first folder of a collection
    image's name; your own photos, flat or in other folders, usually have none.
    """
    folders = {name.split("/", 1)[0] for name in names.tolist() if "/" in name}
    labels = sorted({label for _, label in queries})
    if folders & set(labels):
        return ""
    shown = ", ".join(sorted(folders)[:5]) + (", ..." if len(folders) > 5 else "")
    return (f"no query label ({', '.join(labels[:5])}{', ...' if len(labels) > 5 else ''}) "
            f"is a folder of the collection (folders: {shown or 'none'})")


def not_applicable_metrics(queries: List[Tuple[Path, str]], reason: str) -> Dict[str, Any]:
    """The metrics of a query set that does not apply: counts and why, no scores."""
    return {"applicable": False, "reason": reason, "queries": len(queries),
            "queries_evaluated": 0, "queries_without_relevant": len(queries)}


def evaluate_engine(engine: ImageSearchEngine, queries: List[Tuple[Path, str]],
                    vectors: Optional[List[np.ndarray]] = None
                    ) -> Tuple[Dict[str, Any], np.ndarray, np.ndarray]:
    """Ranks the collection for every query as serving does and scores the rankings.

    ``vectors`` are the queries' embeddings when known already
    (:mod:`lib.evaluation.query_vectors`); otherwise each query is embedded here.

    Returns:
        The metrics (see :func:`lib.evaluation.metrics.evaluate`, plus
        ``index_recall@10``: the index against the exact scan, see
        :func:`index_recall`), the (L, 2) precision-recall curve and the (Q, N)
        scores. Wall times (reading, embedding and ranking one query; the exact and
        the index search) are logged, not returned: they differ on every run, and the
        metrics file is tracked in git, so it must change only when the search
        quality does.
    """
    labels = database_labels(engine.names)                                  # (N,)
    scores = np.empty((len(queries), len(engine)), dtype=np.float32)        # (Q, N)
    relevant = np.empty((len(queries), len(engine)), dtype=bool)            # (Q, N)
    embedded: List[np.ndarray] = []
    started = time.perf_counter()
    for row, (path, label) in enumerate(queries):
        # read as serving reads it
        embedded.append(engine.embed(path) if vectors is None else vectors[row])
        scores[row] = engine.scores(embedded[-1])
        relevant[row] = labels == label
    elapsed = time.perf_counter() - started
    metrics, curve = evaluate(scores, relevant)
    logger.info("%s %d queries in %.1f s: %.4f s per query",
                "evaluated" if vectors is None else "ranked", len(queries), elapsed,
                elapsed / len(queries))
    recall, exact_ms, index_ms = index_recall(engine, embedded)
    metrics["index_recall@10"] = recall
    logger.info("search per query: exact scan %.3f ms, through the index %.3f ms", exact_ms,
                index_ms)
    if metrics["queries_without_relevant"]:
        logger.warning("%d of %d queries have no relevant image in the database and are "
                       "left out of the metrics", metrics["queries_without_relevant"],
                       metrics["queries"])
    return metrics, curve, scores


def index_recall(engine: ImageSearchEngine, vectors: List[np.ndarray],
                 k: int = 10) -> Tuple[float, float, float]:
    """How well the engine's index finds the exact scan's top ``k``, and how fast.

    Returns:
        The mean share of the exact top ``k`` that the index's top ``k`` holds (1.0
        for the exact scan itself), then the mean milliseconds per query of the exact
        top-k ranking and of the engine's search (the same path when there is no
        approximate index).
    """
    k = min(k, len(engine))
    found, exact_s, index_s = [], 0.0, 0.0
    for vector in vectors:
        started = time.perf_counter()
        exact, _ = top_k(engine.scores(vector), k)
        middle = time.perf_counter()
        approx = [row for _, row in engine.search_vector(vector, k)]
        index_s += time.perf_counter() - middle
        exact_s += middle - started
        found.append(len(set(exact.tolist()) & set(approx)) / k)
    return (float(np.mean(found)), 1000 * exact_s / len(vectors),
            1000 * index_s / len(vectors))


def write_results(metrics: Dict[str, Any], curve: np.ndarray, metrics_path: PathLike,
                  curve_path: PathLike) -> None:
    """Writes the metrics JSON and the precision-recall curve CSV atomically."""
    rounded = {key: round(value, 6) if isinstance(value, float) else value
               for key, value in metrics.items()}
    save_json(metrics_path, rounded)
    with atomic_path(curve_path, suffix=".csv") as tmp:
        lines = ["recall,precision"] + [f"{r:.2f},{p:.6f}" for r, p in curve]
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
