"""The audit trail: who did what and when, written to the store as it happens.

Recording never fails the action it describes (that already happened): a store error is logged.
Entries never hold secret values, only names and ids; texts are cut to a bounded size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from hodei.domain.access import AuditEntry
from hodei.errors import HodeiError
from hodei.ports import AuditStore

log = logging.getLogger(__name__)

MAX_TEXT = 1000
# Refused requests are audited up to this many per minute: a flood of bad tokens must not
# flood the store.
MAX_DENIED_PER_MINUTE = 120


class Auditor:
    def __init__(self, store: AuditStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock
        self._denied_minute = 0
        self._denied = 0

    def now(self) -> float:
        return self._clock()

    async def record(self, actor: str, action: str, target: str = "", detail: str = "") -> None:
        await self.record_many(actor, action, (target,), detail)

    async def record_many(
        self, actor: str, action: str, targets: Sequence[str], detail: str = ""
    ) -> None:
        """One entry per target (e.g. each job of a batch submit), in one store write."""
        now = self._clock()
        entries = [
            AuditEntry(now, actor[:MAX_TEXT], action, target[:MAX_TEXT], detail[:MAX_TEXT])
            for target in targets
        ]
        try:
            await self.store.append_audit(*entries)
        except HodeiError as exc:
            what = targets[0] if len(targets) == 1 else f"{len(targets)} targets"
            log.error("audit entry %s %s %s not stored: %s", actor, action, what, exc)

    async def denied(self, actor: str, action: str, target: str, detail: str) -> None:
        minute = int(self._clock() // 60)
        if minute != self._denied_minute:
            self._denied_minute, self._denied = minute, 0
        self._denied += 1
        if self._denied <= MAX_DENIED_PER_MINUTE:
            await self.record(actor, action, target, detail)
