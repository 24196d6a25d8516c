"""Server modules: orchestrator, scheduler, worker sessions, log hub, gRPC and HTTP APIs."""
