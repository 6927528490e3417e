"""The HTTP service, started as a user starts it and driven over HTTP.

``stages/serve.py --http`` runs on the real query project (verified against its
``dvc.lock``, real model): its answers equal the command line's, alone and under
concurrent (batched) load, and every bad request gets a 4xx with one JSON line.
"""
import concurrent.futures
import re
import socket
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import httpx
import numpy as np
import pytest

from tests.support.badfiles import bad_files, photo_bgr
from tests.support.helpers import DATASET, pick_per_class, run
from tests.support.query_project import COLLECTION, N_IMAGES, name_of

pytestmark = pytest.mark.slow

QUERIES = [DATASET / path for path, _ in pick_per_class("test", 1)[:4]]
LINE = re.compile(r"^\s*(\d+)\s+(-?\d+\.\d{4})\s+(.+)$")
# The command line prints 4 decimals: a score equal to it is within half a unit.
SCORE_TOLERANCE = 5e-5 + 1e-6


def cli_answers(project: Path, queries: List[Path], n: int) -> Tuple[str, Dict[str, list]]:
    """``serve.py -`` (warm mode) on the queries: its version line and each ranking."""
    proc = run(["python", "stages/serve.py", "-", "-n", str(n)], project,
               stdin="".join(f"{query}\n" for query in queries))
    version, *lines = proc.stdout.splitlines()
    answers: Dict[str, list] = {}
    current: list = []
    for line in lines:
        if line.endswith(":") and " most similar of " in line:
            current = answers.setdefault(line.rsplit(" to ", 1)[1][:-1], [])
        elif LINE.match(line):
            rank, score, name = LINE.match(line).groups()
            current.append((int(rank), float(score), name))
    return version, answers


def upload(client: httpx.Client, path: Path, n: int) -> httpx.Response:
    """POST /search with a file."""
    with open(path, "rb") as handle:
        return client.post("/search", params={"n": n},
                           files={"image": (path.name, handle.read(), "image/jpeg")})


def assert_same_ranking(api: dict, cli: list) -> None:
    """Same ranks and names, scores equal to the printed 4 decimals."""
    got = [(hit["rank"], hit["name"]) for hit in api["results"]]
    assert got == [(rank, name) for rank, _, name in cli]
    for hit, (_, score, _) in zip(api["results"], cli):
        assert abs(hit["score"] - score) <= SCORE_TOLERANCE, (hit, score)


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    """A refused request: the status, and one JSON line naming the problem."""
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert message and "\n" not in message and "Traceback" not in message
    for word in words:
        assert word in message, message


@pytest.fixture(scope="module", name="client")
def client_fixture(query_service):
    """An HTTP client of the session's service."""
    with httpx.Client(base_url=query_service.url, timeout=120) as client:
        yield client


def test_answers_equal_the_command_line_alone_and_batched(query_service, query_project,
                                                          client):
    queries = QUERIES + [query_project / "data" / "master" / name_of(COLLECTION[2])]
    version, expected = cli_answers(query_project, queries, 5)
    for query in queries:
        answer = upload(client, query, 5).json()
        assert answer["version"] == version and answer["images"] == N_IMAGES
        assert_same_ranking(answer, expected[str(query)])
    assert expected[str(queries[-1])][0][1:] == (1.0, name_of(COLLECTION[2]))
    # Sixteen at once: queued while the model runs, embedded in shared batches.
    jobs = queries * 4
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda query: upload(client, query, 5), jobs))
    for query, response in zip(jobs, answers):
        assert response.status_code == 200, response.text
        assert_same_ranking(response.json(), expected[str(query)])
    batching = client.get("/health").json()["batching"]
    assert batching["largest_batch"] > 1, batching
    assert "Traceback" not in query_service.log()


