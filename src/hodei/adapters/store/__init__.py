"""JobStore adapters (see `hodei.ports.JobStore`)."""
