"""The search routes: by upload or by name, with scope, cutoff and paging; thumbnails.

- ``POST /search`` with a multipart ``image`` file, ``GET /search?name=NAME`` for a
  collection image (more like this: its stored embedding, no re-embedding); both take
  ``n``, ``folder``, ``min_score`` and ``offset`` (:mod:`lib.retrieval.controls`, the
  command line's rules; a bad value is a 422, a folder without images a 404);
- ``GET /images/{name}``: a collection image's landing thumbnail (JPEG); the name may
  hold any character, ``/`` and newline included (percent-encoded in the URL).

Names are only ever looked up in the loaded index: no request reads a file by name.
"""
from typing import List, Optional

import cv2
import numpy as np
from fastapi import APIRouter, Depends, File, HTTPException, Path as PathParam, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.convertors import Convertor, register_url_convertor

from lib.config import Config
from lib.retrieval import MAX_SCORE, MIN_SCORE, scope_size, search_page, SearchControls
from lib.service.batching import BatchingEmbedder
from lib.service.engines import EngineHolder, Served
from lib.service.openapi import errors


class AnyPathConvertor(Convertor):
    """A path parameter that takes every character, newlines too (Starlette's ``path``
    stops at a newline, so an image whose name holds one had no thumbnail)."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", AnyPathConvertor())


class Match(BaseModel):
    """One result."""

    rank: int = Field(description="1 for the best; after an offset K, from K + 1")
    score: float = Field(description="cosine similarity to the query")
    name: str = Field(description="the image's name in the collection")


class SearchResult(BaseModel):
    """The answer to one search: one page of results."""

    version: str = Field(description="the artifact version that answered")
    query: str = Field(description="the uploaded file's name, or the name searched by")
    images: int = Field(description="images in the collection")
    scope: int = Field(description="images searched: the folder's, else the collection's")
    folder: Optional[str] = Field(None, description="the folder searched, if one was given")
    min_score: Optional[float] = Field(None, description="the cutoff, if one was given")
    offset: int = Field(0, description="results skipped before this page")
    more: bool = Field(False, description="whether the next page (offset + n) has results")
    results: List[Match]


def search_controls(
        folder: Optional[str] = Query(None, min_length=1, description=(
            "only images under this folder of the collection: the start of their names, "
            "e.g. shoes for shoes/a.jpg (404 when it holds none)")),
        min_score: Optional[float] = Query(None, ge=MIN_SCORE, le=MAX_SCORE,
                                           allow_inf_nan=False,
                                           description="only results with at least this "
                                                       "cosine"),
        offset: int = Query(0, ge=0, description="results skipped first: the next page is "
                                                 "offset + n")) -> SearchControls:
    """The search controls of a request (FastAPI checks them: 422 with one line)."""
    return SearchControls(folder, min_score, offset)


def _answer(served: Served, vector: np.ndarray, n: int, query: str,
            controls: SearchControls) -> SearchResult:
    """Ranks the collection against an embedding (D,): one page.

    Raises:
        NotInCollectionError: The folder holds no image (a 404).
    """
    page = search_page(served.engine, vector, n, controls)
    names = served.engine.names
    return SearchResult(
        version=served.version.describe(), query=query, images=len(served.engine),
        scope=page.scope, folder=controls.folder, min_score=controls.min_score,
        offset=controls.offset, more=page.more,
        results=[Match(rank=rank, score=score, name=str(names[row]))
                 for rank, (score, row) in enumerate(page.hits, start=controls.offset + 1)])


def _row(served: Served, name: str) -> int:
    """The row of a collection image; 404 when the loaded version has no such name."""
    row = served.engine.row(name)
    if row is None:
        raise HTTPException(404, f"no image named {name!r} in the collection")
    return row


def _thumbnail_jpeg(served: Served, row: int) -> bytes:
    """The landing image of a row, JPEG-encoded."""
    rgb = served.engine.image(row)                                       # (S, S, 3) RGB
    ok, data = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise ValueError(f"cannot encode the thumbnail of row {row}")
    return data.tobytes()


def search_routes(holder: EngineHolder, embedder: BatchingEmbedder, config: Config
                  ) -> APIRouter:
    """``/search`` (both methods) and ``/images/{name}``, answering with ``holder``'s engine.

    Args:
        holder: Its engine is loaded already.
        embedder: Embeds the uploads, batched.
        config: The workspace configuration (``serve.top_n``, ``service.max_results``).
    """
    # The route functions are registered by their decorators.
    # pylint: disable=unused-variable
    router = APIRouter()
    count = Query(config.serve.top_n, ge=1, le=config.service.max_results,
                  description="how many results (a page)")
    unknown = "no image of that name, or no image in the folder"
    image_types = {"requestBody": {"content": {"multipart/form-data": {
        "encoding": {"image": {"contentType": "image/*"}}}}}}

    @router.post("/search", response_model=SearchResult,
                 responses=errors(400, 404, 413, 422, s404="no image in the folder"),
                 openapi_extra=image_types)
    async def search_upload(image: UploadFile = File(..., description="the query photo: any "
                                                                      "format OpenCV reads"),
                            n: int = count,
                            controls: SearchControls = Depends(search_controls)
                            ) -> SearchResult:
        """The collection images most similar to an uploaded photo."""
        data = await image.read()
        served = holder.current                      # one version for the whole request
        scope_size(served.engine, controls.folder)   # a folder without images: no embedding
        vector = await embedder.embed(served.engine.vectorizer,
                                      lambda: served.engine.model_input(data, source="upload"))
        return await run_in_threadpool(_answer, served, vector, n,
                                       image.filename or "upload", controls)

    @router.get("/search", response_model=SearchResult,
                responses=errors(404, 422, s404=unknown))
    async def search_name(name: str = Query(..., description="a collection image's name",
                                            examples=["shoes/abc.jpg"]),
                          n: int = count, controls: SearchControls = Depends(search_controls)
                          ) -> SearchResult:
        """The collection images most similar to one of its own (more like this: its
        stored embedding, no re-embedding)."""
        served = holder.current
        vector = served.engine.vector(_row(served, name))                    # (D,)
        return await run_in_threadpool(_answer, served, vector, n, name, controls)

    @router.get("/images/{name:anypath}", response_class=Response,
                responses={200: {"content": {"image/jpeg": {}},
                                 "description": "the thumbnail, JPEG"},
                           **errors(404, s404="no image of that name")})
    async def thumbnail(name: str = PathParam(..., description=(
            "a collection image's name; each /-separated part percent-encoded"),
            examples=["shoes/abc.jpg"])) -> Response:
        """A collection image as the pipeline stored it (its landing thumbnail)."""
        served = holder.current
        data = await run_in_threadpool(_thumbnail_jpeg, served, _row(served, name))
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "no-cache"})

    return router
