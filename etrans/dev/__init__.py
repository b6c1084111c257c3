"""``etrans dev``: the whole system in one process, on embedded stand-ins for its services.

Each module implements the same ports (:mod:`etrans.app.ports`, the pipeline's message source)
as the production adapter it replaces, so the API, the sendmail worker and fetchlog run their
ordinary code on top of them:

- :mod:`.sqlite_db` - the USEND DB (and the local billing tables) on SQLite, same models;
- :mod:`.topics` - partitioned, persistent in-process topics (SQLite), their publisher and the
  pipeline's message source (same offset semantics as a Kafka consumer group);
- :mod:`.kv` - credentials (hash ``auth``), quotas, idempotency keys, API-key cache and delivery
  marks (the Redis adapters' semantics) in one local store;
- :mod:`.log_store` - the delivery-log documents (fetchlog's writer, GET /logs's reader) on SQLite;
- :mod:`.smtp_sink` - an SMTP server that keeps each message as an ``.eml`` file and emits the
  delivery-log events an SMTP server plus Filebeat would;
- :mod:`.demo` - the demo user, domain and API key created at start.

The wiring (which stand-in replaces which real service) is :mod:`etrans.bootstrap.stores`,
used by :mod:`etrans.bootstrap.dev`.
"""
