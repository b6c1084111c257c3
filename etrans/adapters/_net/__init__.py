"""Our own protocol clients, written where measured to matter (each module's docstring has the
measurement); each passes a conformance suite against the real server.  Private: only the adapters
of their technology import them."""
