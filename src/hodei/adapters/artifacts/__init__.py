"""ArtifactStore adapters (see `hodei.ports.ArtifactStore`)."""
