"""The web page in a real headless browser (Debian's chromium + chromium-driver).

Uploads a photo, waits for the results, checks names and scores against the API,
clicks a match and checks that it became the query. Screenshots of both states are
saved in the test's temporary folder. The OpenAPI page ``/docs`` is opened too: its
Swagger UI, served from the service's own files (no CDN), must list the operations.
"""
from pathlib import Path
from typing import List, Tuple

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.browser import MISSING, shown_results, start_browser, TIMEOUT, \
    wait_for_query
from tests.support.helpers import DATASET, pick_per_class
from tests.support.service_helpers import TOKEN

pytestmark = pytest.mark.slow

if MISSING:
    pytest.skip(MISSING, allow_module_level=True)

PHOTO = DATASET / pick_per_class("test", 1, skip=1)[2][0]


@pytest.fixture(name="browser")
def browser_fixture():
    """Headless chromium driven by chromedriver (no download, no network)."""
    driver = start_browser()
    yield driver
    driver.quit()


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


def test_with_a_token_the_page_asks_once_and_sends_it(token_service, browser,
                                                      tmp_path: Path):
    api = httpx.Client(base_url=token_service.url, timeout=TIMEOUT,
                       headers={"Authorization": f"Bearer {TOKEN}"})
    version = api.get("/version").json()
    browser.get(token_service.url + "/")
    form = browser.find_element(By.ID, "token-form")
    WebDriverWait(browser, TIMEOUT).until(lambda d: form.is_displayed())
    assert "needs its token" in browser.find_element(By.ID, "error").text
    for given, shown in (("wrong-token-0123456789", "refused"), (TOKEN, None)):
        browser.find_element(By.ID, "token").send_keys(given)
        browser.find_element(By.ID, "token-submit").click()
        if shown:
            WebDriverWait(browser, TIMEOUT).until(
                lambda d, words=shown: words in d.find_element(By.ID, "token-message").text)
    WebDriverWait(browser, TIMEOUT).until(
        lambda d: d.find_element(By.ID, "version").text == version["version"])
    assert not form.is_displayed()
    browser.find_element(By.ID, "file").send_keys(str(PHOTO))
    wait_for_query(browser, PHOTO.name)                     # thumbnails fetched with it
    answer = api.post("/search", params={"n": version["default_n"]},
                      files={"image": (PHOTO.name, PHOTO.read_bytes())}).json()
    assert shown_results(browser) == expected(answer)
    sources = browser.execute_script(
        "return [...document.querySelectorAll('#matches img')].map(i => i.src)")
    assert sources and all(src.startswith("blob:") for src in sources)
    second = answer["results"][1]["name"]
    browser.find_elements(By.CSS_SELECTOR, "#matches li button")[1].click()
    wait_for_query(browser, second)
    assert shown_results(browser)[0] == (second, "1.0000")
    browser.save_screenshot(str(tmp_path / "token.png"))
    browser.refresh()                       # the same tab keeps it (sessionStorage)
    WebDriverWait(browser, TIMEOUT).until(
        lambda d: d.find_element(By.ID, "version").text == version["version"])
    assert not browser.find_element(By.ID, "token-form").is_displayed()
    api.close()
