"""One query at two versions, side by side (``serve.py --compare REV``).

Each version's engine answers the query with the same controls (:func:`answer_at`);
:func:`side_by_side` prints both rankings (rank, score, name, as serving prints them)
and which results entered, left or moved (:func:`lib.evaluation.compare.changes_table`),
and :func:`render_side_by_side` draws a row per version, the query at its left
(:func:`lib.photos.render_comparison`).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from lib.errors import PathLike, printable
from lib.evaluation.compare import changes_table
from lib.photos import match_image, render_comparison
from lib.retrieval import ImageSearchEngine, search_page, SearchControls


@dataclass(frozen=True)
class VersionAnswer:
    """One version's answer to the query.

    Attributes:
        label: The version in the text: the revision as given, or ``the workspace``.
        tag: The version in the picture: the short git commit, or ``workspace``.
        images: Images in that version's collection.
        scope: Images searched (those of the folder, when one is given).
        results: (cosine, name) of each result, best first.
        pictures: What the picture draws for each result, (H, W, 3) ``uint8`` RGB: the
            original photo when it is still the one that version indexed, else its
            thumbnail (:func:`lib.photos.match_image`).
    """

    label: str
    tag: str
    images: int
    scope: int
    results: List[Tuple[float, str]]
    pictures: List[np.ndarray]

    @property
    def names(self) -> List[str]:
        """The result names, best first."""
        return [name for _, name in self.results]


def answer_at(engine: ImageSearchEngine, query_bgr: np.ndarray, n: int,  # pylint: disable=too-many-arguments
              controls: SearchControls, master: Path, *, label: str, tag: str
              ) -> VersionAnswer:
    """The first ``n`` results of a query at one version, with their pictures.

    Args:
        engine: That version's engine.
        query_bgr: The query, (H, W, 3) ``uint8`` BGR, decoded as that version decodes.
        n: Results asked for.
        controls: Folder scope and score cutoff (no offset: ranks start at 1).
        master: The collection folder the originals are drawn from.
        label: See :class:`VersionAnswer`.
        tag: See :class:`VersionAnswer`.
    """
    page = search_page(engine, engine.embed(query_bgr), n, controls)
    results = [(score, str(engine.names[row])) for score, row in page.hits]
    pictures = [match_image(master, name, engine.thumbnail(name), engine.etl_config)
                for _, name in results]
    return VersionAnswer(label, tag, len(engine), page.scope, results, pictures)


def side_by_side(query: str, old: VersionAnswer, new: VersionAnswer,
                 controls: SearchControls) -> str:
    """Both rankings, then how the old one became the new one, as text.

    Args:
        query: The query as the user named it.
        old: The answer of the version compared against (the revision).
        new: The answer of the version compared (the workspace).
        controls: The controls both answered with (named in each header).
    """
    blocks = []
    for answer in (old, new):
        given = controls.describe(answer.scope)
        blocks.append(f"{printable(answer.label)}: {len(answer.results)} most similar of "
                      f"{answer.images} images to {printable(query)}"
                      f"{f' ({printable(given)})' if given else ''}:")
        blocks.extend(f"{rank:>3}  {score:.4f}  {printable(name)}"
                      for rank, (score, name) in enumerate(answer.results, start=1))
    blocks.append(changes_table(old.names, new.names, printable(old.label),
                                printable(new.label)))
    return "\n".join(blocks)


def render_side_by_side(query_rgb: np.ndarray, answers: Sequence[VersionAnswer],
                        path: PathLike, query_name: str) -> None:
    """Writes the picture: a row per version, in order, each starting with the query
    captioned with the version's tag, then its results with rank and score."""
    render_comparison(query_rgb, [(answer.tag, [
        (picture, name, score) for picture, (score, name) in zip(answer.pictures,
                                                                 answer.results)])
        for answer in answers], path, query_name=query_name)
