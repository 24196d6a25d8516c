"""Secret values: encrypted with a key kept outside the database (a file in the data dir)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from hodei.domain.jobs import shown
from hodei.domain.masking import SHORT_SECRET_MESSAGE, secret_too_short
from hodei.errors import StoreError, ValidationError
from hodei.ports import SecretRecord, SecretStore

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_SECRET_BYTES = 64 * 1024


def load_or_create_key(path: Path) -> bytes:
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise ValidationError(
            f"invalid secret name {shown(name)}: use letters, digits and '_' (an env var name)"
        )
    return name


class SecretVault:
    def __init__(self, store: SecretStore, key: bytes) -> None:
        self._store = store
        self._fernet = Fernet(key)

    async def put(self, name: str, value: str) -> None:
        check_name(name)
        if not value:
            raise ValidationError("a secret must not be empty")
        if secret_too_short(value):
            raise ValidationError(SHORT_SECRET_MESSAGE)
        if len(value.encode()) > MAX_SECRET_BYTES:
            raise ValidationError(f"secret too large (> {MAX_SECRET_BYTES} bytes)")
        await self._store.put_secret(name, self._fernet.encrypt(value.encode()))

    async def values(self, names: tuple[str, ...]) -> dict[str, str]:
        """Decrypted values of `names`; a missing name is a ValidationError naming it only."""
        if not names:
            return {}
        found = await self._store.get_secrets(names)
        missing = [n for n in names if n not in found]
        if missing:
            raise ValidationError("unknown secret(s): " + ", ".join(missing))
        try:
            return {n: self._fernet.decrypt(found[n]).decode() for n in names}
        except InvalidToken:
            raise StoreError("a stored secret cannot be decrypted with this server's key") from None

    async def list(self) -> list[SecretRecord]:
        return await self._store.list_secrets()

    async def delete(self, name: str) -> None:
        await self._store.delete_secret(check_name(name))
