"""The REST API and the SSE log stream: one router module per resource."""
