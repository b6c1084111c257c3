"""Metrics: the port of :mod:`etrans.app.metrics` on prometheus-client, and the small HTTP
server that exposes them for the workers (``--metrics-bind``)."""
