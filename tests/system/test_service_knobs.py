"""``GET /version`` names the retrieval knobs that serve and their preset.

The real application over a tiny real DVC project (the model load replaced by a
stand-in that maps the vectors, as in ``test_service_holder.py``): the knobs come from
the configuration of the version serving, the workspace's or a ``--rev``'s, and the
preset is ``default``, a ``presets/*.yaml`` name, or ``custom``. Then the real service
(``serve.py --http`` on the query project) says the same, and its page shows them.
"""
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from lib.config import Config
from lib.service.app import create_app
from lib.service.engines import EngineHolder, Served
from lib.service.knobs import KNOBS, knobs, preset_of
from tests.support import tiny_project as tiny
from tests.support.helpers import set_params
from tests.support.service_helpers import app_in_thread, ServiceProcess

DEFAULT_KNOBS = {"etl.resize_mode": "stretch", "etl.interpolation": "area",
                 "modelling.pooling": "avg", "modelling.gem_p": 3.0,
                 "modelling.precision": "fp32", "whitening.dim": 0, "augmentation.k": 0,
                 "augmentation.alpha": 3.0, "serve.query_expansion": 0,
                 "serve.query_expansion_alpha": 0.0, "serve.reciprocal_candidates": 0,
                 "serve.reciprocal_k1": 20, "serve.reciprocal_k2": 6,
                 "serve.reciprocal_lambda": 0.3, "index.kind": "auto", "index.ef_search": 128,
                 "index.nprobe": 32, "index.rerank": 4}


def stand_in_load(pinned) -> Served:
    """'Loads' a pinned version: its vectors stand for the engine (``len`` is all
    ``/version`` asks of it)."""
    return Served(engine=np.load(pinned.paths["vectors"], mmap_mode="r"),
                  version=pinned.version, config=pinned.config, loaded_at=time.time(),
                  pinned=pinned)


@pytest.fixture(scope="module", name="template")
def template_fixture(tmp_path_factory):
    """The tiny project (committed and tagged ``v1``), built once for this module."""
    return tiny.build(tmp_path_factory.mktemp("knobs"))


@pytest.fixture(name="version_of")
def version_of_fixture(template, tmp_path, monkeypatch):
    """A private copy of the tiny project, and a function that serves it (``rev``: a
    revision) in the real application and returns its ``GET /version``."""
    project = tiny.copy(template, tmp_path)
    monkeypatch.setattr(EngineHolder, "_load", staticmethod(stand_in_load))
    holders = []

    def version_of(rev=None) -> dict:
        holder = EngineHolder(project / "params.yaml", rev=rev)
        holders.append(holder)
        holder.start()
        with app_in_thread(create_app(holder, None, Config())) as url:
            response = httpx.get(f"{url}/version", timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    version_of.project = project
    yield version_of
    for holder in holders:
        holder.close()


def write_preset(project: Path, name: str, text: str) -> None:
    """Writes ``presets/NAME.yaml``."""
    (project / "presets").mkdir(exist_ok=True)
    (project / "presets" / f"{name}.yaml").write_text(text, encoding="utf-8")


def test_a_default_project_serves_the_default_knobs(version_of):
    version = version_of()
    assert version["knobs"] == DEFAULT_KNOBS and list(version["knobs"]) == list(KNOBS)
    assert isinstance(version["knobs"]["modelling.gem_p"], float)
    assert isinstance(version["knobs"]["index.ef_search"], int)
    assert version["preset"] == "default"          # no presets folder at all


def test_a_knob_that_differs_is_custom_or_the_preset_it_equals(version_of):
    project = version_of.project
    # Search-time settings: the tiny build does not depend on them, so it still serves.
    set_params(project, {"serve.query_expansion": 3, "index.ef_search": 64})
    version = version_of()
    assert version["knobs"] == {**DEFAULT_KNOBS, "serve.query_expansion": 3,
                                "index.ef_search": 64}
    assert version["preset"] == "custom"
    write_preset(project, "broken", "serve: [not, a, mapping]\n")       # skipped
    write_preset(project, "deep", "serve:\n  query_expansion: 3\n")     # ef_search differs
    assert version_of()["preset"] == "custom"
    write_preset(project, "fast", "# search-time knobs only\nserve:\n  query_expansion: 3\n"
                                  "index:\n  ef_search: 64\n")
    assert version_of()["preset"] == "fast"
    # A preset names every setting it sets: one that differs elsewhere does not match.
    write_preset(project, "fast", "serve: {query_expansion: 3}\nindex: {ef_search: 64}\n"
                                  "modelling: {batch_size: 8}\n")
    assert version_of()["preset"] == "custom"


def test_rev_serves_the_knobs_of_that_revision(version_of):
    project = version_of.project
    set_params(project, {"serve.query_expansion": 2})
    assert version_of()["knobs"]["serve.query_expansion"] == 2
    old = version_of(rev="v1")                     # built and committed with the defaults
    assert old["source"] == "v1"
    assert old["knobs"] == DEFAULT_KNOBS and old["preset"] == "default"


def test_preset_matching_reads_the_typed_configuration(tmp_path):
    assert preset_of(Config(), tmp_path) == "default"
    gem = Config.from_dict({"modelling": {"pooling": "gem", "gem_p": 4}}, missing_sections=True)
    assert knobs(gem)["modelling.gem_p"] == 4.0
    assert preset_of(gem, tmp_path) == "custom"
    write_preset(tmp_path, "gem", yaml.safe_dump({"modelling": {"pooling": "gem",
                                                                "gem_p": 4.0}}))
    write_preset(tmp_path, "empty", "")
    assert preset_of(gem, tmp_path) == "gem"


@pytest.mark.slow
def test_the_service_and_its_page_name_the_knobs(query_service, query_project, tmp_path):
    with httpx.Client(base_url=query_service.url, timeout=120) as client:
        version = client.get("/version").json()
        page = client.get("/").text
        script = client.get("/static/app.js").text
    assert version["knobs"] == DEFAULT_KNOBS and version["preset"] == "default"
    assert 'id="knobs"' in page and "showKnobs" in script and "info.preset" in script
    params = yaml.safe_load((query_project / "params.yaml").read_text(encoding="utf-8"))
    params["serve"]["query_expansion"] = 2                   # read at search time only
    custom = query_project / "params-knobs.yaml"
    custom.write_text(yaml.safe_dump(params), encoding="utf-8")
    service = ServiceProcess(query_project, tmp_path / "log.txt", "--params", custom.name)
    try:
        with httpx.Client(base_url=service.url, timeout=120) as client:
            version = client.get("/version").json()
    finally:
        service.stop()
        custom.unlink()
    assert version["knobs"] == {**DEFAULT_KNOBS, "serve.query_expansion": 2}
    assert version["preset"] == "custom"
