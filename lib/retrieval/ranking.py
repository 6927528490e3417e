"""Query-time ranking: query expansion, then k-reciprocal re-ranking, on any index.

:class:`Ranking` holds the ``serve`` knobs read at search time; :func:`ranked_scores`
scores every row (the exact scan: evaluation), :func:`ranked_search` asks the index
for the best rows (serving). Both give the same order: with re-ranking off they are
the expansion and the index search as they always were, bit for bit.
"""
import dataclasses
from typing import Optional, Tuple

import numpy as np

from lib.config import ServeConfig
from lib.retrieval.expansion import expand
from lib.retrieval.index import ExactIndex, SearchIndex
from lib.retrieval.reranking import outside_scores, rerank_scores
from lib.retrieval.similarity import top_k


@dataclasses.dataclass(frozen=True)
class Ranking:
    """The query-time ranking knobs (``serve`` in ``params.yaml``).

    Attributes:
        expansion: ``k`` of query expansion, 0 off (``query_expansion``).
        alpha: alpha-QE weight exponent, 0 the plain sum (``query_expansion_alpha``).
        candidates: ``K`` best rows re-ranked by k-reciprocal neighbours, 0 off
            (``reciprocal_candidates``).
        k1: Reciprocal neighbourhood size (``reciprocal_k1``).
        k2: Local query expansion size (``reciprocal_k2``).
        lam: Weight of the cosine in a re-ranked score (``reciprocal_lambda``).
    """

    expansion: int = 0
    alpha: float = 0.0
    candidates: int = 0
    k1: int = 20
    k2: int = 6
    lam: float = 0.3

    @classmethod
    def from_config(cls, serve: ServeConfig) -> "Ranking":
        """The knobs of a ``serve`` section."""
        return cls(serve.query_expansion, serve.query_expansion_alpha,
                   serve.reciprocal_candidates, serve.reciprocal_k1, serve.reciprocal_k2,
                   serve.reciprocal_lambda)

    def rescore(self, index: SearchIndex, query: np.ndarray, rows: np.ndarray,
                cosines: np.ndarray) -> np.ndarray:
        """Re-ranked scores (K,) of a query's best rows (K,), cosines (K,) given."""
        order = np.argsort(rows, kind="stable")
        units = np.empty((rows.shape[0], query.shape[0]), dtype=np.float32)  # (K, D')
        units[order] = index.unit_rows(rows[order])
        return rerank_scores(query, units, cosines, self.k1, self.k2, self.lam)


def ranked_scores(exact: ExactIndex, query: np.ndarray, ranking: Ranking) -> np.ndarray:
    """The score of every row for a search-space query (D',): (N,) ``float32``.

    Expanded, then (re-ranking on) the best ``candidates`` re-scored and every other
    row scored ``lam`` x cosine, so that they rank behind.
    """
    query = expand(exact, query, ranking.expansion, alpha=ranking.alpha)     # (D',)
    scores = exact.scores(query)                                              # (N,)
    if not ranking.candidates:
        return scores
    rows, cosines = top_k(scores, ranking.candidates)                         # (K,)
    out = outside_scores(scores, ranking.lam)                                 # (N,)
    out[rows] = ranking.rescore(exact, query, rows, cosines)
    return out


def ranked_search(index: SearchIndex, query: np.ndarray, k: int, within: Optional[np.ndarray],
                  ranking: Ranking) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` best rows of a search-space query (D') through the index.

    Returns:
        (scores, rows), each (k',); rows -1 where the index found fewer.
    """
    query = expand(index, query, ranking.expansion, within, ranking.alpha)   # (D',)
    if not ranking.candidates:
        values, rows = index.search(query[np.newaxis], k, within)           # (1, k)
        return values[0], rows[0]
    values, rows = index.search(query[np.newaxis], max(k, ranking.candidates), within)
    found = rows[0] >= 0
    values, rows = values[0][found], rows[0][found]                          # (K',)
    head = min(ranking.candidates, rows.shape[0])
    scores = outside_scores(values, ranking.lam)                             # (K',)
    scores[:head] = ranking.rescore(index, query, rows[:head], values[:head])
    order = np.lexsort((rows, -scores))[:k]
    return scores[order], rows[order]
