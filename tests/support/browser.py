"""Headless chromium through selenium (Debian's chromium + chromium-driver), for the page.

:data:`MISSING` says why no browser can run (then the page tests skip with that line).
"""
import shutil
from typing import List, Optional, Tuple

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
MISSING: Optional[str] = None if CHROMIUM and CHROMEDRIVER else \
    "no headless browser: apt-get install chromium chromium-driver"
TIMEOUT = 120


def start_browser() -> webdriver.Chrome:
    """Headless chromium driven by chromedriver (no download, no network)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--disable-gpu", "--window-size=1500,640"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(TIMEOUT)
    return driver


def text_of(driver, element_id: str) -> str:
    """An element's text as the page set it (``textContent``: newlines kept)."""
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")


def wait_for_query(driver, name: str) -> None:
    """Waits until the page shows the answer for ``name``, every thumbnail loaded."""
    WebDriverWait(driver, TIMEOUT).until(lambda d: (
        text_of(d, "query-name") == name
        and d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready"
        and d.execute_script("return [...document.images].every("
                             "i => i.complete && i.naturalWidth > 0)")))


def shown_results(driver) -> List[Tuple[str, str]]:
    """(name, score text) of each match on the page, in order (names as set)."""
    return [tuple(pair) for pair in driver.execute_script(
        "return [...document.querySelectorAll('#matches li')].map(li => "
        "[li.querySelector('.name').textContent, li.querySelector('.score').textContent])")]


def match_buttons(driver) -> dict:
    """The button of each match, by name."""
    return {button.get_attribute("data-name"): button
            for button in driver.find_elements(By.CSS_SELECTOR, "#matches li button")}


def shown_ranks(driver) -> List[str]:
    """The rank text of each match on the page, in order (``#1``, ...)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#matches li .rank')].map(e => e.textContent)")


def wait_for_ranks(driver, first: str, **texts: str) -> None:
    """Waits until the first match shown has rank ``first``, every thumbnail loaded, and
    each element (by id) holds its text (``status="in folder shoes/"``)."""
    WebDriverWait(driver, TIMEOUT).until(lambda d: (
        shown_ranks(d)[:1] == [first]
        and d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready"
        and all(text in text_of(d, element) for element, text in texts.items())
        and d.execute_script("return [...document.images].every("
                             "i => i.complete && i.naturalWidth > 0)")))
