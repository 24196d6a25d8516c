"""What the Docker e2e tests share: a server home whose containers are removed after the test
(a failed test must not leave any behind), and the containers a home's server labelled."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SERVER_LABEL = "io.hodei.server"


@pytest.fixture(name="home")
def docker_home(tmp_path: Path, engine: Any) -> Iterator[Path]:
    """A module that imports this has a `home` fixture (named so, not imported by name)."""
    path = tmp_path / "home"
    yield path
    for container in ours(engine, path):
        container.remove(force=True)


def ours(engine: Any, home: Path) -> list[Any]:
    """The containers labelled with this home's server id (every state, running or not)."""
    id_file = home / "server-id"
    if not id_file.exists():
        return []
    label = f"{SERVER_LABEL}={id_file.read_text().strip()}"
    return list(engine.containers.list(all=True, sparse=True, filters={"label": label}))
