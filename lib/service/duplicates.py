"""The near-duplicate groups of the version served: ``GET /duplicates``.

Reads the report ``python stages/duplicates.py`` writes (``duplicates.json`` in the
folder ``duplicates.output`` of ``params.yaml``, relative to the repository root) when
it is the report of the version answering: its artifact hashes (for a report written
before they were recorded, its version line) are those of that version. No report, an
unreadable one, or one of another version: 404 with one line saying to run
``python stages/duplicates.py``. The report is read again on every request (a new one
shows at once; a version swapped in makes the old report stale).
"""
import json
from pathlib import Path
from typing import Any, Dict, List

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from lib.config import Config
from lib.errors import one_line, printable
from lib.service.engines import EngineHolder, Served
from lib.service.openapi import errors

REPORT = "duplicates.json"
_RUN = "run `python stages/duplicates.py`"


class DuplicatePhoto(BaseModel):
    """One photo of a group."""

    name: str = Field(description="the image's name in the collection")
    score: float = Field(description="its best cosine to another photo of the group")


class DuplicateGroup(BaseModel):
    """Near-identical photos."""

    group: int = Field(description="1 for the largest group")
    size: int
    photos: List[DuplicatePhoto]


class DuplicatesReport(BaseModel):
    """The near-duplicate groups of the version served, largest first."""

    version: str = Field(description="the version served (the report's own)")
    threshold: float = Field(description="lowest cosine of a near-duplicate pair")
    neighbours: int = Field(description="neighbours examined per photo")
    index: str = Field(description="the index the pairs were found through")
    photos: int = Field(description="photos in the collection")
    photos_in_groups: int
    groups: List[DuplicateGroup]


def _same_version(report: Dict[str, Any], served: Served) -> bool:
    """Whether a report was made from the artifacts of the version served."""
    hashes = report.get("hashes")
    if hashes is not None:
        return hashes == served.version.hashes
    return report.get("version") == served.version.describe()


def read_report(folder: Path, shown: str, served: Served) -> DuplicatesReport:
    """The report in ``folder`` (shown as ``shown``), if it is of the version served.

    Raises:
        HTTPException: 404 with one line: no report, unreadable, or another version's.
    """
    path = folder / REPORT
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HTTPException(404, f"no near-duplicates report in {shown}/: {_RUN} to make "
                                 "one") from None
    except (OSError, ValueError) as err:
        raise HTTPException(404, f"cannot read the near-duplicates report {shown}/{REPORT} "
                                 f"({one_line(err)}): {_RUN} to make it again") from None
    if not isinstance(report, dict) or not _same_version(report, served):
        made = report.get("version", "unknown") if isinstance(report, dict) else "unknown"
        raise HTTPException(404, f"the near-duplicates report in {shown}/ is of another "
                                 f"version ({printable(str(made))}), not the one served: "
                                 f"{_RUN} to make one for it")
    try:
        groups = [DuplicateGroup(group=int(entry["group"]), size=len(entry["images"]),
                                 photos=[DuplicatePhoto(name=str(name), score=float(score))
                                         for name, score in zip(entry["images"],
                                                                entry["best_cosine"],
                                                                strict=True)])
                  for entry in report["groups"]]
        return DuplicatesReport(
            version=served.version.describe(), threshold=float(report["threshold"]),
            neighbours=int(report["neighbours"]), index=str(report["index"]),
            photos=int(report["photos"]), groups=groups,
            photos_in_groups=sum(group.size for group in groups))
    except (KeyError, TypeError, ValueError) as err:
        raise HTTPException(404, f"the near-duplicates report {shown}/{REPORT} is not one "
                                 f"stages/duplicates.py wrote ({one_line(err)}): {_RUN} to "
                                 "make it again") from None


def duplicates_routes(holder: EngineHolder, config: Config) -> APIRouter:
    """``GET /duplicates``, reading the report folder ``config.duplicates.output``."""
    # The route functions are registered by their decorators.
    # pylint: disable=unused-variable
    router = APIRouter()
    shown = config.duplicates.output.rstrip("/")

    @router.get("/duplicates", response_model=DuplicatesReport,
                responses=errors(404, s404="no near-duplicates report of the version served: "
                                           "run python stages/duplicates.py"))
    async def duplicates() -> DuplicatesReport:
        """The groups of near-identical photos of the version served, with each photo's
        best cosine to another of its group (the report of ``stages/duplicates.py``)."""
        return await run_in_threadpool(read_report, holder.root / shown, shown, holder.current)

    return router
