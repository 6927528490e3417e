"""Fixtures shared by several test modules."""
import pytest

from tests import query_project as builder


@pytest.fixture(scope="session", name="query_project")
def query_project_fixture(tmp_path_factory):
    """The query test project, built once per test session with ``dvc repro``."""
    return builder.build(tmp_path_factory.mktemp("queries") / "project")


@pytest.fixture(scope="session", name="query_engine")
def query_engine_fixture(query_project):
    """Its search engine with the real saved model, loaded once per session."""
    return builder.load_engine(query_project)
