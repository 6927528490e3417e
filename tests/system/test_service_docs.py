"""The OpenAPI page at ``/docs`` works offline: Swagger UI comes from the service itself.

The page must name no other host (no CDN), and every script, style sheet and icon it
names must answer from the service. Checked on the real application without an engine
(``/docs`` never touches it: fast), then on the running service (``query_service``).
"""
import re

import httpx
import pytest

from lib.config import Config
from lib.service.app import create_app
from tests.support.service_helpers import app_in_thread

ABSOLUTE = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""", re.IGNORECASE)
ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
SCHEMA = re.compile(r"""url:\s*'([^']+)'""")
# Swagger UI 5: the bundle is over 1 MB, its style sheet over 100 kB.
MIN_BYTES = {".js": 500_000, ".css": 50_000}


def assert_docs_are_local(client: httpx.Client) -> None:
    """``/docs`` and all it loads answer from ``client``'s service, and nothing else.

    Args:
        client: An HTTP client whose ``base_url`` is the service.
    """
    page = client.get("/docs")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "cdn" not in html.lower(), html
    own = str(client.base_url).rstrip("/")
    foreign = [url for url in ABSOLUTE.findall(html)
               if url != own and not url.startswith(own + "/")]
    assert not foreign, f"/docs loads from another host: {foreign}"
    assets = ASSET.findall(html)
    assert any(url.endswith(".js") for url in assets), html
    assert any(url.endswith(".css") for url in assets), html
    for url in assets:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        minimum = MIN_BYTES.get(url[url.rfind("."):], 1)
        assert len(response.content) >= minimum, (url, len(response.content))
    schema = client.get(SCHEMA.search(html).group(1))
    assert schema.status_code == 200 and "/search" in schema.json()["paths"]


@pytest.fixture(name="engineless")
def engineless_fixture():
    """The real application without an engine, served by uvicorn in a thread: its URL.

    Only the search routes and the shutdown (a lifespan, off here) use the engine and
    the embedder: ``None`` stands for both.
    """
    with app_in_thread(create_app(None, None, Config())) as url:
        yield url


def test_docs_are_local_without_an_engine(engineless):
    with httpx.Client(base_url=engineless, timeout=30) as client:
        assert_docs_are_local(client)
        assert client.get("/redoc").status_code == 404        # it would need a CDN too
        assert client.get("/docs/oauth2-redirect").status_code == 200


@pytest.mark.slow
def test_service_docs_are_local(query_service):
    with httpx.Client(base_url=query_service.url, timeout=120) as client:
        assert_docs_are_local(client)
