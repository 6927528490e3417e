"""The FastAPI application: search by upload or by name, thumbnails, the web page.

Routes (OpenAPI docs at ``/docs``, from local files: ``docs_page``):

- ``POST /search?n=N`` with a multipart ``image`` file: the ``n`` collection images
  most similar to it, with the version line that answered;
- ``GET /search?name=NAME&n=N``: the same for a collection image (more like this);
- ``GET /images/{name}``: a collection image's landing thumbnail (JPEG);
- ``GET /health``, ``GET /version``; ``POST /reload`` swaps in a new version;
- ``GET /``: the web page (``static/``: plain HTML, CSS and JavaScript).

Names are only ever looked up in the loaded index: no request reads a file by name.
"""
import asyncio
import contextlib
import time
from pathlib import Path
from typing import AsyncIterator, Dict, List

import cv2
import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from lib.config import Config
from lib.errors import one_line, UserError
from lib.service.batching import BatchingEmbedder
from lib.service.docs_page import install_docs
from lib.service.engines import EngineHolder, Served
from lib.service.limits import error_response, install as install_limits

STATIC = Path(__file__).resolve().parent / "static"


class Match(BaseModel):
    """One result."""

    rank: int
    score: float
    name: str


class SearchResult(BaseModel):
    """The answer to one search."""

    version: str
    query: str
    images: int
    results: List[Match]


def _prepare(served: Served, data: bytes) -> np.ndarray:
    """Decodes an upload as the ETL decodes the collection: (S, S, 3) ``float32``."""
    return served.engine.model_input(data, source="upload")             # (S, S, 3)


def _answer(served: Served, vector: np.ndarray, n: int, query: str) -> SearchResult:
    """Ranks the collection against an embedding (D,)."""
    hits = served.engine.search_vector(vector, n)
    names = served.engine.names
    return SearchResult(version=served.version.describe(), query=query,
                        images=len(served.engine),
                        results=[Match(rank=rank, score=score, name=str(names[row]))
                                 for rank, (score, row) in enumerate(hits, start=1)])


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


def _version_info(served: Served) -> Dict[str, object]:
    """The version that answers, in full."""
    version = served.version
    return {"version": version.describe(), "git_rev": version.git_rev,
            "source": version.source, "vectors_md5": version.vectors_md5,
            "hashes": version.hashes, "images": len(served.engine),
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(served.loaded_at))}


def create_app(holder: EngineHolder, embedder: BatchingEmbedder, config: Config) -> FastAPI:
    """The application, answering with ``holder``'s current engine.

    Args:
        holder: Its engine is loaded already (``start()``).
        embedder: Embeds the queries; closed when the application shuts down.
        config: The workspace configuration (its ``serve`` and ``service`` sections).
    """
    # The route functions are registered by their decorators.
    # pylint: disable=unused-variable
    settings = config.service

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(embedder.close)

    app = FastAPI(title="Image similarity search", lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  description="The N collection images most similar to a photo, by cosine "
                              "similarity of ResNet50 embeddings, from the artifact versions "
                              "pinned in dvc.lock.")
    install_limits(app, settings.max_upload_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    install_docs(app)
    count = Query(config.serve.top_n, ge=1, le=settings.max_results,
                  description="how many results")

    @app.post("/search", response_model=SearchResult)
    async def search_upload(image: UploadFile = File(..., description="the query photo"),
                            n: int = count) -> SearchResult:
        """The collection images most similar to an uploaded photo."""
        data = await image.read()
        served = holder.current                      # one version for the whole request
        vector = await embedder.embed(served.engine.vectorizer,
                                      lambda: _prepare(served, data))
        return await run_in_threadpool(_answer, served, vector, n,
                                       image.filename or "upload")

    @app.get("/search", response_model=SearchResult)
    async def search_name(name: str = Query(..., description="a collection image's name"),
                          n: int = count) -> SearchResult:
        """The collection images most similar to one of its own (more like this)."""
        served = holder.current
        row = _row(served, name)
        vector = served.engine.vector(row)                                  # (D,)
        return await run_in_threadpool(_answer, served, vector, n, name)

    @app.get("/images/{name:path}", response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    async def thumbnail(name: str) -> Response:
        """A collection image as the pipeline stored it (its landing thumbnail)."""
        served = holder.current
        data = await run_in_threadpool(_thumbnail_jpeg, served, _row(served, name))
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def health() -> Dict[str, object]:
        """Whether the service answers, with its batching counters."""
        served = holder.current
        return {"status": "ok", "images": len(served.engine),
                "version": served.version.describe(), "last_reload_error": holder.last_error,
                "batching": embedder.stats()}

    @app.get("/version")
    async def version() -> Dict[str, object]:
        """The artifact versions that answer, and the page's defaults."""
        return {**_version_info(holder.current), "default_n": config.serve.top_n,
                "max_n": settings.max_results}

    @app.post("/reload", responses={409: {"description": "the new version was refused"}})
    async def reload() -> JSONResponse:
        """Loads the version ``dvc.lock`` now records, beside the old one, then swaps."""
        try:
            status, served = await asyncio.to_thread(holder.reload)
        except UserError as err:
            return error_response(409, f"new version refused, the old one keeps "
                                              f"answering: {one_line(err)}")
        return JSONResponse({"status": status, **_version_info(served)})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
