"""A real headless Chromium (Debian's `chromium` + `chromium-driver`, installed by .ci/run) driven by Selenium.

Skipped when Chromium is not installed on a developer's machine; under CI (`CI=true`) a missing
browser fails the test instead, as the database and Redis fixtures do.
"""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import IN_CI


def chromium_driver():
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        message = "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if IN_CI:
            pytest.fail(message + "; .ci/run should have installed them")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chrome.implicitly_wait(10)  # a page reached by a click may still be loading on a busy machine
    return chrome
