"""Files a server keeps in its HODEI_HOME that say who it is."""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path


def server_instance_id(home: Path) -> str:
    """This server's id (HODEI_HOME/server-id, made once): the label its Docker containers
    carry, and its name among the servers sharing a PostgreSQL store."""
    path = home / "server-id"
    with contextlib.suppress(OSError):
        value = path.read_text().strip()
        if value:
            return value
    value = secrets.token_hex(8)
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    return value
