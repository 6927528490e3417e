"""The web page in a real headless browser (Debian's chromium + chromium-driver).

Uploads a photo, waits for the results, checks names and scores against the API,
clicks a match and checks that it became the query. Screenshots of both states are
saved in the test's temporary folder. The OpenAPI page ``/docs`` is opened too: its
Swagger UI, served from the service's own files (no CDN), must list the operations.
"""
import shutil
from pathlib import Path
from typing import List, Tuple

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.helpers import DATASET, pick_per_class

pytestmark = pytest.mark.slow

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("no headless browser: apt-get install chromium chromium-driver",
                allow_module_level=True)

PHOTO = DATASET / pick_per_class("test", 1, skip=1)[2][0]
TIMEOUT = 120


@pytest.fixture(name="browser")
def browser_fixture():
    """Headless chromium driven by chromedriver (no download, no network)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--disable-gpu", "--window-size=1500,640"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(TIMEOUT)
    yield driver
    driver.quit()


def shown_results(driver) -> List[Tuple[str, str]]:
    """(name, score text) of each match on the page, in order."""
    return [(item.find_element(By.CLASS_NAME, "name").text,
             item.find_element(By.CLASS_NAME, "score").text)
            for item in driver.find_elements(By.CSS_SELECTOR, "#matches li")]


def wait_for_query(driver, name: str) -> None:
    """Waits until the page shows the answer for ``name``, thumbnails loaded."""
    WebDriverWait(driver, TIMEOUT).until(lambda d: (
        d.find_element(By.ID, "query-name").text == name
        and d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready"
        and d.execute_script("return [...document.images].every("
                             "i => i.complete && i.naturalWidth > 0)")))


def expected(answer: dict) -> List[Tuple[str, str]]:
    """(name, score with 4 decimals) of an API answer."""
    return [(hit["name"], f"{hit['score']:.4f}") for hit in answer["results"]]


def test_page_uploads_shows_results_and_searches_by_a_match(query_service, browser,
                                                            tmp_path: Path):
    api = httpx.Client(base_url=query_service.url, timeout=TIMEOUT)
    version = api.get("/version").json()
    browser.get(query_service.url + "/")
    WebDriverWait(browser, TIMEOUT).until(
        lambda d: d.find_element(By.ID, "version").text == version["version"])
    assert browser.find_element(By.ID, "n").get_attribute("value") == str(version["default_n"])
    browser.find_element(By.ID, "file").send_keys(str(PHOTO))
    wait_for_query(browser, PHOTO.name)
    browser.save_screenshot(str(tmp_path / "upload.png"))
    answer = api.post("/search", params={"n": version["default_n"]},
                      files={"image": (PHOTO.name, PHOTO.read_bytes())}).json()
    assert shown_results(browser) == expected(answer)
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
    # Click the second match: it becomes the query, and its own matches are shown.
    second = answer["results"][1]["name"]
    browser.find_elements(By.CSS_SELECTOR, "#matches li button")[1].click()
    wait_for_query(browser, second)
    browser.save_screenshot(str(tmp_path / "by-name.png"))
    again = api.get("/search", params={"name": second, "n": version["default_n"]}).json()
    assert shown_results(browser) == expected(again)
    assert shown_results(browser)[0] == (second, "1.0000")
    assert browser.find_element(By.ID, "query-image").get_attribute("src").endswith(
        "/images/" + "/".join(second.split("/")))
    # A file that is not an image: one line of error on the page, results kept.
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo\n", encoding="utf-8")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    WebDriverWait(browser, TIMEOUT).until(
        lambda d: d.find_element(By.ID, "error").text != "")
    assert "not an image" in browser.find_element(By.ID, "error").text
    api.close()


def test_docs_page_lists_the_operations_from_local_files(query_service, browser,
                                                         tmp_path: Path):
    browser.get(query_service.url + "/docs")
    operations = "return [...document.querySelectorAll('.opblock')].map(e => e.textContent)"
    WebDriverWait(browser, TIMEOUT).until(
        lambda d: any("/search" in text for text in d.execute_script(operations)))
    browser.save_screenshot(str(tmp_path / "docs.png"))
    shown = browser.execute_script(operations)
    for path in ("/search", "/images/{name}", "/health", "/version", "/reload"):
        assert any(path in text for text in shown), (path, shown)
    # Everything the page loaded came from the service (no CDN).
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(query_service.url + "/") for url in loaded), loaded
