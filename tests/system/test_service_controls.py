"""Search controls over HTTP: folder scope, score cutoff, paging and more like this, with
the exact scan and an HNSW index; the near-duplicate groups of ``GET /duplicates``.

Real services on real projects: ``query_service`` (the query project, exact scan) and
an HNSW service (a copy of it rebuilt with ``index.kind: hnsw``).
"""
import json
import shutil
import sys
from pathlib import Path
from typing import Iterator, List

import httpx
import pytest

from tests.support.helpers import REPO_ROOT, repro, run, set_params
from tests.support.query_project import COLLECTION, DUPLICATE_NAME, N_IMAGES, name_of
from tests.support.service_helpers import ServiceProcess

pytestmark = pytest.mark.slow

FOLDER = "outwear"                                  # two photos of the query project
NAME = name_of(COLLECTION[3])                        # outwear/...: in the folder


@pytest.fixture(scope="module", name="hnsw_service")
def hnsw_service_fixture(query_project, tmp_path_factory) -> Iterator[ServiceProcess]:
    """``serve.py --http`` on a copy of the query project with an HNSW index."""
    project = tmp_path_factory.mktemp("hnsw") / "project"
    shutil.copytree(query_project, project, symlinks=True)
    shutil.rmtree(project / "duplicates", ignore_errors=True)
    set_params(project, {"index.kind": "hnsw"})
    assert repro(project) == ["index", "evaluate"]
    service = ServiceProcess(project, project.parent / "log.txt")
    yield service
    service.stop()


@pytest.fixture(params=["exact", "hnsw"], name="client")
def client_fixture(request, query_service) -> Iterator[httpx.Client]:
    """A client of the exact-scan service, then of the HNSW one."""
    service = query_service if request.param == "exact" else \
        request.getfixturevalue("hnsw_service")
    with httpx.Client(base_url=service.url, timeout=120) as client:
        yield client


def names(answer: dict) -> List[str]:
    """The result names of an answer."""
    return [hit["name"] for hit in answer["results"]]


def search(client: httpx.Client, **params) -> dict:
    """GET /search (parameters that are None left out), which must answer 200."""
    response = client.get("/search", params={key: value for key, value in params.items()
                                             if value is not None})
    assert response.status_code == 200, response.text
    return response.json()


def one_line_error(response: httpx.Response, status: int, *words: str) -> None:
    """A refusal: the status and one JSON line naming the problem."""
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert "\n" not in message and all(word in message for word in words), message


def test_scope_cutoff_paging_and_more_like_this(client, query_project):
    everything = search(client, name=NAME, n=N_IMAGES)
    assert everything["scope"] == N_IMAGES and not everything["more"]
    assert names(everything)[0] == NAME and everything["results"][0]["score"] == \
        pytest.approx(1.0, abs=1e-5)                           # more like this: itself first
    # Scope: only the folder, in the order of the whole ranking.
    in_folder = [name for name in names(everything) if name.startswith(FOLDER + "/")]
    for folder in (FOLDER, FOLDER + "/"):
        scoped = search(client, name=NAME, n=5, folder=folder)
        assert names(scoped) == in_folder and scoped["scope"] == len(in_folder) == 2
        assert scoped["folder"] == folder and not scoped["more"]
    with open(query_project / "data" / "master" / NAME, "rb") as handle:
        uploaded = client.post("/search", params={"n": 5, "folder": FOLDER},
                               files={"image": ("q.jpg", handle.read(), "image/jpeg")})
    assert uploaded.status_code == 200 and names(uploaded.json()) == in_folder
    # Cutoff: the results at or above the third score (a tie with it included).
    third = everything["results"][2]["score"]
    cut = search(client, name=NAME, n=N_IMAGES, min_score=third)
    assert names(cut) == [hit["name"] for hit in everything["results"] if hit["score"] >= third]
    assert len(cut["results"]) >= 3 and cut["min_score"] == third
    assert search(client, name=NAME, min_score=1.0)["results"] in ([], everything["results"][:1])
    # Pages of 4: ranks go on, "more" until the last; past the end nothing.
    pages = [search(client, name=NAME, n=4, offset=offset) for offset in (0, 4, 8, 12)]
    assert sum((page["results"] for page in pages), []) == everything["results"]
    assert [page["more"] for page in pages] == [True, True, True, False]
    assert [hit["rank"] for hit in pages[1]["results"]] == [5, 6, 7, 8]
    past = search(client, name=NAME, n=4, offset=10 ** 12)
    assert past["results"] == [] and not past["more"]
    # More like this within another folder: the photo itself is not in it.
    other = search(client, name=NAME, n=3, folder=name_of(COLLECTION[0]).split("/")[0])
    assert NAME not in names(other) and len(other["results"]) == 1


