"""LogStore adapters (see `hodei.ports.LogStore`)."""
