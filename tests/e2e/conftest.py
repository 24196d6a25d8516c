"""End-to-end fixtures (the harness itself is in harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
