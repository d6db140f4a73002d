"""What the agent emits: Prometheus metrics, the HTTP server, JSON events and their stacks,
NodeReports and the live table."""
