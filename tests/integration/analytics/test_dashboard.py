"""The analyst dashboard in a real headless Chromium against a real stack: a
workload over several models and keys shows up on ``/dashboard`` with the
same totals as ``/api/v1/usage``, drawn charts and no console errors. The
screenshot goes to ``test-artifacts/dashboard.png``, and to
``docs/dashboard.png`` (the README's) when ``IGW_UPDATE_SCREENSHOT=1``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.integration.analytics.browser import chromium, console_errors, full_page_png, wait_for
from tests.stack import Stack, sim_model
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

MASTER = "sk-master-dashboard-0123456789"
REPO = Path(__file__).resolve().parents[3]
ARTIFACT = REPO / "test-artifacts" / "dashboard.png"
README_IMAGE = REPO / "docs" / "dashboard.png"
SETTLED = {"ready", "empty", "denied"}
NOTHING = "\N{EN DASH}"  # what a card shows without data
# (key, model, stream, how many); "sim-500" always fails
WORKLOAD: list[tuple[str, str, bool, int]] = [
    ("web-app", "sim", False, 10),
    ("web-app", "sim", True, 6),
    ("web-app", "sim-large", True, 4),
    ("batch-jobs", "sim-echo", False, 8),
    ("batch-jobs", "sim-large", False, 3),
    ("batch-jobs", "sim-500", False, 3),
    ("notebook", "sim", True, 4),
    ("notebook", "sim-500", False, 1),
]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, dict[str, str]]]:
    root: Path = tmp_path_factory.mktemp("igw-dashboard")
    stack = Stack(root)
    stack.overrides = {"auth": {"master_key": MASTER}}
    stack.extra_models = [
        sim_model("sim-large", "sim?ttft_ms=120&itl_ms=2&tokens=120", stack.sim_port)
    ]
    try:
        stack.start_all()
        keys = {name: new_key(stack, key_alias=name) for name in ("web-app", "batch-jobs")}
        keys["notebook"] = new_key(stack, key_alias="notebook")
        keys["viewer"] = new_key(stack, key_alias="analyst", role="viewer")
        send_workload(stack, keys)
        yield stack, keys
    finally:
        stack.stop_all()


def new_key(stack: Stack, **fields: Any) -> str:
    return stack.new_key(MASTER, **fields)


def send_workload(stack: Stack, keys: dict[str, str]) -> None:
    messages: list[Any] = [{"role": "user", "content": "numbers for the dashboard, please"}]
    for key, model, stream, times in WORKLOAD:
        client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=keys[key], max_retries=0)
        for _ in range(times):
            if model == "sim-500":
                with pytest.raises(openai.InternalServerError):
                    client.chat.completions.create(model=model, messages=messages)
            elif stream:
                chunks = client.chat.completions.create(
                    model=model,
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                assert any(chunk.usage for chunk in chunks)
            else:
                client.chat.completions.create(model=model, messages=messages)
    sent = sum(times for *_, times in WORKLOAD)
    # one final row per request (a failed attempt that was tried again is not final)
    wait_until(lambda: final_rows(stack) == sent, 30, f"{sent} requests in the usage store")


def final_rows(stack: Stack) -> int:
    try:
        return int(stack.sql("SELECT countIf(final) FROM requests")[0][0])
    except AssertionError:  # the accounting service is still starting
        return -1


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


def state(driver: webdriver.Chrome) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").get_attribute("data-state"))


def settle(driver: webdriver.Chrome) -> str:
    wait_for(driver, lambda d: state(d) in SETTLED)
    return state(driver)


def open_dashboard(driver: webdriver.Chrome, stack: Stack, key: str) -> None:
    driver.get(f"{stack.base_url}/dashboard")
    settle(driver)  # without a key: this gateway answers 401, and the console says so
    console_errors(driver)
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    settle(driver)


def shown(driver: webdriver.Chrome, element_id: str) -> tuple[str, str]:
    element = driver.find_element(By.ID, element_id)
    return element.text, str(element.get_attribute("data-value"))


def count(driver: webdriver.Chrome, selector: str) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, selector))


def test_the_page_needs_no_key_and_loads_nothing_else(
    seeded: tuple[Stack, dict[str, str]],
) -> None:
    stack, _ = seeded
    page = httpx.get(f"{stack.base_url}/dashboard", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert "<script src" not in page.text and "http://" not in page.text.replace(
        "http://www.w3.org/2000/svg", ""
    )
    assert "https://" not in page.text


def test_the_dashboard_shows_the_usage(
    seeded: tuple[Stack, dict[str, str]], browser: webdriver.Chrome
) -> None:
    stack, keys = seeded
    open_dashboard(browser, stack, keys["viewer"])
    assert state(browser) == "ready"
    stored = browser.execute_script("return localStorage.getItem('igw.dashboard.key')")
    assert stored == keys["viewer"]
    browser.find_element(By.CSS_SELECTOR, "[data-range='1h']").click()
    assert settle(browser) == "ready"

    body = browser.find_element(By.TAG_NAME, "body")
    span = {"start": body.get_attribute("data-start"), "end": body.get_attribute("data-end")}
    usage = httpx.get(
        f"{stack.base_url}/api/v1/usage",
        params=span,
        headers={"authorization": f"Bearer {keys['viewer']}"},
        timeout=30,
    ).json()
    assert usage["total_requests"] == sum(times for *_, times in WORKLOAD)
    assert shown(browser, "total-requests") == (
        f"{usage['total_requests']:,}",
        str(usage["total_requests"]),
    )
    assert shown(browser, "total-tokens") == (
        f"{usage['total_tokens']:,}",
        str(usage["total_tokens"]),
    )
    assert shown(browser, "total-errors") == (f"{usage['errors']:,}", str(usage["errors"]))
    cost_text, cost_value = shown(browser, "total-cost")
    assert cost_text.startswith("$") and float(cost_value) == pytest.approx(usage["total_cost"])
    assert usage["errors"] == 4 and usage["total_cost"] > 0

    # every chart drew its marks
    for chart in ("requests", "tokens", "cost"):
        assert count(browser, f"#chart-{chart} circle.point") > 0, chart
        assert count(browser, f"#chart-{chart} path.line") == 4, chart  # one line per model
    assert count(browser, "#chart-latency rect.bar") >= 2 * 3  # p50 and p95 per deployment
    assert count(browser, "#chart-ttft rect.bar") > 0
    assert count(browser, "#chart-errors rect.bar") == 4
    assert count(browser, "#chart-keys rect.bar") == 3
    legend = browser.find_element(By.ID, "series-legend").text.split("\n")
    assert sorted(legend) == ["sim", "sim-500", "sim-echo", "sim-large"]
    keys_table = browser.find_element(By.ID, "table-keys").text
    assert all(alias in keys_table for alias in ("web-app", "batch-jobs", "notebook"))
    assert keys["web-app"] not in browser.page_source
    errors_table = browser.find_element(By.ID, "table-errors").text
    assert "100.0%" in errors_table  # sim-500

    assert console_errors(browser) == []
    png = full_page_png(browser)
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_bytes(png)
    if os.environ.get("IGW_UPDATE_SCREENSHOT") == "1":
        README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        README_IMAGE.write_bytes(png)
    assert console_errors(browser) == []


def test_group_by_names_keys_by_alias(
    seeded: tuple[Stack, dict[str, str]], browser: webdriver.Chrome
) -> None:
    stack, keys = seeded
    open_dashboard(browser, stack, keys["viewer"])
    Select(browser.find_element(By.ID, "group-by")).select_by_value("key")
    assert settle(browser) == "ready"
    legend = browser.find_element(By.ID, "series-legend").text.split("\n")
    assert sorted(legend) == ["batch-jobs", "notebook", "web-app"]
    assert count(browser, "#chart-errors rect.bar") == 3
    assert "group=key" in browser.current_url
    assert console_errors(browser) == []


def test_an_empty_range_says_so(
    seeded: tuple[Stack, dict[str, str]], browser: webdriver.Chrome
) -> None:
    stack, keys = seeded
    open_dashboard(browser, stack, keys["viewer"])
    browser.execute_script(
        "document.getElementById('range-from').value = '2001-01-01T00:00';"
        "document.getElementById('range-to').value = '2001-01-02T00:00';"
    )
    browser.find_element(By.CSS_SELECTOR, "#custom-range button[type=submit]").click()
    assert settle(browser) == "empty"
    assert "No requests between" in browser.find_element(By.ID, "notice").text
    assert shown(browser, "total-requests") == ("0", "0")
    assert "No data" in browser.find_element(By.ID, "chart-requests").text
    assert count(browser, "svg circle.point") == 0
    assert console_errors(browser) == []


def test_a_refused_key_is_explained(
    seeded: tuple[Stack, dict[str, str]], browser: webdriver.Chrome
) -> None:
    stack, keys = seeded
    open_dashboard(browser, stack, "sk-igw-not-a-real-key")
    assert state(browser) == "denied"
    notice = browser.find_element(By.ID, "notice").text
    assert "refused this key (401" in notice and "viewer or admin key" in notice
    open_dashboard(browser, stack, keys["web-app"])  # a user key may not read analytics
    assert state(browser) == "denied"
    assert "may not read analytics (403" in browser.find_element(By.ID, "notice").text
    assert count(browser, "svg rect.bar") == 0
    assert shown(browser, "total-requests")[0] == NOTHING
