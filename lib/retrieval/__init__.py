"""Retrieval: ranking a collection's vectors by cosine to a query.

- :mod:`lib.retrieval.similarity`: cosine similarity and top-k.
- :mod:`lib.retrieval.whitening`: optional PCA whitening of the search space.
- :mod:`lib.retrieval.index`: the exact scan and the FAISS indexes, one ``search``.
- :mod:`lib.retrieval.index_store`: the index stage's artifact.
- :mod:`lib.retrieval.expansion`: query expansion.
- :mod:`lib.retrieval.engine`: :class:`ImageSearchEngine`, photo in, ranked names out.
- :mod:`lib.retrieval.duplicates`: near-duplicate pairs and groups.
"""
from lib.retrieval.duplicates import find_pairs, group_pairs, pair_set, write_report
from lib.retrieval.engine import ImageSearchEngine, check_index
from lib.retrieval.index_store import build_index, load_index, load_previous, save_index
from lib.retrieval.similarity import get_cosine_similarity, l2_normalize, top_k
from lib.retrieval.whitening import fit_whitening, load_whitening, save_whitening

__all__ = ["ImageSearchEngine", "build_index", "check_index", "find_pairs",
           "fit_whitening", "get_cosine_similarity", "group_pairs", "l2_normalize",
           "load_index", "load_previous", "load_whitening", "pair_set", "save_index",
           "save_whitening", "top_k", "write_report"]
