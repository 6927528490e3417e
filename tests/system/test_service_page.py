"""The web page in a real headless browser (Debian's chromium + chromium-driver).

Uploads a photo, waits for the results, checks names and scores against the API,
clicks a match and checks that it became the query; then the controls: the empty
state before any search, a folder, pages, "more like this" on a result, a link that
opens a search, and the Duplicates view. Screenshots are saved in the test's
temporary folder. The OpenAPI page ``/docs`` is opened too: its Swagger UI, served
from the service's own files (no CDN), must list the operations.
"""
import shutil
import sys
from pathlib import Path
from typing import List, Tuple
from urllib.parse import urlencode

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.browser import MISSING, shown_results, start_browser, text_of, TIMEOUT, \
    wait_for_query, wait_for_ranks
from tests.support.helpers import DATASET, pick_per_class, REPO_ROOT, run
from tests.support.query_project import COLLECTION, DUPLICATE_NAME, N_IMAGES, name_of
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


def test_page_empty_state_folder_pages_and_more_like_this(query_service, browser,
                                                         tmp_path: Path):
    api = httpx.Client(base_url=query_service.url, timeout=TIMEOUT)
    photo = PHOTO.read_bytes()

    def upload(**params) -> dict:
        return api.post("/search", params=params, files={"image": (PHOTO.name, photo)}).json()

    browser.get(query_service.url + "/")
    empty = browser.find_element(By.ID, "empty")
    WebDriverWait(browser, TIMEOUT).until(
        lambda d: f"search {N_IMAGES} photos" in empty.text)
    assert empty.is_displayed() and empty.text.startswith(
        f"Pick or drop a photo to search {N_IMAGES} photos")
    assert not browser.find_element(By.ID, "results").is_displayed()
    assert browser.execute_script(             # no image (so no broken-image icon) on show
        "return [...document.images].filter(i => i.offsetParent !== null).length") == 0
    browser.save_screenshot(str(tmp_path / "empty.png"))
    browser.find_element(By.ID, "file").send_keys(str(PHOTO))
    wait_for_query(browser, PHOTO.name)
    assert not empty.is_displayed()
    assert shown_results(browser) == expected(upload(n=5))
    # A folder: only its photos.
    browser.find_element(By.ID, "folder").send_keys("outwear")
    browser.find_element(By.ID, "apply").click()
    wait_for_ranks(browser, "#1", status="in folder outwear/ (2 images)")
    assert shown_results(browser) == expected(upload(n=5, folder="outwear"))
    assert all(name.startswith("outwear/") for name, _ in shown_results(browser))
    browser.save_screenshot(str(tmp_path / "folder.png"))
    # Pages of 4 over the whole collection: next, then back.
    browser.find_element(By.ID, "folder").clear()
    browser.find_element(By.ID, "n").clear()
    browser.find_element(By.ID, "n").send_keys("4")
    browser.find_element(By.ID, "apply").click()
    WebDriverWait(browser, TIMEOUT).until(lambda d: "folder" not in text_of(d, "status"))
    wait_for_ranks(browser, "#1", page="results 1\u20134")
    assert shown_results(browser) == expected(upload(n=4))
    assert browser.find_element(By.ID, "prev").get_attribute("disabled") is not None
    browser.find_element(By.ID, "next").click()
    wait_for_ranks(browser, "#5", page="results 5\u20138")
    assert shown_results(browser) == expected(upload(n=4, offset=4))
    browser.save_screenshot(str(tmp_path / "page-2.png"))
    browser.find_element(By.ID, "prev").click()
    wait_for_ranks(browser, "#1")
    # More like this on the second result: it becomes the query, first with 1.0000.
    second = shown_results(browser)[1][0]
    link = browser.find_elements(By.CSS_SELECTOR, "#matches .more-like-this")[1]
    assert link.text == "More like this" and "name=" in link.get_attribute("href")
    link.click()
    wait_for_query(browser, second)
    assert shown_results(browser)[0] == (second, "1.0000")
    assert shown_results(browser) == expected(api.get("/search",
                                                      params={"name": second, "n": 4}).json())
    api.close()


def test_page_link_opens_a_search_and_duplicates_view_lists_groups(query_service,
                                                                   query_project, browser,
                                                                   tmp_path: Path):
    api = httpx.Client(base_url=query_service.url, timeout=TIMEOUT)
    # A link to the page with a name opens that search.
    name = name_of(COLLECTION[5])
    browser.get(query_service.url + "/?" + urlencode({"name": name, "n": 3}))
    wait_for_query(browser, name)
    assert shown_results(browser) == expected(api.get("/search",
                                                      params={"name": name, "n": 3}).json())
    # Duplicates: without a report, the error says what to run; with one, its groups.
    browser.find_element(By.ID, "show-duplicates").click()
    WebDriverWait(browser, TIMEOUT).until(
        lambda d: "python stages/duplicates.py" in d.find_element(By.ID, "error").text)
    assert not browser.find_element(By.ID, "search-view").is_displayed()
    run([sys.executable, str(REPO_ROOT / "stages" / "duplicates.py")], query_project)
    try:
        browser.find_element(By.ID, "show-duplicates").click()
        WebDriverWait(browser, TIMEOUT).until(lambda d: d.find_elements(
            By.CSS_SELECTOR, "#groups .group") and d.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))
        assert not browser.find_element(By.ID, "error").is_displayed()
        group = browser.find_element(By.CSS_SELECTOR, "#groups .group")
        assert group.find_element(By.CSS_SELECTOR, ".group-title").text == \
            "Group 1 \u00b7 2 photos"
        members = group.find_elements(By.CSS_SELECTOR, ".members button")
        assert [member.get_attribute("data-name") for member in members] == \
            sorted([name_of(COLLECTION[0]), DUPLICATE_NAME])
        assert "1 group of near-duplicates (2 of 13 photos" in \
            text_of(browser, "duplicates-summary")
        browser.save_screenshot(str(tmp_path / "duplicates.png"))
        members[0].click()                             # a member: search by it
        wait_for_query(browser, members[0].get_attribute("data-name"))
        assert browser.find_element(By.ID, "search-view").is_displayed()
    finally:
        shutil.rmtree(query_project / "duplicates", ignore_errors=True)
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
