"""A real browser for the dashboard's tests: Debian's Chromium, driven by the playwright Python
package (the `test` extra) through `executable_path`. No browser is ever downloaded:
.ci/services/chromium.sh installs the system one and exports HODEI_TEST_CHROMIUM."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_CHROMIUM = "/usr/bin/chromium"


def chromium_path() -> tuple[str | None, str]:
    """The Chromium binary to use, or None and why there is none."""
    wanted = os.environ.get("HODEI_TEST_CHROMIUM") or DEFAULT_CHROMIUM
    found = wanted if os.access(wanted, os.X_OK) else shutil.which("chromium")
    if not found:
        return None, (
            f"no Chromium at {wanted} (run .ci/services/chromium.sh as root, or set "
            "HODEI_TEST_CHROMIUM)"
        )
    return found, ""


def launch_args() -> list[str]:
    # Chromium's sandbox needs user namespaces that root in a container does not get.
    args = ["--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    return args


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class Dashboard:
    """One browser context (its own cookies) on a server's dashboard, recording what the page
    does: every request it makes, every dialog it opens, console errors and page errors."""

    context: Any  # playwright BrowserContext
    page: Any  # playwright Page
    base: str
    shots: Path
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, browser: Any, base: str, shots: Path, **options: Any) -> Dashboard:
        context = browser.new_context(
            base_url=base,
            viewport=options.pop("viewport", {"width": 1280, "height": 900}),
            **options,
        )
        page = context.new_page()
        board = cls(context, page, base.rstrip("/"), shots)
        page.on("request", lambda request: board.requests.append(request.url))

        def on_dialog(dialog: Any) -> None:
            board.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on(
            "console",
            lambda message: (
                board.console_errors.append(message.text) if message.type == "error" else None
            ),
        )
        page.on("pageerror", lambda error: board.page_errors.append(str(error)))
        page.set_default_timeout(15_000)
        return board

    def close(self) -> None:
        self.context.close()

    # -- navigation -----------------------------------------------------------------------

    def goto(self, route: str = "") -> None:
        """Load the page at a hash route ("#/jobs"), as typing the address would."""
        self.page.goto(f"{self.base}/{route}")

    def route(self, route: str) -> None:
        """Go to a hash route inside the loaded page (no reload)."""
        self.page.evaluate("(r) => { location.hash = r; }", route)

    def sign_in(self, token: str) -> None:
        self.goto("")
        self.page.wait_for_selector("#token")
        self.page.fill("#token", token)
        self.page.click("form.signin button[type=submit]")
        self.page.wait_for_selector("header.topbar")

    def screenshot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    # -- what the page did ----------------------------------------------------------------

    def foreign_requests(self) -> list[str]:
        """Requests to anything but the dashboard's own origin (data: URLs aside)."""
        own = origin_of(self.base)
        return [u for u in self.requests if not u.startswith("data:") and origin_of(u) != own]

    def csp_violations(self) -> list[str]:
        return [text for text in self.console_errors if "Content Security Policy" in text]

    def eval(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    def wait_until(
        self, check: Callable[[], Any], timeout: float = 20, what: str = "condition"
    ) -> Any:
        """Poll `check` (Python, may read the page) until it returns something true."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                self.screenshot("timeout")
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.05)
