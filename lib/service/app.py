"""The FastAPI application: its routes, the OpenAPI schema, the web page.

Routes (OpenAPI docs at ``/docs``, from local files: ``docs_page``; the schema documents
every status and error body: :mod:`lib.service.openapi`):

- ``POST /search`` (upload) and ``GET /search?name=`` (more like this), with ``n``,
  ``folder``, ``min_score`` and ``offset``; ``GET /images/{name}``, the thumbnails:
  :mod:`lib.service.search`;
- ``GET /duplicates``: the near-duplicate groups of the version served:
  :mod:`lib.service.duplicates`;
- ``GET /health`` (``?deep=1`` re-hashes the bytes the version answers from),
  ``GET /version`` (with the retrieval knobs it serves and their preset:
  :mod:`lib.service.knobs`); ``POST /reload`` swaps in a new version, one at a time;
- ``GET /``: the web page (``static/``: plain HTML, CSS and JavaScript).

Who may call which route: :mod:`lib.service.access`.
"""
import asyncio
import contextlib
import time
from pathlib import Path
from typing import AsyncIterator, Dict, Optional, Union

from fastapi import FastAPI, Query
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from lib.config import Config
from lib.errors import one_line, UserError
from lib.service.access import AccessPolicy, install as install_access
from lib.service.batching import BatchingEmbedder
from lib.service.docs_page import install_docs
from lib.service.duplicates import duplicates_routes
from lib.service.engines import EngineHolder, Served
from lib.service.knobs import knobs, preset_of
from lib.service.limits import error_response, install as install_limits
from lib.service.openapi import errors, install_schema
from lib.service.search import search_routes

STATIC = Path(__file__).resolve().parent / "static"


class VersionInfo(BaseModel):
    """The artifact versions that answer."""

    version: str
    git_rev: Optional[str]
    source: str
    vectors_md5: str
    hashes: Dict[str, str]
    served_md5: Dict[str, str]
    images: int
    loaded_at: str


class Version(VersionInfo):
    """``GET /version``: the version, the page's defaults, the retrieval knobs it serves
    (``section.key``: value, from the configuration it was built with) and their preset
    (a ``presets/*.yaml`` name, ``default`` or ``custom``)."""

    default_n: int
    max_n: int
    knobs: Dict[str, Union[str, int, float]]
    preset: str


class Reloaded(VersionInfo):
    """``POST /reload``: ``swapped`` or ``unchanged``, and the version answering now."""

    status: str


class Health(BaseModel):
    """``GET /health``."""

    status: str
    images: int
    version: str
    last_reload_error: Optional[str]
    batching: Dict[str, float]
    deep: Optional[Dict[str, float]] = None


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
    app.include_router(search_routes(holder, embedder, config))
    app.include_router(duplicates_routes(holder, config))

    @app.get("/health", response_model=Health, responses=errors(
        422, 429, 503, s429="a deep check is running: retry after Retry-After seconds"))
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

    @app.get("/version", response_model=Version)
    async def version() -> Dict[str, object]:
        """The artifact versions that answer, the page's defaults, and the retrieval
        knobs they serve with and their preset."""
        served = holder.current
        return {**_version_info(served), "default_n": config.serve.top_n,
                "max_n": settings.max_results, "knobs": knobs(served.config),
                "preset": preset_of(served.config, holder.root)}

    @app.post("/reload", response_model=Reloaded, responses=errors(
        409, 413, 429, s429="a reload is running: retry after Retry-After seconds"))
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

    install_schema(app, policy.token is not None)
    return app
