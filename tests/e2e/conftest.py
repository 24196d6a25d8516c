"""End-to-end fixtures (the harness itself is in harness.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import RunningServer, start_server, stop_server


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[type[object]]:
    started: list[RunningServer] = []

    class Factory:
        @staticmethod
        def start(*extra: str, home: Path | None = None) -> RunningServer:
            s = start_server(home or tmp_path / "home", *extra)
            started.append(s)
            return s

    yield Factory
    for s in started:
        stop_server(s)


@pytest.fixture
def server(server_factory: type) -> RunningServer:
    s: RunningServer = server_factory.start("--max-workers", "3", "--worker-idle", "20s")
    return s


# -- the dashboard's browser tests (tests/e2e/browser.py) ----------------------------------
# Only the tests that ask for these fixtures import playwright or look for Chromium: every other
# test runs the same with neither installed.


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium (the system's, HODEI_TEST_CHROMIUM) driven by playwright: skips
    with the reason when there is none, fails instead under HODEI_REQUIRE_SERVICES=1. One per
    module: playwright's driver and event loop are gone before the next module's tests."""
    from browser import chromium_path, launch_args

    path, why = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        path, why = None, f"the playwright package is missing ({exc}; pip install -e '.[test]')"
    if path is None:
        if os.environ.get("HODEI_REQUIRE_SERVICES") == "1":
            pytest.fail(f"chromium is not available: {why} (HODEI_REQUIRE_SERVICES=1)")
        pytest.skip(f"chromium is not available: {why}")
    driver = sync_playwright().start()
    try:
        browser = driver.chromium.launch(executable_path=path, headless=True, args=launch_args())
    except Exception as exc:
        driver.stop()
        if os.environ.get("HODEI_REQUIRE_SERVICES") == "1":
            pytest.fail(f"chromium at {path} does not start: {exc}")
        pytest.skip(f"chromium at {path} does not start: {exc}")
    yield browser
    browser.close()
    driver.stop()


@pytest.fixture
def dashboard(chromium: Any, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """dashboard(server, **context_options) -> a Dashboard (its own browser context) on that
    server's page; screenshots go to the test's tmp dir (shots/)."""
    from browser import Dashboard

    opened: list[Dashboard] = []

    def open_board(server: RunningServer, **options: Any) -> Dashboard:
        board = Dashboard.open(chromium, server.url, tmp_path / "shots", **options)
        opened.append(board)
        return board

    yield open_board
    for board in opened:
        board.close()
