"""The search engine: embeds a query the way the pipeline embedded the collection.

One photo's way: :meth:`ImageSearchEngine.read_query` decodes it (``lib.photos``),
:meth:`~ImageSearchEngine.prepare` applies the ETL transform, :func:`preprocess` the
FE step, the saved model embeds it (``lib.embedding``), and the index ranks it
(:mod:`lib.retrieval.index`, with :mod:`lib.retrieval.expansion`).
"""
import dataclasses
import logging
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from lib.arrays import read_array, row_view
from lib.artifacts import load_npy
from lib.config import Config, EtlConfig, IndexConfig, positive_int
from lib.embedding import preprocess, Vectorizer
from lib.errors import ArtifactError, PathLike
from lib.photos import decode_with, etl_transform, read_image
from lib.retrieval.augmentation import load_augmented
from lib.retrieval.controls import folder_prefix, rows_under
from lib.retrieval.index import (
    ApproximateIndex, check_index, ExactIndex, SearchIndex, VectorIndex)
from lib.retrieval.index_store import load_index
from lib.retrieval.ranking import ranked_scores, ranked_search, Ranking
from lib.retrieval.whitening import load_whitening, Whitening

logger = logging.getLogger(__name__)

Query = Union[str, Path, np.ndarray]

_FOLDERS_KEPT = 64     # folder scopes whose rows are kept (each (R,) int64)


