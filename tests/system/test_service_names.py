"""Photos named with any character are searched, shown and clicked, over HTTP and on the page.

A real project whose photo names hold a newline, spaces, ``#``, ``?``, ``%``, ``&``,
``+``, a backslash and non-Latin letters (the ETL keeps such names raw) is built with
``dvc repro`` and the real weights and served by ``serve.py --http``. Every name must
answer ``/search?name=``, give its thumbnail at ``/images/...`` (the URL the page
builds: each path segment percent-encoded), and, in headless chromium, show its
thumbnail and become the query when clicked. The thumbnail route used to stop at a
newline (404), and the page's URLs are only right if every segment is encoded.
"""
import shutil
from pathlib import Path
from typing import List
from urllib.parse import quote

import cv2
import httpx
import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support import browser
from tests.support.helpers import DATASET, PIPELINE, make_project, pick_per_class, repro
from tests.support.service_helpers import ServiceProcess

pytestmark = pytest.mark.slow

PHOTOS = [DATASET / path for path, _ in pick_per_class("train", 1)[:8]]
NAMES = ["odd/new\nline.jpg", "odd/two  spaces & plus+.jpg", "odd/hash#tag?.jpg",
         "odd/100% cotton.jpg", "odd/café 日本 ü.jpg", "odd/back\\slash.jpg",
         "odd/%2F not a slash.jpg", "plain/a.jpg"]
TIMEOUT = 120


def image_url(name: str) -> str:
    """The thumbnail URL as the page builds it (``encodeURIComponent`` per segment)."""
    return "/images/" + "/".join(quote(part, safe="-_.!~*'()") for part in name.split("/"))


@pytest.fixture(scope="module", name="project")
def project_fixture(tmp_path_factory):
    """The project with oddly named photos, built once with ``dvc repro``."""
    project = make_project(tmp_path_factory.mktemp("names") / "project", [])
    for photo, name in zip(PHOTOS, NAMES):
        (project / "data" / "master" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, project / "data" / "master" / name)
    assert repro(project) == PIPELINE
    assert sorted(np.load(project / "data/landing/image_names.npy").tolist()) == sorted(NAMES)
    return project


@pytest.fixture(scope="module", name="service")
def service_fixture(project, tmp_path_factory):
    """``serve.py --http`` on it."""
    service = ServiceProcess(project, tmp_path_factory.mktemp("names-log") / "log.txt")
    yield service
    service.stop()


def landing(project: Path, name: str) -> np.ndarray:
    """The landing image of a name, BGR."""
    names: List[str] = np.load(project / "data/landing/image_names.npy").tolist()
    rows = np.load(project / "data/landing/resized_rgb.npy", mmap_mode="r")
    return np.asarray(rows[names.index(name)])[:, :, ::-1]


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_every_name_is_searched_and_has_its_thumbnail(project, service, name):
    with httpx.Client(base_url=service.url, timeout=TIMEOUT) as client:
        answer = client.get("/search", params={"name": name, "n": len(NAMES)})
        assert answer.status_code == 200, answer.text
        assert answer.json()["query"] == name
        assert answer.json()["results"][0]["name"] == name
        assert sorted(hit["name"] for hit in answer.json()["results"]) == sorted(NAMES)
        thumb = client.get(image_url(name))
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg", \
        (image_url(name), thumb.text)
    decoded = cv2.imdecode(np.frombuffer(thumb.content, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(decoded.astype(int) - landing(project, name)).mean() < 4   # JPEG q92
    assert "Traceback" not in service.log()


def test_the_page_shows_and_clicks_every_odd_name(service, tmp_path):
    if browser.MISSING:
        pytest.skip(browser.MISSING)
    driver = browser.start_browser()
    try:
        driver.get(service.url + "/")
        WebDriverWait(driver, browser.TIMEOUT).until(
            lambda d: d.find_element(By.ID, "version").text.startswith("version: "))
        count = driver.find_element(By.ID, "n")
        count.clear()
        count.send_keys(str(len(NAMES)))
        driver.find_element(By.ID, "file").send_keys(str(PHOTOS[0]))
        browser.wait_for_query(driver, PHOTOS[0].name)
        for name in NAMES:
            browser.match_buttons(driver)[name].click()
            browser.wait_for_query(driver, name)        # its thumbnail and the others load
            shown = [shown_name for shown_name, _ in browser.shown_results(driver)]
            assert shown[0] == name and sorted(shown) == sorted(NAMES)
            source = driver.find_element(By.ID, "query-image").get_attribute("src")
            assert source == service.url + image_url(name)
        driver.save_screenshot(str(tmp_path / "odd-names.png"))
    finally:
        driver.quit()
