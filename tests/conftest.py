"""Fixtures and settings shared by several test modules."""
import logging
import os

import pytest

from lib.embedding.resnet import ResNet50Helper
from lib.embedding.runtime import CACHE_ENV
from lib.embedding.vectorizer import Vectorizer
from tests.support.helpers import WEIGHTS, require_shared
from tests.support.service_helpers import ALLOWED_HOST, ServiceProcess, TOKEN


@pytest.fixture(autouse=True)
def root_logging():
    """Gives each test the root logger's handlers as they were before it.

    A stage's ``main`` run in-process sets up logging on the stderr of its test (a
    capture that closes with the test); later tests must not log into it.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session", autouse=True)
def openvino_cache(tmp_path_factory):
    """Points the OpenVINO conversion cache (and subprocesses') at a temporary folder."""
    folder = tmp_path_factory.mktemp("cache")
    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(folder)
    yield folder
    if old is None:
        del os.environ[CACHE_ENV]
    else:
        os.environ[CACHE_ENV] = old


@pytest.fixture(scope="session", name="saved_model")
def saved_model_fixture(tmp_path_factory):
    """The real ResNet50 vectorizer, built and saved once per test session."""
    require_shared(WEIGHTS)
    directory = tmp_path_factory.mktemp("model") / "vectorizer_model"
    Vectorizer(ResNet50Helper(weights=str(WEIGHTS)).build()).save(directory)
    return directory


@pytest.fixture(scope="session", name="query_project")
def query_project_fixture(tmp_path_factory):
    """The query test project, built once per test session with ``dvc repro``."""
    from tests.support import query_project as builder  # pylint: disable=import-outside-toplevel
    return builder.build(tmp_path_factory.mktemp("queries") / "project")


@pytest.fixture(scope="session", name="query_engine")
def query_engine_fixture(query_project):
    """Its search engine with the real saved model, loaded once per session."""
    from tests.support import query_project as builder  # pylint: disable=import-outside-toplevel
    return builder.load_engine(query_project)


@pytest.fixture(scope="session", name="query_service")
def query_service_fixture(query_project, tmp_path_factory):
    """``serve.py --http`` on the query project (verified against its dvc.lock), once."""
    service = ServiceProcess(query_project, tmp_path_factory.mktemp("service") / "log.txt")
    yield service
    service.stop()


@pytest.fixture(scope="session", name="token_service")
def token_service_fixture(query_project, tmp_path_factory):
    """``serve.py --http`` on the query project with a token (``$IMAGE_SEARCH_TOKEN``),
    one more allowed Host name, and no access log (``--quiet``), once."""
    service = ServiceProcess(query_project, tmp_path_factory.mktemp("token") / "log.txt",
                             "--quiet", "--allow-host", ALLOWED_HOST,
                             env={"IMAGE_SEARCH_TOKEN": TOKEN})
    yield service
    service.stop()


@pytest.fixture(name="without_tensorflow")
def without_tensorflow_fixture(tmp_path, monkeypatch):
    """Every process started from here on finds ``tensorflow`` and ``keras`` unimportable."""
    blocker = tmp_path / "blocker"
    for package in ("tensorflow", "keras"):
        (blocker / package).mkdir(parents=True)
        (blocker / package / "__init__.py").write_text(
            f"raise ImportError('{package} is unimportable in this test')\n", encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(blocker))
    return blocker
