"""The signal that starts a scheduling pass: whoever frees a slot, queues a job or connects a
worker kicks it; the scheduler's loop waits on it (there is no polling sleep)."""

from __future__ import annotations

import asyncio


class PassSignal:
    def __init__(self) -> None:
        self._dirty = asyncio.Event()

    def kick(self) -> None:
        self._dirty.set()

    async def wait(self) -> None:
        """Until the next kick (at once if one came since the last wait); then clear it."""
        await self._dirty.wait()
        self._dirty.clear()
