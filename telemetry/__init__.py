"""Metrics, structured logs and health checks shared by the worker and the HTTP API
(docs/architecture.md §9)."""
