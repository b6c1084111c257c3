"""HTTP services etrans calls: the external billing API, the external authentication service,
Sentry."""
