"""The server's core: job use cases and runtime (no wire types, no edge imports)."""
