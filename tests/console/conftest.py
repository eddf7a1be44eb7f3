"""Fixtures of the console's browser tests: the real release binary on a
loopback port (tests/sdk/helpers.Server) and Debian's Chromium driven by
Selenium through Debian's chromedriver. A missing browser or driver is a
failure, never a skip."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "sdk"))

from helpers import REPO, Server  # noqa: E402

import forgeline  # noqa: E402  (the repository's SDK, put on the path by helpers)

CHROMIUM = os.environ.get("FORGELINE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FORGELINE_CHROMEDRIVER", "/usr/bin/chromedriver")

#: Screenshots of each view land here (kept by CI as test artifacts).
ARTIFACTS = Path(os.environ.get("FORGELINE_ARTIFACTS", REPO / "target" / "console-artifacts"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path, HERE / "forgeline_console.toml").start()
    try:
        yield srv
    finally:
        code = srv.stop()
        assert code == 0, f"forgeline exited {code} after SIGTERM:\n{srv.log()}"


@pytest.fixture
def admin(server: Server) -> Iterator[forgeline.Client]:
    """The API as an admin (every role), for setting the scene."""
    with forgeline.Client(server.url, server.admin_token()) as c:
        yield c


@pytest.fixture
def browser() -> Iterator["Browser"]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(path), f"missing {path}: apt-get install chromium chromium-driver"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="forgeline-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.implicitly_wait(0)
    try:
        yield Browser(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _ignoring(exc, f, *args):  # type: ignore[no-untyped-def]
    try:
        return f(*args)
    except exc:
        return False


class Browser:
    """A thin layer over the WebDriver: waits on conditions, screenshots,
    and the console log."""

    def __init__(self, driver) -> None:  # type: ignore[no-untyped-def]
        self.d = driver

    def open(self, url: str) -> None:
        self.d.get(url)

    def wait(self, condition, message: str, timeout: float = 20):  # type: ignore[no-untyped-def]
        """Waits for ``condition(driver)``; pages re-render as events arrive,
        so an element that went stale is looked up again."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.d, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
            condition, message=message)

    def find(self, css: str, timeout: float = 20):  # type: ignore[no-untyped-def]
        return self.wait(lambda d: d.find_elements("css selector", css) or None, f"{css}", timeout)[0]

    def text(self, css: str) -> str:
        return str(self.wait(lambda d: d.find_element("css selector", css).text, f"text of {css}"))

    def click(self, css: str, timeout: float = 20) -> None:
        def go(d):  # type: ignore[no-untyped-def]
            d.find_element("css selector", css).click()
            return True

        from selenium.common.exceptions import NoSuchElementException

        self.wait(lambda d: _ignoring(NoSuchElementException, go, d), f"click {css}", timeout)

    def wait_text(self, css: str, text: str, timeout: float = 20) -> None:
        self.wait(lambda d: any(text in e.text for e in d.find_elements("css selector", css)),
                  f"{text!r} in {css}", timeout)

    def sign_in(self, url: str, token: str) -> None:
        self.open(url + "/#/signin")
        box = self.find("#token")
        box.clear()
        box.send_keys(token)
        self.find("form button[type=submit]").click()

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.d.save_screenshot(str(ARTIFACTS / f"{name}.png"))

    def console_errors(self) -> list[str]:
        return [e["message"] for e in self.d.get_log("browser") if e["level"] == "SEVERE"]

    def foreign_requests(self, origin: str) -> list[str]:
        urls = self.d.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])")
        return [u for u in urls if not u.startswith(origin)]
