"""The server, in wings: core/ (use cases and runtime), api/ (the HTTP and gRPC edges),
security/ (auth, OTPs, vault, agent PKI, mTLS, audit), and the composition root (wiring.py
builds, app.py runs). See docs/architecture.md."""

import os

# The server forks local agents; gRPC's fork handlers only add noise and risk there. Set before
# any submodule imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
