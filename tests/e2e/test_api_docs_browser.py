"""``/docs`` of a real ``etrans serve`` in a real browser: Debian's headless Chromium, driven by
selenium through Debian's chromedriver (both installed by ``scripts/system-packages``; missing,
the test fails and says how to get them).

Swagger UI renders one block per operation of ``/openapi.json``, logs nothing to the console
(a Content-Security-Policy violation would be logged there: the page may load nothing from
elsewhere), loads nothing from another origin, and "Try it out" -> "Execute" on GET /healthz
shows the server's 200.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from etrans.api.docs import CONTENT_SECURITY_POLICY
from tests.e2e.send_support import ServeProcess

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HOW_TO_GET_IT = ("Debian's chromium and chromium-driver are needed: run ./scripts/system-packages "
                 "(as root it runs apt-get install -y chromium chromium-driver)")


@pytest.fixture
def serve(etrans_env: Any) -> Iterator[ServeProcess]:
    process = ServeProcess(etrans_env(ETRANS_LOG_LEVEL="WARNING")).start()
    yield process
    process.stop()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    for program in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(program) is None:
            pytest.fail(f"{program} not found. {HOW_TO_GET_IT}")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,2000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium-manager (which downloads drivers) is never run.
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def test_swagger_ui_renders_every_operation_and_tries_healthz(serve: ServeProcess,
                                                               browser: webdriver.Chrome):
    document = httpx.get(serve.base_url + "/openapi.json", timeout=10).json()
    operations = [(method, path) for path, methods in document["paths"].items()
                  for method in methods]
    page = httpx.get(serve.base_url + "/docs", timeout=10)
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY

    browser.get(serve.base_url + "/docs")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".opblock")) >= len(operations))
    shown = {(block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text.lower(),
              block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute(
                  "data-path"))
             for block in browser.find_elements(By.CSS_SELECTOR, ".opblock")}
    assert shown == set(operations)

    healthz = browser.find_element(By.ID, "operations-Health-healthz")
    healthz.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    wait.until(lambda b: healthz.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
    healthz.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    wait.until(lambda b: healthz.find_elements(By.CSS_SELECTOR, ".execute"))
    healthz.find_element(By.CSS_SELECTOR, ".execute").click()
    status = wait.until(lambda b: healthz.find_elements(
        By.CSS_SELECTOR, ".live-responses-table tr.response td.response-col_status"))
    assert status[0].text.strip() == "200"
    body = healthz.find_element(By.CSS_SELECTOR, ".live-responses-table .microlight").text
    assert '"status": "ok"' in body

    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources, "the page loaded no resource?"
    assert [url for url in resources if not url.startswith(serve.base_url + "/")] == []
    console = [entry for entry in browser.get_log("browser")
               if entry["level"] in ("SEVERE", "WARNING")]
    assert console == [], console
