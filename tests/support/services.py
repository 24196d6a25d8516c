"""What a test does when a system service it needs is missing."""

from __future__ import annotations

import os

import pytest


def require_service(name: str, available: bool, why: str) -> None:
    """Skip (loudly) when a system service is missing; fail instead under
    HODEI_REQUIRE_SERVICES=1, which CI sets after installing and starting the services."""
    if available:
        return
    message = f"{name} is not available: {why}"
    if os.environ.get("HODEI_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (HODEI_REQUIRE_SERVICES=1)")
    pytest.skip(message)
