"""Kafka (confluent-kafka): the producer and the admin calls.  Consumers live in
:mod:`etrans.pipeline` (one thread each)."""
