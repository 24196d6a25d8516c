"""Security building blocks shared by the server, the agent and the CLI (PKI, trust)."""

# The largest certificate request accepted (a PEM request for one P-256 key is under 1 KiB).
MAX_CSR = 16 * 1024
