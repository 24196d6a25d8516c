"""Security building blocks shared by the server, the agent and the CLI (PKI, trust)."""
