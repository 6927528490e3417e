"""Retrieval: ranking a collection's vectors by cosine to a query.

- :mod:`lib.retrieval.similarity`: cosine similarity and top-k.
- :mod:`lib.retrieval.whitening`: optional PCA whitening of the search space.
- :mod:`lib.retrieval.index`: the exact scan and the FAISS indexes, one ``search``.
- :mod:`lib.retrieval.index_store`: the index stage's artifact.
- :mod:`lib.retrieval.expansion`: query expansion (plain or alpha-weighted).
- :mod:`lib.retrieval.augmentation`: database-side augmentation (DBA).
- :mod:`lib.retrieval.reranking`, :mod:`lib.retrieval.ranking`: k-reciprocal re-ranking,
  and the query-time ranking (expansion, then re-ranking) on any index.
- :mod:`lib.retrieval.engine`: :class:`ImageSearchEngine`, photo in, ranked names out.
- :mod:`lib.retrieval.controls`: folder scope, score cutoff and paging, checked once.
- :mod:`lib.retrieval.duplicates`: near-duplicate pairs and groups.
"""
from lib.retrieval.augmentation import augment, load_augmented, save_augmented
from lib.retrieval.controls import (
    check_folder, check_min_score, check_offset, MAX_SCORE, MIN_SCORE, require_folder,
    rows_under, scope_size, search_page, SearchControls)
from lib.retrieval.duplicates import find_pairs, group_pairs, pair_set, write_report
from lib.retrieval.engine import ImageSearchEngine
from lib.retrieval.index import check_index
from lib.retrieval.index_store import build_index, load_index, load_previous, save_index
from lib.retrieval.similarity import get_cosine_similarity, l2_normalize, top_k
from lib.retrieval.whitening import fit_whitening, load_whitening, save_whitening

__all__ = ["ImageSearchEngine", "MAX_SCORE", "MIN_SCORE", "SearchControls", "augment",
           "build_index", "load_augmented", "save_augmented",
           "check_folder", "check_index", "check_min_score", "check_offset", "find_pairs",
           "fit_whitening", "get_cosine_similarity", "group_pairs", "l2_normalize",
           "load_index", "load_previous", "load_whitening", "pair_set", "require_folder",
           "rows_under", "scope_size",
           "save_index", "save_whitening", "search_page", "top_k", "write_report"]
