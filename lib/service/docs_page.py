"""The OpenAPI page at ``/docs``, served from local files so that it works offline.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN: without a network it is blank.
This one loads the Swagger UI 5 files that the pinned ``fastapi-offline`` package ships
(``swagger-ui-bundle.js``, ``swagger-ui.css``, ``favicon.png``), mounted at ``ASSETS``.
Only the files are used, not the package's own ``FastAPI`` wrapper.
"""
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS = "/docs"
ASSETS = "/swagger-assets"
ASSET_FILES = Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI) -> None:
    """Adds ``GET /docs`` (with its OAuth2 redirect page) and mounts its assets.

    Args:
        app: Created with ``docs_url=None`` (FastAPI's CDN page off) and an
            ``openapi_url``; its title and Swagger UI settings are used as FastAPI would.

    Raises:
        ValueError: ``app`` has no OpenAPI schema to show.
    """
    # The route functions are registered by their decorators.
    # pylint: disable=unused-variable
    if not app.openapi_url:
        raise ValueError("the docs page needs the OpenAPI schema (openapi_url)")
    app.mount(ASSETS, StaticFiles(directory=ASSET_FILES), name="swagger-assets")
    redirect = app.swagger_ui_oauth2_redirect_url

    @app.get(DOCS, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")     # behind a proxy's prefix
        return get_swagger_ui_html(
            openapi_url=root + str(app.openapi_url), title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            oauth2_redirect_url=root + redirect if redirect else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters)

    if redirect:
        @app.get(redirect, include_in_schema=False)
        async def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()
