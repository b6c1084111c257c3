"""The harness fixtures give real, working servers (each one round-trips real data)."""

from __future__ import annotations

import uuid

import psycopg
import pymongo
import redis
from confluent_kafka import Consumer, Producer

from etrans import settings


def test_kafka_topic_round_trip(kafka_bootstrap, kafka_test_config, new_topic):
    topic = new_topic(partitions=2, prefix="harness")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    payload = uuid.uuid4().hex.encode()
    producer.produce(topic, payload, partition=1)
    assert producer.flush(15) == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"g-{topic}",
                         "auto.offset.reset": "earliest", **kafka_test_config})
    try:
        consumer.subscribe([topic])
        received = None
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                received = message
                break
        assert received is not None, "no message consumed within 60 s"
        assert received.value() == payload
        assert received.partition() == 1
    finally:
        consumer.close()


def test_mongo_round_trip(mongo_uri):
    client = pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
    try:
        collection = client[f"harness_{uuid.uuid4().hex[:8]}"]["docs"]
        collection.insert_one({"message_id": "m1", "event": "Sender"})
        assert collection.find_one({"message_id": "m1"})["event"] == "Sender"
    finally:
        client.close()


def test_redis_round_trip(redis_url):
    client = redis.Redis.from_url(redis_url)
    key = f"harness:{uuid.uuid4().hex}"
    try:
        client.hset(key, "user", "v")
        assert client.hget(key, "user") == b"v"
    finally:
        client.delete(key)
        client.close()


def test_fresh_database_is_empty_and_writable(fresh_database):
    url = fresh_database("harness")
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE t (id int)")
        conn.execute("INSERT INTO t VALUES (1)")
        assert conn.execute("SELECT id FROM t").fetchall() == [(1,)]


def test_etrans_env_is_valid_for_every_subcommand(etrans_env):
    env = etrans_env()
    for command in ("serve", "sendmail", "fetchlog", "db"):
        settings.for_command(command, env)
    assert "REDIS_URI" not in etrans_env(REDIS_URI=None)
    assert etrans_env(WORKER_POOL_SIZE=3)["WORKER_POOL_SIZE"] == "3"
    assert etrans_env()["KAFKA_TOPIC"] != env["KAFKA_TOPIC"]