def test_the_exact_scan_and_hnsw_answer_alike(query_service, hnsw_service):
    answers = []
    for service in (query_service, hnsw_service):
        with httpx.Client(base_url=service.url, timeout=120) as client:
            answers.append([search(client, name=name_of(row), n=6, folder=folder,
                                   offset=offset)
                            for row in COLLECTION[:4]
                            for folder, offset in ((None, 0), (None, 3), (FOLDER, 0))])
    for exact, hnsw in zip(*answers):
        assert names(exact) == names(hnsw)
        assert [hit["score"] for hit in exact["results"]] == pytest.approx(
            [hit["score"] for hit in hnsw["results"]], abs=1e-5)


@pytest.mark.parametrize("params, status, words", [
    ({"folder": "bags"}, 404, ("no image in the folder 'bags'",)),
    ({"folder": "/"}, 404, ("no image in the folder '/'",)),
    ({"folder": ""}, 422, ("folder:", "at least 1 character")),
    ({"min_score": "1.5"}, 422, ("min_score:", "less than or equal to 1")),
    ({"min_score": "-2"}, 422, ("min_score:", "greater than or equal to -1")),
    ({"min_score": "nan"}, 422, ("min_score:", "finite number")),
    ({"min_score": "inf"}, 422, ("min_score:", "finite number")),
    ({"min_score": "high"}, 422, ("min_score:",)),
    ({"offset": "-1"}, 422, ("offset:", "greater than or equal to 0")),
    ({"offset": "2.5"}, 422, ("offset:",))])
def test_bad_controls_are_one_line(query_service, query_project, params, status, words):
    with httpx.Client(base_url=query_service.url, timeout=120) as client:
        one_line_error(client.get("/search", params={"name": NAME, **params}), status, *words)
        photo = (query_project / "data" / "master" / NAME).read_bytes()
        one_line_error(client.post("/search", params=params,
                                   files={"image": ("q.jpg", photo, "image/jpeg")}),
                       status, *words)
    assert "Traceback" not in query_service.log()


def test_a_method_a_path_does_not_take_is_405_with_allow(query_service):
    with httpx.Client(base_url=query_service.url, timeout=120) as client:
        for method, path, allowed in (("PUT", "/search", "GET, POST"),
                                      ("DELETE", f"/images/{NAME}", "GET"),
                                      ("GET", "/reload", "POST"),
                                      ("POST", "/duplicates", "GET"),
                                      ("POST", "/static/app.js", "GET, HEAD")):
            response = client.request(method, path)
            one_line_error(response, 405, "Method Not Allowed")
            assert response.headers["allow"] == allowed, (method, path)


def report_of(project: Path) -> Path:
    """Runs the near-duplicates stage in a project; its report."""
    run([sys.executable, str(REPO_ROOT / "stages" / "duplicates.py")], project)
    return project / "duplicates" / "duplicates.json"


def test_duplicates_of_the_version_served(query_service, hnsw_service, query_project):
    for service in (query_service, hnsw_service):
        with httpx.Client(base_url=service.url, timeout=120) as client:
            shutil.rmtree(service.project / "duplicates", ignore_errors=True)
            try:
                one_line_error(client.get("/duplicates"), 404, "no near-duplicates report",
                               "run `python stages/duplicates.py`")
                report = report_of(service.project)
                answer = client.get("/duplicates").json()
                assert answer["version"] == client.get("/version").json()["version"]
                assert answer["index"] == ("exact" if service is query_service else "hnsw")
                assert answer["photos"] == N_IMAGES and answer["photos_in_groups"] == 2
                group = answer["groups"][0]
                assert group["group"] == 1 and group["size"] == 2
                assert [photo["name"] for photo in group["photos"]] == \
                    sorted([name_of(COLLECTION[0]), DUPLICATE_NAME])
                assert all(photo["score"] == pytest.approx(1.0, abs=1e-4)
                           for photo in group["photos"])
                # A report of another version is not shown; nor is a broken one.
                made = json.loads(report.read_text())
                made["hashes"]["vectors"] = "0" * 32
                report.write_text(json.dumps(made))
                one_line_error(client.get("/duplicates"), 404, "of another version",
                               "run `python stages/duplicates.py`")
                report.write_text("{not json")
                one_line_error(client.get("/duplicates"), 404, "cannot read",
                               "run `python stages/duplicates.py`")
            finally:
                shutil.rmtree(service.project / "duplicates", ignore_errors=True)
    assert query_service.project == query_project
