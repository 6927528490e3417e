"""The FastAPI application: search by upload or by name, thumbnails, the web page.

Routes (OpenAPI docs at ``/docs``, from local files: ``docs_page``):

- ``POST /search?n=N`` with a multipart ``image`` file: the ``n`` collection images
  most similar to it, with the version line that answered;
- ``GET /search?name=NAME&n=N``: the same for a collection image (more like this);
- ``GET /images/{name}``: a collection image's landing thumbnail (JPEG); the name may
  hold any character, ``/`` and newline included (percent-encoded in the URL);
- ``GET /health`` (``?deep=1`` re-hashes the bytes the version answers from),
  ``GET /version``; ``POST /reload`` swaps in a new version, one at a time;
- ``GET /``: the web page (``static/``: plain HTML, CSS and JavaScript).

Names are only ever looked up in the loaded index: no request reads a file by name.
Who may call which route: :mod:`lib.service.access`.
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
from starlette.convertors import Convertor, register_url_convertor

from lib.config import Config
from lib.errors import one_line, UserError
from lib.service.access import AccessPolicy, install as install_access
from lib.service.batching import BatchingEmbedder
from lib.service.docs_page import install_docs
from lib.service.engines import EngineHolder, Served
from lib.service.limits import error_response, install as install_limits

STATIC = Path(__file__).resolve().parent / "static"


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
            "hashes": version.hashes, "served_md5": served.served_md5(),
            "images": len(served.engine),
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(served.loaded_at))}


def _busy(what: str, seconds: int) -> JSONResponse:
    """429 with ``Retry-After``: one is running already."""
    response = error_response(429, f"{what} is running already: retry in {seconds} s")
    response.headers["Retry-After"] = str(seconds)
    return response


def create_app(holder: EngineHolder, embedder: BatchingEmbedder, config: Config,
               policy: AccessPolicy = AccessPolicy()) -> FastAPI:
    """The application, answering with ``holder``'s current engine.

    Args:
        holder: Its engine is loaded already (``start()``).
        embedder: Embeds the queries; closed when the application shuts down.
        config: The workspace configuration (its ``serve`` and ``service`` sections).
        policy: Who may call it (Host names, token, access log).
    """
    # The route functions are registered by their decorators.
    # pylint: disable=unused-variable
    settings = config.service

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(embedder.close)
        # Here, not after uvicorn returns: on SIGTERM it re-raises the signal on its way out.
        await asyncio.to_thread(holder.close)

    app = FastAPI(title="Image similarity search", lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  description="The N collection images most similar to a photo, by cosine "
                              "similarity of ResNet50 embeddings, from the artifact versions "
                              "pinned in dvc.lock.")
    install_limits(app, settings.max_upload_bytes)
    install_access(app, policy)                 # outermost: refuses before the body is read
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

    @app.get("/images/{name:anypath}", response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    async def thumbnail(name: str) -> Response:
        """A collection image as the pipeline stored it (its landing thumbnail)."""
        served = holder.current
        data = await run_in_threadpool(_thumbnail_jpeg, served, _row(served, name))
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "no-cache"})

    @app.get("/health", responses={503: {"description": "the served bytes changed"},
                                   429: {"description": "a deep check is running"}})
    async def health(deep: bool = Query(False, description="also re-hash every byte the "
                                                            "version answers from")
                     ) -> JSONResponse:
        """Whether the service answers, with its batching counters; with ``deep=1``,
        whether the bytes it answers from are still those verified when they loaded."""
        served = holder.current
        body: Dict[str, object] = {
            "status": "ok", "images": len(served.engine),
            "version": served.version.describe(), "last_reload_error": holder.last_error,
            "batching": embedder.stats()}
        if deep:
            try:
                checked = await asyncio.to_thread(holder.recheck)
            except UserError as err:
                return error_response(503, one_line(err))
            if checked is None:
                return _busy("a deep health check", 1)
            body["deep"] = checked
        return JSONResponse(body)

    @app.get("/version")
    async def version() -> Dict[str, object]:
        """The artifact versions that answer, and the page's defaults."""
        return {**_version_info(holder.current), "default_n": config.serve.top_n,
                "max_n": settings.max_results}

    @app.post("/reload", responses={409: {"description": "the new version was refused"},
                                    429: {"description": "a reload is running"}})
    async def reload() -> JSONResponse:
        """Loads the version ``dvc.lock`` now records, beside the old one, then swaps."""
        try:
            result = await asyncio.to_thread(holder.reload, False)
        except UserError as err:
            return error_response(409, f"new version refused, the old one keeps "
                                              f"answering: {one_line(err)}")
        if result is None:
            return _busy("a reload", holder.retry_after())
        status, served = result
        return JSONResponse({"status": status, **_version_info(served)})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
