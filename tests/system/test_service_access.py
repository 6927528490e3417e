"""Who may talk to the service, and what it tells: Host, Origin, token, access log,
reloads one at a time, and the deep health check of the bytes it answers from.

Real processes on the real query project: ``query_service`` (the defaults: no token,
access log on) and ``token_service`` (``$IMAGE_SEARCH_TOKEN``, ``--allow-host``,
``--quiet``). Requests go out raw where a client would tidy them (Host, Origin).
"""
import concurrent.futures
import json
import os
import re
import socket
import subprocess
import sys
import time
from typing import Dict, Tuple
from urllib.parse import quote

import httpx
import pytest

from tests.support.helpers import flip_last_byte, tool_env
from tests.support.query_project import COLLECTION, name_of
from tests.support.service_helpers import ALLOWED_HOST, TOKEN

pytestmark = pytest.mark.slow

BEARER = {"Authorization": f"Bearer {TOKEN}"}


def raw(service, method: str, path: str, headers: Dict[str, str],
        body: bytes = b"") -> Tuple[int, Dict[str, str], bytes]:
    """One request sent exactly as written; (status, headers, body) of the answer."""
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(
        f"{key}: {value}\r\n" for key, value in {**headers, "Connection": "close",
                                                  "Content-Length": str(len(body))}.items())
    with socket.create_connection(service.host_port, timeout=120) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        data = b""
        while True:
            block = sock.recv(65536)
            if not block:
                break
            data += block
    top, _, content = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, content


def error_of(body: bytes) -> str:
    """The one-line error of a refused request."""
    message = json.loads(body)["error"]
    assert message and "\n" not in message
    return message


def here(service) -> str:
    """The Host value of the service as a browser on this machine sends it."""
    host, port = service.host_port
    return f"{host}:{port}"


def test_hosts_other_than_local_addresses_and_allowed_names_are_refused(query_service,
                                                                       token_service):
    path = "/search?name=" + quote(name_of(COLLECTION[0]), safe="")
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "",
                 "search.example"):                   # allowed on the token service only
        status, _, body = raw(query_service, "GET", path, {"Host": host})
        assert status == 403, (host, body)
        assert "is not served here" in error_of(body) and "--allow-host" in error_of(body)
    _, port = query_service.host_port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST", "[::1]:1",
                 "10.1.2.3"):                        # a typed address: no rebinding page
        assert raw(query_service, "GET", path, {"Host": host})[0] == 200, host
    assert raw(token_service, "GET", path, {"Host": f"{ALLOWED_HOST}:80", **BEARER})[0] == 200


def test_cross_origin_requests_are_refused_same_origin_ones_answered(query_service):
    name = name_of(COLLECTION[1])
    host = here(query_service)
    query = "/search?name=" + quote(name, safe="")
    cases = [
        ("POST", "/reload", {"Origin": "https://evil.example"}, 403, "cross-origin"),
        ("POST", "/reload", {"Origin": "null"}, 403, "cross-origin"),
        ("POST", "/reload", {"Origin": f"http://localhost:{query_service.host_port[1] + 1}"},
         403, "cross-origin"),
        ("GET", f"/images/{quote(name)}", {"Sec-Fetch-Site": "cross-site"}, 403,
         "cross-site"),
        ("GET", f"/images/{quote(name)}", {"Sec-Fetch-Site": "same-site"}, 403, "same-site"),
        ("GET", "/version", {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site",
                             "Sec-Fetch-Mode": "cors"}, 403, "cross-origin"),
    ]
    for method, path, headers, status, words in cases:
        code, _, body = raw(query_service, method, path, {"Host": host, **headers})
        assert code == status and words in error_of(body), (path, headers, body)
    # The page's own requests, and a link to the page from another site, are answered.
    same = {"Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
    assert raw(query_service, "GET", query, same)[0] == 200
    assert raw(query_service, "POST", "/reload", same)[0] in (200, 429)
    assert raw(query_service, "GET", "/", {"Host": host, "Sec-Fetch-Site": "cross-site",
                                          "Sec-Fetch-Mode": "navigate"})[0] == 200


def test_with_a_token_every_data_route_needs_it_the_page_does_not(token_service):
    host = {"Host": here(token_service)}
    name = name_of(COLLECTION[2])
    for path in (f"/search?name={quote(name, safe='')}", f"/images/{quote(name)}", "/health",
                 "/version"):
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                        {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):
            status, fields, body = raw(token_service, "GET", path, {**host, **headers})
            assert status == 401 and "missing or wrong token" in error_of(body), (path, body)
            assert fields["www-authenticate"].startswith("Bearer")
        assert raw(token_service, "GET", path, {**host, **BEARER})[0] == 200, path
    assert raw(token_service, "POST", "/reload", host)[0] == 401
    for path in ("/", "/static/app.js", "/docs", "/openapi.json"):
        assert raw(token_service, "GET", path, host)[0] == 200, path
    spec = json.loads(raw(token_service, "GET", "/openapi.json", host)[2])
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert TOKEN not in token_service.log()


def test_the_access_log_has_one_escaped_line_per_request_and_quiet_has_none(query_service,
                                                                           token_service):
    host = here(query_service)
    raw(query_service, "GET", "/search?name=a%0Ab%1B[2J", {"Host": host})
    raw(query_service, "GET", "/version", {"Host": "evil.example"})
    lines = [line for line in query_service.log().splitlines()
             if line.startswith("INFO lib.service.access: ")]
    assert any(re.search(r'"GET /search\?name=a%0Ab%1B\[2J" 404 [\d.]+ ms$', line)
               for line in lines), lines[-5:]
    assert any(re.search(r'"GET /version" 403 [\d.]+ ms$', line) for line in lines)
    assert all(line.isprintable() for line in lines)
    raw(token_service, "GET", "/version", {"Host": here(token_service), **BEARER})
    assert "lib.service.access" not in token_service.log()               # --quiet


def test_reloads_run_one_at_a_time(query_service):
    with httpx.Client(base_url=query_service.url, timeout=300) as client, \
            concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: client.post("/reload"), range(6)))
    statuses = sorted(answer.status_code for answer in answers)
    assert set(statuses) <= {200, 429} and 200 in statuses and 429 in statuses, statuses
    for answer in answers:
        if answer.status_code == 429:
            assert int(answer.headers["retry-after"]) >= 1
            assert "a reload is running already" in answer.json()["error"]
        else:
            assert answer.json()["status"] == "unchanged"


