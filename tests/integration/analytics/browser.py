"""Headless Chromium for browser tests: Debian's ``chromium`` driven by its
``chromedriver`` through Selenium (nothing is downloaded at test time)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

INSTALL = (
    "the dashboard's browser test needs chromium and chromedriver: run `make browser` as root, "
    "or `sudo apt-get install -y --no-install-recommends chromium chromium-driver`"
)
WIDTH = 1440


def chromium() -> webdriver.Chrome:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.fail(INSTALL, pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WIDTH},1000",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def wait_for(driver: webdriver.Chrome, check: Callable[[Any], Any], timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(check)


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """Console errors (and uncaught exceptions) logged since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def full_page_png(driver: webdriver.Chrome) -> bytes:
    """The whole page: the window grows until the viewport holds all of it."""
    for _ in range(3):
        inner, page, outer = driver.execute_script(
            "return [window.innerHeight, document.documentElement.scrollHeight, window.outerHeight]"
        )
        if inner >= page:
            break
        driver.set_window_size(WIDTH, int(outer) + int(page) - int(inner))
    png: bytes = driver.get_screenshot_as_png()
    return png
