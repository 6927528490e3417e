"""Average query expansion: search again with the query and its best matches.

The query is replaced by the sum of its unit vector and the unit vectors of its ``k``
best matches (their mean, up to a scale the cosine ignores), then searched again
(``serve.query_expansion``; 0 is off). The same code serves the exact scan and the
FAISS indexes.
"""
from typing import Optional

import numpy as np

from lib.retrieval.index import SearchIndex
from lib.retrieval.similarity import l2_normalize


def expand(index: SearchIndex, query: np.ndarray, k: int,
           within: Optional[np.ndarray] = None) -> np.ndarray:
    """The expanded form of a search-space query.

    Args:
        index: The index the query is searched in.
        query: (D',) search-space vector.
        k: How many best matches join it; 0 returns ``query`` unchanged.
        within: (R,) sorted rows the search is limited to (a folder scope), or None.

    Returns:
        (D',) ``float32``.
    """
    if not k:
        return query
    _, rows = index.search(query[np.newaxis], k, within)                  # (1, k)
    rows = np.sort(rows[0][rows[0] >= 0])                                 # (k',)
    return l2_normalize(query) + index.unit_rows(rows).sum(axis=0)       # (D',)
