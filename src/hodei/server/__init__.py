"""Server modules: orchestrator, scheduler, worker sessions, log hub, gRPC and HTTP APIs."""

import os

# The server forks local agents; gRPC's fork handlers only add noise and risk there. Set before
# any submodule imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
