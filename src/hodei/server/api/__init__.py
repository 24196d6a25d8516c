"""The server's edges: HTTP (REST, SSE) and gRPC, and views of domain objects as wire objects."""
