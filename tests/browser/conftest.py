"""Browser tests of the console: Debian's chromium driven by Playwright, against the local stack.

The browser is the system one (``CHROMIUM`` or ``chromium`` on PATH; `make browser-deps` installs it
with apt): Playwright's own browser download is never used. Screenshots go to the test's tmp dir, and
also to ``CONSOLE_SCREENSHOTS`` (a directory, e.g. docs/) when that is set: `make screenshots`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, ViewportSize, sync_playwright

from tests.e2e.conftest import Stack, stack  # noqa: F401  (the fixture, for the tests here)

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
NARROW: ViewportSize = {"width": 390, "height": 844}


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("no chromium: run `make browser-deps` (apt-get install chromium) or set CHROMIUM=/path/to/it")
    return path


# Module scope, not session: Playwright's sync API keeps an asyncio loop running in this thread while it is
# open, and the tests after this directory (MCP over asyncio) need the thread back.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
    yield browser
    browser.close()


class PageErrors:
    """JavaScript exceptions and console errors (CSP violations included) seen by a page."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.allowed: list[str] = []

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.messages.append(message.text)

    def unexpected(self) -> list[str]:
        # A failed fetch (401, 402, 404 …) is logged by chromium as "Failed to load resource": expected here.
        return [
            m for m in self.messages if "Failed to load resource" not in m and not any(a in m for a in self.allowed)
        ]


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
def page(browser: Browser, page_errors: PageErrors) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    page = context.new_page()
    page.on("console", page_errors.console)
    page.on("pageerror", lambda exc: page_errors.messages.append(f"uncaught: {exc}"))
    page.set_default_timeout(15_000)
    yield page
    context.close()
    assert page_errors.unexpected() == [], "the page logged errors"


@pytest.fixture
def shot(tmp_path: Path) -> Callable[..., Path]:
    """shot(page, "tables"): a screenshot in tmp_path (and in $CONSOLE_SCREENSHOTS as console-<name>.png)."""
    target = os.environ.get("CONSOLE_SCREENSHOTS")

    def take(page: Page, name: str, *, full_page: bool = False) -> Path:
        path = tmp_path / f"console-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        assert path.stat().st_size > 1000
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(target) / path.name)
        return path

    return take
