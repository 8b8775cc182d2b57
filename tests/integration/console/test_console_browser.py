"""The console in a real browser: Debian's chromium, headless, driven by Selenium through Debian's
chromedriver. An org admin signs in with a token from `kubectl create token`, sees only its org,
opens a table, sees the chart, pages the rejected rows, downloads the CSV, opens a record's history,
presses run-now and sees the Job; the run records the admin as its requester. A second identity
gets 403 for the first org. The pages stay readable at 200% zoom (no sideways scrolling) and start
with a skip link for keyboard users.

ORGPIPELINE_CONSOLE_SCREENSHOTS=<folder> saves screenshots of the main pages there (docs/console/).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MANY_BAD_ROWS, SEED_KEY_PARTS, World, harness

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed (hack/bootstrap installs them)",
)
SHOTS = os.environ.get("ORGPIPELINE_CONSOLE_SCREENSHOTS", "")


@pytest.fixture(scope="module")
def downloads(world: World) -> Path:
    path = world.tmp / "downloads"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser(world: World, downloads: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # No network but loopback here: the background-networking flags keep chromium from calling out.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={world.tmp / 'chromium-profile'}",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.implicitly_wait(2)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, name: str) -> None:
    if not SHOTS:
        return
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height) + 120, 800), 4000))
    driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))
    driver.set_window_size(1280, 1000)


def sign_in(driver: Any, world: World, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(world.url + "/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.stack button[type=submit]").click()


def body(driver: Any) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)
    except StaleElementReferenceException:  # the page was being replaced: read the new one
        return str(driver.find_element(By.TAG_NAME, "body").text)


def shows(driver: Any, *texts: str) -> str:
    """The page's text once it holds all of `texts`: after a click or a submit the browser may still
    be loading the next page (a form's POST and its redirect) when the test reads on."""

    def page() -> str | None:
        text = body(driver)
        return text if all(t in text for t in texts) else None

    return harness.wait_for(f"a page showing {texts}", page, timeout=15, every=0.2)


def test_an_org_admin_uses_the_console_in_a_browser(world: World, browser: Any, downloads: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(world.url + "/orgs")
    assert "Sign in" in body(driver)
    shot(driver, "login")
    sign_in(driver, world, world.admin.token)

    # Only the org the admin may get.
    assert driver.current_url.endswith("/orgs")
    links = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "main table tbody th a")]
    assert links == [world.name]
    shot(driver, "orgs")
    driver.find_element(By.LINK_TEXT, world.name).click()
    shows(driver, f"Org {world.name}")
    shot(driver, "org")

    # A table: its chart, and its rejected rows a page at a time.
    driver.find_element(By.CSS_SELECTOR, "main table tbody").find_element(By.LINK_TEXT, "orders").click()
    chart = driver.find_element(By.CSS_SELECTOR, "svg#quality")
    assert chart.is_displayed() and chart.size["width"] > 300
    assert driver.find_element(By.CSS_SELECTOR, "svg#volume").is_displayed()
    shot(driver, "table")
    total = MANY_BAD_ROWS + 5
    shows(driver, f"{total} rejected rows")
    first_page = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#rejected-rows tbody tr")]
    driver.find_element(By.LINK_TEXT, "Next rows").click()
    shows(driver, "page 2 of 3")
    second_page = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#rejected-rows tbody tr")]
    assert len(first_page) == len(second_page) == 25 and not set(first_page) & set(second_page)

    # The CSV download: the file's header and every rejected row.
    driver.find_element(By.PARTIAL_LINK_TEXT, "Download as CSV").click()
    target = downloads / "orders_rejected.csv"
    harness.wait_for("the CSV download", lambda: target.exists() and target.stat().st_size > 0, timeout=30)
    lines = target.read_text().splitlines()
    assert lines[0].startswith("order_id,customer_id") and len(lines) == total + 1

    # A record's history, by its composite key.
    key = "org_{}_orders_{}".format(world.org_id, "_".join(SEED_KEY_PARTS))
    field = driver.find_element(By.CSS_SELECTOR, "section[aria-labelledby=records-h] input[name=key]")
    field.send_keys(key)
    field.submit()
    shows(driver, "Version 1: INSERT", "Version 2: UPDATE", "orders_2024_01_16.csv, line 2")
    shot(driver, "history")

    # Run now, with a reason: the Job appears on the page, the run records who asked and why.
    driver.find_element(By.LINK_TEXT, "orders").click()
    before = (harness.last_run(harness.get_json("orgpipeline", world.name), "orders") or {}).get("job")
    driver.find_element(By.ID, "reason").send_keys("checked in the console")
    driver.find_element(By.XPATH, "//button[normalize-space()='Run orders now']").click()
    shows(driver, "Run requested")

    def job_listed() -> bool:
        driver.refresh()
        names = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#jobs tbody td:first-child")]
        return any(n and n != before for n in names)

    harness.wait_for("the run's Job on the table page", job_listed, timeout=90, every=2)

    def recorded() -> dict[str, Any] | None:
        run = harness.last_run(harness.get_json("orgpipeline", world.name), "orders") or {}
        return run if run.get("job") not in (None, before) else None

    run = harness.wait_for("the run's result", recorded, timeout=180, every=2)
    assert run["trigger"] == "run-now"
    assert run["triggeredBy"] == world.admin.username
    assert run["triggerReason"] == "checked in the console"
    driver.refresh()
    shot(driver, "table-after-run")


def test_a_second_identity_gets_403_for_the_first_org(world: World, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.delete_all_cookies()
    sign_in(driver, world, world.other.token)
    links = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "main table tbody th a")]
    assert links == [world.other_name]
    driver.get(f"{world.url}/orgs/{world.name}")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Forbidden"
    assert world.name not in driver.find_element(By.TAG_NAME, "main").text


def test_pages_are_readable_at_200_percent_zoom_and_by_keyboard(world: World, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser
    driver.delete_all_cookies()
    sign_in(driver, world, world.admin.token)
    # 200% zoom of a 1280-pixel window is a 640-CSS-pixel viewport.
    driver.set_window_size(640, 1000)
    try:
        for path in ("/orgs", f"/orgs/{world.name}", f"/orgs/{world.name}/tables/orders"):
            driver.get(world.url + path)
            overflow = driver.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 200%"
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        focused = driver.switch_to.active_element
        assert focused.text == "Skip to content" and focused.is_displayed()
    finally:
        driver.set_window_size(1280, 1000)