def test_search_by_name_thumbnails_health_version_docs(query_project, client):
    name = name_of(COLLECTION[3])
    by_name = client.get("/search", params={"name": name, "n": 3}).json()
    by_upload = upload(client, query_project / "data" / "master" / name, 3).json()
    assert by_name["query"] == name and by_name["results"][0]["name"] == name
    assert by_name["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert [hit["name"] for hit in by_name["results"]] == \
        [hit["name"] for hit in by_upload["results"]]
    response = client.get(f"/images/{name}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumb = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    names = np.load(query_project / "data/landing/image_names.npy")
    landing = np.load(query_project / "data/landing/resized_rgb.npy", mmap_mode="r")
    stored = np.asarray(landing[list(names).index(name)])[:, :, ::-1]      # RGB -> BGR
    assert thumb.shape == stored.shape
    assert np.abs(thumb.astype(int) - stored).mean() < 4                      # JPEG q92
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["images"] == N_IMAGES
    version = client.get("/version").json()
    assert version["version"] == by_name["version"]
    assert {"names", "vectors", "model", "images"} <= set(version["hashes"])
    assert version["vectors_md5"] in version["version"]
    spec = client.get("/openapi.json").json()
    assert {"/search", "/images/{name}", "/health", "/version", "/reload"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


BAD_CASES = bad_files(photo_bgr(COLLECTION[1][0]))
BAD_WORDS = {"empty file": "empty", "text named .jpg": "not an image",
             "truncated JPEG": "truncated", "JPEG header, random body": "upload",
             "pixel bomb PNG": "exceeds the limit", "pixel bomb HDR": "exceeds the limit"}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_upload_is_a_400_with_one_line(case, client, tmp_path):
    response = upload(client, BAD_CASES[case](tmp_path), 5)
    assert_error(response, 400, BAD_WORDS[case])


@pytest.mark.parametrize("n, words", [("0", "n"), ("-3", "n"), ("abc", "n"),
                                      ("2.5", "n"), ("101", "less than or equal to 100")])
def test_bad_n_is_a_422(n, words, client):
    assert_error(client.get("/search", params={"name": name_of(COLLECTION[0]), "n": n}),
                 422, words)
    assert_error(upload(client, QUERIES[0], n), 422, words)


def test_missing_or_malformed_fields_are_422(client):
    assert_error(client.post("/search"), 422, "image")
    assert_error(client.post("/search", json={"image": "x.jpg"}), 422, "image")
    assert_error(client.get("/search"), 422, "name")
    everything = client.get("/search", params={"name": name_of(COLLECTION[0]), "n": 100})
    assert len(everything.json()["results"]) == N_IMAGES


@pytest.mark.parametrize("path", [
    "/search?name=nope.jpg", "/search?name=..%2F..%2Fetc%2Fpasswd",
    "/search?name=%2Fetc%2Fpasswd", "/images/nope.jpg", "/images/..%2F..%2Fetc%2Fpasswd",
    "/images/../../etc/passwd", "/images/%2Fetc%2Fpasswd", "/images/",
    "/static/..%2F..%2Fconfig.py", "/static/../service/app.py", "/nothing-here"])
def test_unknown_or_escaping_names_are_404_and_read_nothing(path, query_service):
    # Raw HTTP: the path reaches the server exactly as written (no client clean-up).
    status, body = raw_request(query_service, f"GET {path} HTTP/1.1\r\nHost: localhost\r\n"
                                              "Connection: close\r\n\r\n".encode())
    assert status == 404, body
    assert b"root:" not in body and b"import" not in body
    assert body.startswith(b"{\"error\":")


def raw_request(service, data: bytes, body_chunks=()) -> Tuple[int, bytes]:
    """Sends raw bytes (then more chunks); returns the response's status and body.

    The response is read by its ``Content-Length``: a server that answers before it
    read the whole request may keep the connection open.
    """
    with socket.create_connection(service.host_port, timeout=60) as sock:
        sock.sendall(data)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass                                     # the server answered and hung up
        response = b""
        while b"\r\n\r\n" not in response:
            block = sock.recv(65536)
            assert block, f"connection closed before a response: {response!r}"
            response += block
        head, _, body = response.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(body) < length:
            block = sock.recv(65536)
            assert block, f"connection closed within the body: {response!r}"
            body += block
    return int(head.split()[1]), body


MULTIPART_HEAD = (b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\""
                  b"\r\nContent-Type: image/jpeg\r\n\r\n")


def test_upload_over_the_limit_is_413_before_it_is_read(query_service):
    # A declared gigabyte: refused from the headers, no byte of the body sent.
    status, body = raw_request(query_service, (
        b"POST /search HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; "
        b"boundary=x\r\nContent-Length: 1000000000\r\n\r\n"))
    assert status == 413 and b"max_upload_bytes" in body
    # No declared length (chunked): refused as soon as the stream passes the limit.
    block = b"\0" * (1 << 20)
    chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    first = f"{len(MULTIPART_HEAD):x}\r\n".encode() + MULTIPART_HEAD + b"\r\n"
    status, body = raw_request(query_service, (
        b"POST /search HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; "
        b"boundary=x\r\nTransfer-Encoding: chunked\r\n\r\n" + first), [chunk] * 25)
    assert status == 413 and b"max_upload_bytes" in body
    with httpx.Client(base_url=query_service.url) as client:
        assert client.get("/health").json()["status"] == "ok"
    assert "Traceback" not in query_service.log()


def test_command_line_mistakes_are_one_line_and_fail_before_loading(query_service,
                                                                    query_project):
    _, port = query_service.host_port
    cases = [(["--http", "q.jpg"], 2, "--http takes no query"),
             (["--http", "-n", "3"], 2, "-n and --output do not apply to --http"),
             (["q.jpg", "--port", "8000"], 2, "--host, --port, --allow-host, --token and "
                                              "--quiet go with --http"),
             (["q.jpg", "--token", "t" * 20], 2, "go with --http"),
             (["--http", "--token", "short"], 1, "the token must be at least 16"),
             (["--http", "--allow-host", "a b"], 1, "--allow-host 'a b': give a host name"),
             (["--http", "--port", "70000"], 2, "--port must be 0-65535"),
             (["--http", "--port", str(port)], 1, "Address already in use"),
             (["--http", "--host", "192.0.2.1"], 1, "cannot listen on 192.0.2.1")]
    for args, status, words in cases:
        proc = run(["python", "stages/serve.py", *args], query_project, check=False)
        assert proc.returncode == status, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and words in proc.stderr, (args, proc.stderr)
        assert proc.stderr.startswith("serve.py: error: ") and proc.stdout == ""
