"""Pure domain logic: no I/O, no asyncio, unit-tested directly."""
