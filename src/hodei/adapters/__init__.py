"""Infrastructure adapters: implementations of the Protocols in `hodei.ports`."""
