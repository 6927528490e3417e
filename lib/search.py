"""The search engine: embeds a query the way the pipeline embedded the collection."""
import logging
from pathlib import Path
from typing import List, Mapping, Optional, Tuple, Union

import numpy as np

from lib.artifacts import ArtifactError, load_npy
from lib.config import Config, EtlConfig, IndexConfig
from lib.errors import PathLike
from lib.features import preprocess
from lib.images import decode_with, etl_transform, read_image
from lib.index import VectorIndex, space_rows
from lib.index_store import load_index
from lib.similarity import get_cosine_similarity, l2_normalize, top_k
from lib.vectorizer import Vectorizer
from lib.whitening import Whitening, load_whitening

logger = logging.getLogger(__name__)

Query = Union[str, Path, np.ndarray]

_CHUNK = 65536  # database rows scored per step


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
        query_expansion: ``k`` of average query expansion: the query is replaced by the
            mean of itself and its ``k`` best matches, then searched again; 0 is off.
        index: Optional vector index (the index stage's artifact): an approximate one
            proposes the candidates of :meth:`search_vector`, re-scored by exact cosine;
            None or an ``exact`` one keeps the linear scan.
        index_config: The index's search-time settings (``rerank``, ``ef_search``,
            ``nprobe``).
    """

    def __init__(self, vectors: np.ndarray, names: np.ndarray,  # pylint: disable=too-many-arguments
                 vectorizer: Optional[Vectorizer], etl_config: EtlConfig,
                 images: Optional[np.ndarray] = None, whitening: Optional[Whitening] = None,
                 query_expansion: int = 0, *, index: Optional[VectorIndex] = None,
                 index_config: Optional[IndexConfig] = None):
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
        self.query_expansion = query_expansion
        self._rows: Optional[dict] = None
        self.index = index if index is not None and index.approximate else None
        self.index_config = index_config or IndexConfig()
        self._space: Optional[np.ndarray] = None
        self._space_norms: Optional[np.ndarray] = None
        if self.index is None:       # the exact scan needs the whole search space now
            self._exact_space()

    def _exact_space(self) -> Tuple[np.ndarray, np.ndarray]:
        """The search space of the exact scan and its row norms, computed once.

        The search space is the vectors themselves, or their whitened form: (N, D'),
        and (N,) norms. With an approximate index it is only made when the whole
        collection must be scored (:meth:`scores`).
        """
        if self._space is None:
            space = self.vectors if self.whitening is None else self.whitening.apply(
                self.vectors)                                      # (N, D')
            norms = np.concatenate([
                np.linalg.norm(np.asarray(space[i:i + _CHUNK], dtype=np.float32), axis=1)
                for i in range(0, space.shape[0], _CHUNK)])        # (N,)
            if not np.isfinite(norms).all():
                raise ArtifactError("the index vectors hold NaN or infinite values")
            self._space, self._space_norms = space, norms
        return self._space, self._space_norms

    @classmethod
    def load(cls, vectors_path: PathLike, names_path: PathLike, model_dir: PathLike,
             etl_config: EtlConfig, images_path: Optional[PathLike] = None, *,
             batch_size: int = 32, runtime: str = "auto",
             whitening_path: Optional[PathLike] = None,
             whitening_dim: Optional[int] = None,
             query_expansion: int = 0, precision: str = "fp32",
             inference_model: Optional[PathLike] = None, index_path: Optional[PathLike] = None,
             index_config: Optional[IndexConfig] = None) -> "ImageSearchEngine":
        """Loads the engine from the pipeline's artifacts (memory-mapped, no pickle).

        ``runtime`` is the embedding runtime (``modelling.runtime``), chosen by the same
        rule as in the modelling stage (``lib.vectorizer.choose_runtime``).
        ``precision`` (``modelling.precision``) must be the one ``inference_model``
        records: queries are embedded exactly as the collection was.
        ``whitening_dim`` is the ``whitening.dim`` param; a whitening artifact saved with
        another dim is stale and refused. ``index_path`` is the index stage's artifact,
        checked against the vectors, the whitening and ``index_config``.
        """
        # pylint: disable=too-many-arguments
        vectors = load_npy(vectors_path, dtype=np.float32, ndim=2, mmap=True)
        names = load_npy(names_path, kind="U", ndim=1)
        images = None
        if images_path is not None:
            side = etl_config.image_size
            images = load_npy(images_path, dtype=np.uint8, ndim=4, mmap=True,
                              trailing_shape=(side, side, 3))
        check_index(vectors, names, images)       # before the slow model load
        whitening = None
        if whitening_path is not None:
            whitening = load_whitening(whitening_path, vectors.shape[1], vectors.shape[0],
                                       expected_dim=whitening_dim)
        index_config = index_config or IndexConfig()
        index = None
        if index_path is not None:
            index = load_index(index_path, vectors, whitening, index_config)
        vectorizer = Vectorizer.load(model_dir, batch_size=batch_size,
                                     expected_dim=vectors.shape[1], runtime=runtime,
                                     precision=precision, inference_model=inference_model)
        return cls(vectors, names, vectorizer, etl_config, images, whitening=whitening,
                   query_expansion=query_expansion, index=index, index_config=index_config)

    @classmethod
    def from_config(cls, config: Config, paths: Mapping[str, Path],
                    with_images: bool = True) -> "ImageSearchEngine":
        """Loads the engine the way a configuration describes: serving, warm mode,
        evaluation and the service all come here, so they honour every setting alike.

        Args:
            config: The configuration the artifacts were built with (for ``--rev``,
                that revision's; see :mod:`lib.pinning`).
            paths: Local path of each artifact, by ``paths`` key (the pinned ones).
                Without a ``whitening`` path (a build older than the whitening stage)
                whitening is off and must be off in ``config``; without an
                ``inference_model`` path (a build older than precisions) the
                precision is ``fp32`` and must be ``fp32`` in ``config``.
            with_images: Also map the landing images (for result pictures).
        """
        if "whitening" not in paths and config.whitening.dim:
            raise ArtifactError("whitening.dim is set but there is no whitening artifact: "
                                "run dvc repro")
        # A build older than the index stage has no index: the exact scan answers.
        if "index" not in paths and config.index.kind in ("hnsw", "ivfpq"):
            raise ArtifactError(f"index.kind is {config.index.kind} but there is no index "
                                "artifact: run dvc repro")
        return cls.load(
            paths["vectors"], paths["names"], paths["model"], config.etl,
            images_path=paths["images"] if with_images else None,
            batch_size=config.modelling.batch_size, runtime=config.modelling.runtime,
            whitening_path=paths.get("whitening"), whitening_dim=config.whitening.dim,
            query_expansion=config.serve.query_expansion,
            precision=config.modelling.precision,
            inference_model=paths.get("inference_model"), index_path=paths.get("index"),
            index_config=config.index)

    def thumbnail(self, name: str) -> np.ndarray:
        """The ETL image (S, S, 3) RGB of a collection image, by name."""
        if self.images is None:
            raise ValueError("this engine was loaded without the landing images")
        if self._rows is None:
            self._rows = {str(item): row for row, item in enumerate(self.names)}
        return np.asarray(self.images[self._rows[name]])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

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

    def embed(self, query: Query) -> np.ndarray:
        """Embeds one query through the same ETL, FE and saved model: (D,) ``float32``."""
        if self.vectorizer is None:
            raise ValueError("this engine was loaded without a vectorizer model")
        rgb = self.prepare(query)[np.newaxis]                      # (1, S, S, 3) uint8
        return self.vectorizer.transform(preprocess(rgb))[0]       # (D,)

    def _cosine(self, query: np.ndarray) -> np.ndarray:
        """Cosine of a query (D',) with every row of the search space: (N,).

        The cosine is :func:`lib.similarity.get_cosine_similarity`, given the rows'
        norms computed once at load.
        """
        space, norms = self._exact_space()
        scores = np.empty(len(self), dtype=np.float32)              # (N,)
        for start in range(0, len(self), _CHUNK):
            block = np.asarray(space[start:start + _CHUNK], dtype=np.float32)
            scores[start:start + block.shape[0]] = get_cosine_similarity(
                query, block, y_norms=norms[start:start + block.shape[0]])  # (C,)
        return scores

    def scores(self, vector: np.ndarray) -> np.ndarray:
        """Similarity of an embedding to every collection image: (N,) ``float32``.

        The embedding is whitened like the collection (when whitening is on), then
        ranked by cosine; with query expansion the query is replaced by the mean of
        its unit vector and the unit vectors of its ``k`` best matches, and the scores
        are the cosines to that expanded query. Every row is scored: this is the exact
        scan, whatever the index.
        """
        vector = self._query_space(vector)                         # (D',)
        query = l2_normalize(vector)                               # (D',)
        scores = self._cosine(vector)                              # (N,)
        if self.query_expansion:
            rows, _ = top_k(scores, self.query_expansion)
            neighbours = np.asarray(self._exact_space()[0][np.sort(rows)], dtype=np.float32)
            expanded = query + l2_normalize(neighbours).sum(axis=0)  # (D',)
            scores = self._cosine(expanded)
        return scores

    def _query_space(self, vector: np.ndarray) -> np.ndarray:
        """An embedding (D,) in the search space: whitened when whitening is on, (D',)."""
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)  # (D,)
        if vector.shape[0] != self.vectors.shape[1]:
            raise ValueError(f"query vector has {vector.shape[0]} dimensions, the index "
                             f"{self.vectors.shape[1]}")
        if self.whitening is not None:
            vector = self.whitening.apply(vector[np.newaxis])[0]   # (D',)
        return vector

    def space_of(self, rows: np.ndarray) -> np.ndarray:
        """Search-space unit vectors of some collection rows: (R, D')."""
        return space_rows(self.vectors, self.whitening, rows)

    def _indexed(self, vector: np.ndarray, n: int) -> Tuple[np.ndarray, np.ndarray]:
        """The best ``n`` (rows, cosines) through the approximate index, with expansion."""
        query = self._query_space(vector)                          # (D',)
        if self.query_expansion:
            rows, _ = self.index.search(query, self.query_expansion, self.index_config,
                                        self.space_of)
            query = l2_normalize(query) + self.space_of(np.sort(rows)).sum(axis=0)  # (D',)
        return self.index.search(query, n, self.index_config, self.space_of)

    def search_vector(self, vector: np.ndarray, n: int) -> List[Tuple[float, int]]:
        """The ``n`` rows most similar to an embedding, as (cosine, row), best first.

        Through the approximate index when there is one (candidates re-scored by exact
        cosine), else the exact scan.
        """
        n = _check_n(n)
        if self.index is not None:
            rows, values = self._indexed(vector, n)
        else:
            rows, values = top_k(self.scores(vector), n)
        return [(float(value), int(row)) for row, value in zip(rows, values)]

    def most_similar(self, query: Query, n: int = 5) -> List[Tuple[float, str]]:
        """The ``n`` collection images most similar to ``query``.

        Args:
            query: An image file path, or an OpenCV BGR ``uint8`` array.
            n: How many results; more than the collection holds returns all of it.

        Returns:
            (cosine similarity, image name) pairs, best first.
        """
        n = _check_n(n)
        return [(score, str(self.names[row]))
                for score, row in self.search_vector(self.embed(query), n)]


def check_index(vectors: np.ndarray, names: np.ndarray,
                images: Optional[np.ndarray] = None) -> None:
    """Checks that the index arrays have the designed form and are row-aligned.

    Raises:
        ArtifactError: Wrong shape or dtype, empty, duplicate names, or arrays whose
            row counts differ (artifacts from different runs, or tampered with).
    """
    if vectors.ndim != 2 or vectors.dtype != np.float32:
        raise ArtifactError(f"vectors must be (N, D) float32, got {vectors.shape} "
                            f"{vectors.dtype}")
    if names.ndim != 1 or names.dtype.kind != "U":
        raise ArtifactError(f"image names must be (N,) text, got {names.shape} {names.dtype}")
    if names.shape[0] != vectors.shape[0]:
        raise ArtifactError(f"{names.shape[0]} image names for {vectors.shape[0]} vectors: "
                            "names and vectors are out of step")
    if images is not None and images.shape[0] != vectors.shape[0]:
        raise ArtifactError(f"{images.shape[0]} images for {vectors.shape[0]} vectors: "
                            "landing images and vectors are out of step")
    if vectors.shape[0] == 0:
        raise ArtifactError("the index is empty")
    if np.unique(names).shape[0] != names.shape[0]:
        raise ArtifactError("the image names are not unique")


def _check_n(n) -> int:
    """Validates a result count."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be a positive integer, got {n!r}")
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    return int(n)
