"""The Hodei agent: runs on a worker, dials out to the server over one HWP stream, runs jobs.

Modules: `session` (the stream, registration, dispatch), `runner` (one job in a PTY, in the
project's own terms: it imports no wire message), `wire` (assignments and results converted
to and from HWP messages), `outbox` (batching and acknowledgement of everything sent),
`metrics` (capacity and usage), `main` (the entry point the CLI calls). The agent never imports
hodei.server or hodei.adapters.
"""
