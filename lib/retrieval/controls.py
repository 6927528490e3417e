"""Search controls: a folder scope, a score cutoff and paging, checked in one place.

Every way to search (the command line, its warm mode, the HTTP service and its page)
takes the same three controls, with the same rules:

- ``folder``: only images under this folder of the collection, a prefix of the names
  that ends at a ``/`` (``shoes``, ``2024/june``; a trailing ``/`` is the same); any
  non-empty text. A folder that holds no image is a :class:`NotInCollectionError`.
- ``min_score``: only results with at least this cosine; a finite number from -1 to 1.
- ``offset``: results skipped first (the pages before): an integer >= 0.

:func:`search_page` answers one page and says whether a next page has results.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Protocol, Tuple, Union

import numpy as np

from lib.errors import InputError, NotInCollectionError

MIN_SCORE = -1.0       # the lowest and highest cosine a cutoff may name
MAX_SCORE = 1.0

Hits = List[Tuple[float, int]]


def folder_prefix(folder: str) -> str:
    """The name prefix of a folder: ``shoes`` and ``shoes/`` give ``shoes/``."""
    return folder.strip("/") + "/"


def rows_under(names: np.ndarray, folder: str) -> np.ndarray:
    """The sorted rows (R,) of the names (N,) under a folder; empty when it holds none."""
    return np.flatnonzero(np.char.startswith(names, folder_prefix(folder)))


def check_folder(value: object) -> str:
    """A folder scope: any non-empty text.

    Raises:
        InputError: Not text, or empty.
    """
    if not isinstance(value, str) or not value:
        raise InputError(f"expected a folder of the collection (the start of the image "
                         f"names, e.g. shoes for shoes/a.jpg), got {value!r}")
    return value


def check_min_score(value: Union[str, float]) -> float:
    """A score cutoff: a finite number from -1 to 1 (text is parsed).

    Raises:
        InputError: Not a number, not finite, or out of range.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not MIN_SCORE <= number <= MAX_SCORE:
        raise InputError(f"expected a finite number from {MIN_SCORE:g} to {MAX_SCORE:g} "
                         f"(a cosine), got {value!r}")
    return number


def check_offset(value: Union[str, int]) -> int:
    """A page offset: an integer >= 0 (text is parsed).

    Raises:
        InputError: Not an integer, or negative.
    """
    try:
        number = int(value) if not isinstance(value, (bool, float)) else -1
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        raise InputError(f"expected an integer >= 0 (results skipped), got {value!r}")
    return number


@dataclass(frozen=True)
class SearchControls:
    """The controls of one search, checked when made.

    Attributes:
        folder: Only images under this folder; None: the whole collection.
        min_score: Only results with at least this cosine; None: any.
        offset: Results skipped first.

    Raises:
        InputError: A value the rules above do not allow (named in the message).
    """

    folder: Optional[str] = None
    min_score: Optional[float] = None
    offset: int = 0

    def __post_init__(self) -> None:
        for name, check in (("folder", check_folder), ("min_score", check_min_score),
                            ("offset", check_offset)):
            value = getattr(self, name)
            if value is None and name != "offset":
                continue
            try:
                object.__setattr__(self, name, check(value))
            except InputError as err:
                raise InputError(f"{name}: {err}") from None

    def search_kwargs(self) -> Dict[str, object]:
        """The keyword arguments of ``ImageSearchEngine.search_vector``."""
        return {"offset": self.offset, "folder": self.folder, "min_score": self.min_score}

    def describe(self, scope: int) -> str:
        """The controls given, for a header: ``folder shoes/ (4 images), cosine >= 0.5,
        from rank 6``; empty when none is."""
        parts = []
        if self.folder is not None:
            parts.append(f"folder {folder_prefix(self.folder)} ({scope} images)")
        if self.min_score is not None:
            parts.append(f"cosine >= {self.min_score:g}")
        if self.offset:
            parts.append(f"from rank {self.offset + 1}")
        return ", ".join(parts)


class Searchable(Protocol):
    """What :func:`search_page` needs of an ``ImageSearchEngine``."""

    names: np.ndarray

    def __len__(self) -> int: ...

    def folder_rows(self, folder: str) -> np.ndarray:
        """The sorted rows (R,) under a folder."""

    def search_vector(self, vector: np.ndarray, n: int, *, offset: int = 0,
                      folder: Optional[str] = None,
                      min_score: Optional[float] = None) -> Hits:
        """The ``n`` best (cosine, row) after ``offset``, in scope, above the cutoff."""


@dataclass(frozen=True)
class Page:
    """One page of results.

    Attributes:
        hits: (cosine, row) of each result, best first.
        scope: Images searched (the folder's, or the whole collection).
        more: Whether the next page (``offset + n``) has results.
    """

    hits: Hits
    scope: int
    more: bool


def require_folder(rows: np.ndarray, folder: str) -> int:
    """The number of rows (R,) under a folder, which must hold some.

    Raises:
        NotInCollectionError: The folder holds no image.
    """
    if not rows.shape[0]:
        raise NotInCollectionError(
            f"no image in the folder {folder!r} of the collection: a folder is the start "
            "of the image names, e.g. shoes for shoes/a.jpg")
    return int(rows.shape[0])


def scope_size(engine: Searchable, folder: Optional[str]) -> int:
    """How many images a search covers.

    Raises:
        NotInCollectionError: The folder holds no image.
    """
    return len(engine) if folder is None else require_folder(engine.folder_rows(folder), folder)


def search_page(engine: Searchable, vector: np.ndarray, n: int,
                controls: SearchControls = SearchControls()) -> Page:
    """The ``n`` results of an embedding (D,) after ``controls.offset``, in scope.

    One more result than ``n`` is asked for, to tell whether a next page has any. An
    offset past the images in scope asks the index for nothing.

    Raises:
        NotInCollectionError: The folder holds no image.
    """
    scope = scope_size(engine, controls.folder)
    if controls.offset >= scope:
        return Page([], scope, False)
    hits = engine.search_vector(vector, n + 1, **controls.search_kwargs())
    return Page(hits[:n], scope, len(hits) > n)