class ImageSearchEngine:  # pylint: disable=too-many-instance-attributes
    """Ranks a collection of embedded images by cosine similarity to a query image.

    Args:
        vectors: (N, D) ``float32`` embeddings of the collection (a memmap is fine).
        names: (N,) image names, row-aligned with ``vectors``.
        vectorizer: The saved model the collection was embedded with; None for an
            engine that ranks embeddings only (:meth:`search_vector`, :meth:`scores`).
        etl_config: The ETL settings the collection was built with.
        images: Optional (N, S, S, 3) ``uint8`` RGB thumbnails (the ETL output), for
            showing results.
        whitening: Optional PCA whitening fitted on ``vectors`` (the whitening stage's
            artifact), applied to the collection here and to every query.
        query_expansion: ``k`` of query expansion (:mod:`lib.retrieval.expansion`), 0 off.
        index: Optional vector index (the index stage's artifact): an approximate one
            answers :meth:`search_vector`; None or an ``exact`` one keeps the linear scan.
        index_config: The index's search-time settings (``rerank``, ``ef_search``,
            ``nprobe``).
        ranking: The other query-time knobs (alpha-QE, re-ranking); ``query_expansion``
            sets its ``expansion``.
        augmented: Optional (N, D) DBA vectors (the whitening stage's), searched instead.
    """

    def __init__(self, vectors: np.ndarray, names: np.ndarray,  # pylint: disable=too-many-arguments
                 vectorizer: Optional[Vectorizer], etl_config: EtlConfig,
                 images: Optional[np.ndarray] = None, whitening: Optional[Whitening] = None,
                 query_expansion: int = 0, *, index: Optional[VectorIndex] = None,
                 index_config: Optional[IndexConfig] = None, ranking: Optional[Ranking] = None,
                 augmented: Optional[np.ndarray] = None):
        check_index(vectors, names, images)
        if vectorizer is not None and vectorizer.dim != vectors.shape[1]:
            raise ArtifactError(f"the vectorizer gives {vectorizer.dim}-d vectors, the index "
                                f"holds {vectors.shape[1]}-d vectors")
        if (isinstance(query_expansion, bool) or not isinstance(query_expansion, int)
                or query_expansion < 0):
            raise ValueError(f"query_expansion must be an integer >= 0, got "
                             f"{query_expansion!r}")
        self.vectors = vectors
        self.names = names
        self.vectorizer = vectorizer
        self.etl_config = etl_config
        self.images = images
        self.whitening = whitening
        self.ranking = dataclasses.replace(ranking or Ranking(), expansion=query_expansion)
        if augmented is not None and augmented.shape != vectors.shape:
            raise ArtifactError(f"augmented vectors {augmented.shape}, vectors {vectors.shape}")
        self.space = vectors if augmented is None else augmented   # (N, D) searched
        self._rows: Optional[Dict[str, int]] = None
        self._exact: Optional[ExactIndex] = None
        self._folders: Dict[str, np.ndarray] = {}
        self.index: SearchIndex = (
            ApproximateIndex(index, self.space, whitening, index_config or IndexConfig())
            if index is not None and index.approximate else self.exact_index())

    @property
    def query_expansion(self) -> int:
        """``k`` of query expansion, 0 off (settable: read at search time)."""
        return self.ranking.expansion

    @query_expansion.setter
    def query_expansion(self, k: int) -> None:
        self.ranking = dataclasses.replace(self.ranking, expansion=k)

    def exact_index(self) -> ExactIndex:
        """The exact scan over the collection (its DBA vectors when on), made once."""
        if self._exact is None:
            self._exact = ExactIndex(self.space, self.whitening)
        return self._exact

    @classmethod
    def load(cls, config: Config, paths: Mapping[str, Path],
             with_images: bool = True) -> "ImageSearchEngine":
        """Loads the engine from the pipeline's artifacts (memory-mapped, no pickle).

        Serving, warm mode, evaluation and the service all come here, so they honour
        every setting alike: the model runs with ``modelling.runtime`` and the
        precision ``modelling.precision`` (which the inference model must record), a
        whitening artifact must have ``whitening.dim``, and the index is checked
        against the vectors, the whitening and ``index``.

        Args:
            config: The configuration the artifacts were built with (for ``--rev``,
                that revision's; see :mod:`lib.pinning`).
            paths: Local path of each artifact, by ``paths`` key (the pinned ones).
                Without a ``whitening`` path (a build older than the whitening stage)
                whitening is off and must be off in ``config``; without an
                ``inference_model`` path (a build older than precisions) the
                precision is ``fp32`` and must be ``fp32`` in ``config``; without an
                ``index`` path the exact scan answers.
            with_images: Also map the landing images (for result pictures).
        """
        if "whitening" not in paths and config.whitening.dim:
            raise ArtifactError("whitening.dim is set but there is no whitening artifact: "
                                "run dvc repro")
        if "index" not in paths and config.index.kind in ("hnsw", "ivfpq"):
            raise ArtifactError(f"index.kind is {config.index.kind} but there is no index "
                                "artifact: run dvc repro")
        vectors = read_array(paths["vectors"], dtype=np.float32, ndim=2)
        names = load_npy(paths["names"], kind="U", ndim=1)
        images = None
        if with_images:
            side = config.etl.image_size
            images = row_view(paths["images"], dtype=np.uint8, ndim=4,
                              trailing_shape=(side, side, 3))
        check_index(vectors, names, images)       # before the slow model load
        whitening = None
        if paths.get("whitening") is not None:
            whitening = load_whitening(paths["whitening"], vectors.shape[1], vectors.shape[0],
                                       expected_dim=config.whitening.dim)
        if paths.get("augmented") is None and config.augmentation.k:
            raise ArtifactError("augmentation.k is set but there is no augmentation "
                                "artifact: run dvc repro")
        augmented = (None if paths.get("augmented") is None else
                     load_augmented(paths["augmented"], vectors, config.augmentation.k))
        space = vectors if augmented is None else augmented
        index = None
        if paths.get("index") is not None:
            index = load_index(paths["index"], space, whitening, config.index)
        modelling = config.modelling
        vectorizer = Vectorizer.load(paths["model"], batch_size=modelling.batch_size,
                                     expected_dim=vectors.shape[1], runtime=modelling.runtime,
                                     precision=modelling.precision,
                                     inference_model=paths.get("inference_model"))
        return cls(vectors, names, vectorizer, config.etl, images, whitening=whitening,
                   query_expansion=config.serve.query_expansion, index=index,
                   index_config=config.index, ranking=Ranking.from_config(config.serve),
                   augmented=augmented)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def row(self, name: str) -> Optional[int]:
        """The row of a collection image, or None when no image has that name."""
        if self._rows is None:
            self._rows = {str(item): row for row, item in enumerate(self.names)}
        return self._rows.get(name)

    def image(self, row: int) -> np.ndarray:
        """The ETL image (S, S, 3) RGB of a collection row."""
        if self.images is None:
            raise ValueError("this engine was loaded without the landing images")
        return np.asarray(self.images[row])

    def thumbnail(self, name: str) -> np.ndarray:
        """The ETL image (S, S, 3) RGB of a collection image, by name."""
        row = self.row(name)
        if row is None:
            raise KeyError(name)
        return self.image(row)

    def vector(self, row: int) -> np.ndarray:
        """The embedding (D,) ``float32`` of a collection row (more like this)."""
        return np.asarray(self.vectors[row], dtype=np.float32)

    def read_query(self, query: Union[PathLike, bytes], source: str = "query") -> np.ndarray:
        """Reads a query file (or its bytes) exactly as the ETL read the collection.

        The decode settings (pixel limit, reduced JPEG decoding) are those of the
        artifacts that answer, whatever the working tree's ``params.yaml`` says.

        Returns:
            (H, W, 3) ``uint8`` BGR.
        """
        if isinstance(query, bytes):
            return decode_with(query, self.etl_config, source)
        return read_image(query, self.etl_config)

    def prepare(self, query: Query) -> np.ndarray:
        """The ETL output for a query: a file path, or an OpenCV BGR array."""
        if isinstance(query, (str, Path)):
            query = self.read_query(query)
        return etl_transform(query, self.etl_config)               # (S, S, 3) RGB

    def model_input(self, query: Union[Query, bytes], source: str = "query") -> np.ndarray:
        """The ETL and FE output for a query (a path, BGR array or file bytes).

        Returns:
            (S, S, 3) ``float32``, what the model embeds.
        """
        if isinstance(query, bytes):
            query = self.read_query(query, source)
        return preprocess(self.prepare(query)[np.newaxis])[0]     # (S, S, 3)

    def embed(self, query: Query) -> np.ndarray:
        """Embeds one query through the same ETL, FE and saved model: (D,) ``float32``."""
        if self.vectorizer is None:
            raise ValueError("this engine was loaded without a vectorizer model")
        return self.vectorizer.transform(self.model_input(query)[np.newaxis])[0]   # (D,)

    def _query_space(self, vector: np.ndarray) -> np.ndarray:
        """An embedding (D,) in the search space: whitened when whitening is on, (D',)."""
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)  # (D,)
        if vector.shape[0] != self.vectors.shape[1]:
            raise ValueError(f"query vector has {vector.shape[0]} dimensions, the index "
                             f"{self.vectors.shape[1]}")
        if self.whitening is not None:
            vector = self.whitening.apply(vector[np.newaxis])[0]   # (D',)
        return vector

    def scores(self, vector: np.ndarray) -> np.ndarray:
        """Similarity of an embedding to every collection image: (N,) ``float32``.

        The embedding is whitened like the collection (when whitening is on), expanded
        (when query expansion is on), then ranked by cosine, then its best candidates
        re-ranked (when re-ranking is on, :mod:`lib.retrieval.ranking`). Every row is
        scored: this is the exact scan, whatever the index.
        """
        return ranked_scores(self.exact_index(), self._query_space(vector), self.ranking)

    def folder_rows(self, folder: str) -> np.ndarray:
        """The sorted rows (R,) of the images under a folder of the collection, a prefix
        of the names at a ``/`` (``shoes``, ``2024/june``); none when it holds no image."""
        prefix = folder_prefix(folder)
        rows = self._folders.get(prefix)      # held locally: another thread may clear
        if rows is None:
            if len(self._folders) >= _FOLDERS_KEPT:
                self._folders.clear()
            rows = self._folders[prefix] = rows_under(self.names, prefix)
        return rows

    def search_vector(self, vector: np.ndarray, n: int, *, offset: int = 0,
                      folder: Optional[str] = None,
                      min_score: Optional[float] = None) -> List[Tuple[float, int]]:
        """The ``n`` rows most similar to an embedding, as (cosine, row), best first.

        Through the index: the exact scan, or an approximate index whose candidates are
        re-scored by exact cosine.

        Args:
            vector: (D,) embedding.
            n: How many results (a page).
            offset: Results skipped first (the pages before).
            folder: Only images under this folder (see :meth:`folder_rows`): the scan
                scores only them, FAISS skips every other entry as it searches.
            min_score: Only results with at least this cosine.
        """
        n = positive_int(n, "n")
        offset = positive_int(offset, "a non-zero offset") if offset else 0
        within = None if folder is None else self.folder_rows(folder)
        if within is not None and within.shape[0] == 0:
            return []
        values, rows = ranked_search(self.index, self._query_space(vector), offset + n,
                                     within, self.ranking)                          # (K,)
        found = [(float(value), int(row)) for value, row in zip(values, rows)
                 if row >= 0][offset:]
        if min_score is not None:
            found = [(value, row) for value, row in found if value >= min_score]
        return found

    def most_similar(self, query: Query, n: int = 5, **controls) -> List[Tuple[float, str]]:
        """The ``n`` collection images most similar to ``query``.

        Args:
            query: An image file path, or an OpenCV BGR ``uint8`` array.
            n: How many results; more than the collection holds returns all of it.
            **controls: ``offset``, ``folder``, ``min_score`` (see
                :meth:`search_vector`).

        Returns:
            (cosine similarity, image name) pairs, best first.
        """
        n = positive_int(n, "n")
        return [(score, str(self.names[row]))
                for score, row in self.search_vector(self.embed(query), n, **controls)]
