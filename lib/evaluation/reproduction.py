"""The reproduction record: each labelled query's top 10, comparable across machines.

Another CPU may round the embeddings differently, so a rebuild there can record other
md5s in ``dvc.lock`` while every ranking is the same. This record says whether the
rankings reproduced: ``top10_checksum`` is a number made from the names of every
query's top 10, so ``dvc metrics diff`` shows it unchanged exactly when the rankings
are. Results whose cosines differ by less than ``cosine_tolerance`` count as tied:
within a tie their order is by name, and a tie that straddles the 10th place is left
out, so rounding noise below the tolerance cannot change the checksum. ``top10`` lists
the names and cosines (4 decimals) for people to compare.
"""
import hashlib
from typing import Any, Dict, List, Sequence

import numpy as np

from lib.retrieval import top_k

TOP = 10
COSINE_TOLERANCE = 1e-4      # the largest cosine change a rebuild may make unnoticed


def stable_top(names: np.ndarray, scores: np.ndarray, k: int = TOP,
               tolerance: float = COSINE_TOLERANCE) -> List[str]:
    """The names of the best ``k`` results, in an order rounding noise cannot change.

    Args:
        names: (N,) collection names.
        scores: (N,) cosines of one query.

    Returns:
        Up to ``k`` names: tie groups (each result within ``tolerance`` of the one
        before it) sorted by name; a tie group crossing place ``k`` is dropped.
    """
    rows, values = top_k(scores, k + 1)                          # (k + 1,) best first
    groups: List[List[int]] = []
    for i in range(rows.shape[0]):
        if groups and values[i - 1] - values[i] < tolerance:
            groups[-1].append(i)
        else:
            groups.append([i])
    kept: List[str] = []
    for group in groups:
        if group[-1] >= k:                        # reaches past place k: undecided
            break
        kept.extend(sorted(str(names[rows[i]]) for i in group))
    return kept


def reproduction_record(names: np.ndarray, queries: Sequence[str],
                        scores: np.ndarray) -> Dict[str, Any]:
    """The record of a labelled query set's rankings.

    Args:
        names: (N,) collection names.
        queries: (Q,) query names (paths relative to the query set).
        scores: (Q, N) cosines, as the evaluation ranked them.
    """
    digest = hashlib.blake2b(digest_size=6)
    top10 = {}
    for query, row in zip(queries, scores):
        stable = stable_top(names, row)
        digest.update("\n".join([query, *stable, ""]).encode("utf-8"))
        rows, values = top_k(row, TOP)
        top10[query] = [[str(names[r]), round(float(v), 4)] for r, v in zip(rows, values)]
    return {"top10_checksum": int.from_bytes(digest.digest(), "big"),
            "cosine_tolerance": COSINE_TOLERANCE, "queries": len(queries), "top10": top10}
