"""Our own protocol clients, written where measured to matter (each module's docstring has the
measurement); each passes a conformance suite against the real server (``tests/contract/net/``:
redis-server, PostgreSQL, aiosmtpd and Postfix's smtp-sink, loopback sockets beside
trio.SocketStream).  Private: only the adapters of their technology import them."""
