"""Query expansion: search again with the query and its best matches.

The query is replaced by the sum of its unit vector and the unit vectors of its ``k``
best matches (``serve.query_expansion``; 0 is off), then searched again. With
``serve.query_expansion_alpha`` > 0 (alpha-QE) each match is weighted by its cosine to
the query raised to ``alpha`` (negative cosines count 0), so weak matches pull less;
``alpha`` 0 is the plain sum (their mean, up to a scale the cosine ignores), computed
exactly as before. The same code serves the exact scan and the FAISS indexes.
"""
from typing import Optional

import numpy as np

from lib.retrieval.index import SearchIndex
from lib.retrieval.similarity import l2_normalize


def expand(index: SearchIndex, query: np.ndarray, k: int,  # pylint: disable=too-many-arguments
           within: Optional[np.ndarray] = None, alpha: float = 0.0) -> np.ndarray:
    """The expanded form of a search-space query.

    Args:
        index: The index the query is searched in.
        query: (D',) search-space vector.
        k: How many best matches join it; 0 returns ``query`` unchanged.
        within: (R,) sorted rows the search is limited to (a folder scope), or None.
        alpha: Weight exponent: each match counts ``max(cosine, 0) ** alpha``; 0 (the
            plain sum) is bit for bit the expansion without weights.

    Returns:
        (D',) ``float32``.
    """
    if not k:
        return query
    values, rows = index.search(query[np.newaxis], k, within)             # (1, k)
    if not alpha:
        rows = np.sort(rows[0][rows[0] >= 0])                             # (k',)
        return l2_normalize(query) + index.unit_rows(rows).sum(axis=0)   # (D',)
    found = rows[0] >= 0
    order = np.argsort(rows[0][found], kind="stable")
    rows, values = rows[0][found][order], values[0][found][order]          # (k',)
    weights = np.maximum(values, 0.0).astype(np.float32) ** np.float32(alpha)  # (k',)
    return l2_normalize(query) + weights @ index.unit_rows(rows)           # (D',)
