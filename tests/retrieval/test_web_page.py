"""The web page at `/` in headless Chromium (Debian `chromium` + `chromium-driver`, driven by Selenium): type a
query, see ranked results with highlighted terms, per-stage ranks and timings; apply a filter, see them change.
A screenshot of each state is saved under the test's temp dir (and kept in `$TWOSTAGE_SCREENSHOTS` if set)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from index.builder import build_index
from retrieval.loadtest import served
from tests.conftest import SAMPLE_CORPUS
from tests.reliability import bm25_only

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser():
    # Not skipped: .ci/run installs both; a machine without them fails here, saying what to install.
    assert CHROMIUM and DRIVER, "the browser test needs Debian's chromium and chromium-driver (apt-get install " \
                                "chromium chromium-driver; .ci/run does it)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _corpus(tmp_path: Path) -> Path:
    docs = [json.loads(line) for line in SAMPLE_CORPUS.read_text().splitlines()]
    out = tmp_path / "corpus.jsonl"
    out.write_text("".join(json.dumps({**d, "kind": "ocean" if i % 2 == 0 else "other"}) + "\n"
                           for i, d in enumerate(docs)))
    return out


def _results(driver) -> list[str]:
    return [li.get_attribute("data-doc-id") for li in driver.find_elements(By.CSS_SELECTOR, "li.result")]


def test_search_page_in_headless_chromium(tmp_path, browser):
    build_index(_corpus(tmp_path), tmp_path / "idx", bm25_only(), show_progress=False)
    shots = Path(os.environ.get("TWOSTAGE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with served(tmp_path / "idx") as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 20)
        box = wait.until(ec.presence_of_element_located((By.ID, "q")))
        box.send_keys("ocean tides and plants turning light into energy\n")
        wait.until(lambda d: _results(d))
        ranked = _results(browser)
        assert {"tides", "photosynthesis"} <= set(ranked[:3])
        first = browser.find_element(By.CSS_SELECTOR, "li.result[data-doc-id=tides]")
        assert "tides" in [m.text.lower() for m in first.find_elements(By.TAG_NAME, "mark")]
        assert "bm25" in first.find_element(By.CSS_SELECTOR, "table.stages").text
        status = browser.find_element(By.ID, "status").text
        assert "bm25" in status and " ms" in status and "filter" not in status
        browser.save_screenshot(str(shots / "search.png"))

        browser.find_element(By.ID, "filter").send_keys('{"kind": "other"}')
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda d: "filter" in d.find_element(By.ID, "status").text)  # the filtered answer is shown
        filtered = _results(browser)
        assert "photosynthesis" in filtered and "tides" not in filtered and len(filtered) < len(ranked)
        metas = [m.text for m in browser.find_elements(By.CSS_SELECTOR, "li.result .meta")]
        assert len(metas) == len(filtered) and all(m == 'kind: "other"' for m in metas)
        browser.save_screenshot(str(shots / "filtered.png"))

        browser.find_element(By.ID, "filter").clear()
        browser.find_element(By.ID, "filter").send_keys('{"colour": "red"}')
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda d: d.find_element(By.ID, "error").text)
        assert "colour" in browser.find_element(By.ID, "error").text
    assert (shots / "search.png").stat().st_size > 1000 and (shots / "filtered.png").stat().st_size > 1000