def test_deep_health_rehashes_the_served_bytes_and_answers_503_when_they_changed(
        token_service):
    with httpx.Client(base_url=token_service.url, headers=BEARER, timeout=300) as client:
        deep = client.get("/health", params={"deep": 1})
        assert deep.status_code == 200, deep.text
        assert deep.json()["deep"]["files"] >= 4 and deep.json()["deep"]["bytes"] > 1e6
        version = client.get("/version").json()
        assert version["served_md5"] == {key: value for key, value in version["hashes"].items()
                                         if key in version["served_md5"]}
        served = next((token_service.snapshot() / "images").iterdir())
        last = flip_last_byte(served)           # one bit of the served copy flips
        try:
            broken = client.get("/health", params={"deep": "true"})
            assert broken.status_code == 503
            assert "no longer holds the bytes verified when it was loaded" in \
                error_of(broken.content)
            assert client.get("/health").status_code == 200        # the shallow check
        finally:
            with open(served, "r+b") as handle:
                handle.seek(-1, os.SEEK_END)
                handle.write(bytes([last]))
        assert client.get("/health", params={"deep": 1}).status_code == 200


def test_a_service_open_to_the_network_without_token_warns(query_project, tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w", encoding="utf-8") as sink:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, "stages/serve.py", "--http", "--host", "0.0.0.0", "--port", "0"],
            cwd=query_project, env=tool_env(), stdout=subprocess.DEVNULL, stderr=sink)
        try:
            deadline = time.monotonic() + 120
            while "without --token" not in log.read_text("utf-8") \
                    and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
        finally:
            proc.kill()                     # before the model has loaded: enough seen
            proc.wait()
    warning = [line for line in log.read_text("utf-8").splitlines() if "--token" in line]
    assert warning == ["WARNING lib.service.server: listening on 0.0.0.0 without --token: "
                       "anyone who can reach this port can search, read every thumbnail "
                       "and reload (see docs/service.md, threat model)"], warning


def test_a_foreign_host_or_origin_cannot_reload(query_service):
    before = httpx.get(f"{query_service.url}/version", timeout=120).json()["loaded_at"]
    for headers in ({"Host": "evil.example"},
                    {"Host": here(query_service), "Origin": "http://evil.example"}):
        status, _, body = raw(query_service, "POST", "/reload", headers)
        assert status == 403, (headers, body)
    assert httpx.get(f"{query_service.url}/version", timeout=120).json()["loaded_at"] == before


def test_dvc_commands_keep_working_through_twenty_concurrent_reloads(query_service,
                                                                    query_project):
    statuses, stop = [], concurrent.futures.Future()

    def dvc_status_loop():
        while not stop.done():
            statuses.append(subprocess.run([sys.executable, "-m", "dvc", "status", "-q"],
                                           cwd=query_project, env=tool_env(),
                                           capture_output=True, text=True, check=False))

    with httpx.Client(base_url=query_service.url, timeout=300) as client, \
            concurrent.futures.ThreadPoolExecutor(21) as pool:
        looping = pool.submit(dvc_status_loop)
        answers = list(pool.map(lambda _: client.post("/reload"), range(20)))
        time.sleep(1.0)
        stop.set_result(None)
        looping.result()
    assert {answer.status_code for answer in answers} <= {200, 429}
    assert statuses, "dvc status never ran"
    failed = [proc.stderr for proc in statuses if proc.returncode != 0]
    assert not failed, failed[0]


def test_an_in_place_write_under_a_running_server_never_changes_an_answer(query_service,
                                                                          query_project):
    path = "/search?n=5&name=" + quote(name_of(COLLECTION[0]), safe="")
    with httpx.Client(base_url=query_service.url, timeout=300) as client:
        before = client.get(path).json()["results"]
        touched = [query_project / "data/model/embedded_image_vectors.npy",
                   query_project / "data/model/vectorizer_model/model.keras",
                   query_project / "data/model/inference_model/model.bin"]
        saved = {target: target.read_bytes() for target in touched}
        try:
            for target in touched:        # root, or a chmod: the workspace file (and, in
                flip_last_byte(target)    # link mode, DVC's cache object) changes
            after = client.get(path)
            assert after.status_code == 503 or after.json()["results"] == before
            assert client.get("/health", params={"deep": 1}).status_code == 200
            query = query_project / "data/master" / COLLECTION[0][1] / \
                os.path.basename(COLLECTION[0][0])
            cli = subprocess.run([sys.executable, "stages/serve.py", str(query), "-n", "2"],
                                 cwd=query_project, env=tool_env(), capture_output=True,
                                 text=True, check=False)
            assert cli.returncode == 1 and cli.stderr.count("\n") == 1, cli.stderr
            assert "serve.py: error:" in cli.stderr
        finally:
            for target, data in saved.items():
                os.chmod(target, 0o644)
                target.write_bytes(data)
                os.chmod(target, 0o444)
