"""Environment -> Settings: names and defaults of the spec, validation, secrets kept secret."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from etrans import settings
from etrans.errors import ConfigError
from etrans.settings import Secret, for_command, read_env_file, redact_uri

TOKEN_SECRET = "S" * 31 + "x"  # 32 bytes
TOKEN_IV = "I" * 15 + "y"  # 16 bytes

SENDMAIL_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "KAFKA_TOPIC": "sendmail",
    "KAFKA_GROUP_ID": "sendmail-group",
    "REDIS_HOST": "127.0.0.1",
    "REDIS_PORT": "6379",
    "REDIS_DB": "0",
    "SMTP_HOST": "smtp.example",
    "SMTP_PORT": "25",
    "TOKEN_SECRET": TOKEN_SECRET,
    "TOKEN_IV": TOKEN_IV,
}

FETCHLOG_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "LOG_TOPIC": "email-logs",
    "LOG_GROUP_ID": "fetchlog-group",
    "MONGODB_URI": "mongodb://127.0.0.1:27017",
    "MONGODB_DBNAME": "etrans",
    "MONGODB_COLLECTION": "email_logs",
}

SERVE_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "REDIS_URI": "redis://127.0.0.1:6379/0",
    "MONGODB_URI": "mongodb://127.0.0.1:27017",
    "MONGODB_DBNAME": "etrans",
    "MONGODB_COLLECTION": "email_logs",
    "TOKEN_SECRET": TOKEN_SECRET,
    "TOKEN_IV": TOKEN_IV,
    "DB_URI": "postgresql://reader:billing-pw-1@127.0.0.1:5432/billing",
    "USEND_DB_URI": "postgresql://usend:usend-pw-2@127.0.0.1:5432/usend",
}


def problems_of(command: str, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        for_command(command, env)
    return caught.value.problems


@pytest.mark.parametrize(
    ("command", "names"),
    [
        ("sendmail", ["KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "KAFKA_GROUP_ID", "REDIS_URI",
                      "REDIS_HOST", "TOKEN_SECRET", "TOKEN_IV", "SMTP_HOST", "SMTP_PORT"]),
        ("fetchlog", ["KAFKA_BOOTSTRAP_SERVERS", "LOG_TOPIC", "LOG_GROUP_ID", "MONGODB_URI",
                      "MONGODB_DBNAME", "MONGODB_COLLECTION"]),
        ("serve", ["KAFKA_BOOTSTRAP_SERVERS", "REDIS_URI", "MONGODB_URI", "MONGODB_DBNAME",
                   "MONGODB_COLLECTION", "TOKEN_SECRET", "TOKEN_IV", "DB_URI", "USEND_DB_URI"]),
        ("db", ["USEND_DB_URI"]),
    ],
)
def test_an_empty_environment_names_every_missing_variable(command, names):
    rendered = "\n".join(problems_of(command, {}))
    for name in names:
        assert name in rendered


def test_each_subcommand_asks_only_for_what_it_needs():
    sendmail = for_command("sendmail", SENDMAIL_ENV)
    assert not hasattr(sendmail, "mongo")
    assert not hasattr(sendmail, "databases")
    fetchlog = for_command("fetchlog", FETCHLOG_ENV)
    assert not hasattr(fetchlog, "tokens")
    assert not hasattr(fetchlog, "smtp")
    assert not hasattr(fetchlog, "redis")
    # USEND_DB_URI is optional for fetchlog (status updates), DB_URI is never needed.
    assert fetchlog.databases is not None
    assert fetchlog.databases.usend_uri is None


def test_spec_defaults():
    sendmail = for_command("sendmail", SENDMAIL_ENV)
    assert sendmail.drain_seconds == 25.0
    assert sendmail.sendmail is not None
    assert sendmail.sendmail.worker_pool_size == 10
    assert sendmail.smtp is not None
    assert sendmail.smtp.secure is False
    fetchlog = for_command("fetchlog", FETCHLOG_ENV)
    assert fetchlog.fetchlog is not None
    assert fetchlog.fetchlog.worker_pool_size == 10
    assert fetchlog.fetchlog.process_timeout_seconds == 10.0
    assert fetchlog.fetchlog.mongo_insert_timeout_seconds == 10.0
    assert fetchlog.fetchlog.store_event_types == ("Sender", "Queue", "Deferred", "Reject")
    assert fetchlog.fetchlog.skip_message_id_pattern == "bizfly.vn"
    serve = for_command("serve", SERVE_ENV)
    assert serve.kafka is not None
    assert serve.kafka.topic == "sendmail"
    assert serve.http is not None
    assert serve.http.bind == "0.0.0.0:8000"


def test_spec_variables_are_read():
    env = {**FETCHLOG_ENV, "LOG_WORKER_POOL_SIZE": "3", "LOG_PROCESS_TIMEOUT_SECONDS": "2.5",
           "LOG_MONGO_INSERT_TIMEOUT_SECONDS": "4", "STORE_EVENT_TYPES": "Sender, Reject",
           "SKIP_MESSAGE_ID_PATTERN": r"internal\.example$", "ETRANS_DRAIN_SECONDS": "5"}
    loaded = for_command("fetchlog", env)
    assert loaded.drain_seconds == 5.0
    assert loaded.fetchlog is not None
    assert loaded.fetchlog.worker_pool_size == 3
    assert loaded.fetchlog.process_timeout_seconds == 2.5
    assert loaded.fetchlog.mongo_insert_timeout_seconds == 4.0
    assert loaded.fetchlog.store_event_types == ("Sender", "Reject")
    assert loaded.fetchlog.skip_message_id_pattern == r"internal\.example$"
    sendmail = for_command("sendmail", {**SENDMAIL_ENV, "WORKER_POOL_SIZE": "7",
                                        "SMTP_SECURE": "true"})
    assert sendmail.sendmail is not None
    assert sendmail.sendmail.worker_pool_size == 7
    assert sendmail.smtp is not None
    assert sendmail.smtp.secure is True
    assert sendmail.kafka is not None
    assert (sendmail.kafka.topic, sendmail.kafka.group_id) == ("sendmail", "sendmail-group")


def test_redis_host_port_db_form_and_redis_uri_precedence():
    loaded = for_command("sendmail", {**SENDMAIL_ENV, "REDIS_PORT": "6380", "REDIS_DB": "3"})
    assert loaded.redis is not None
    assert loaded.redis.url.get() == "redis://127.0.0.1:6380/3"
    with_uri = for_command("sendmail", {**SENDMAIL_ENV, "REDIS_URI": "redis://other:1/2"})
    assert with_uri.redis is not None
    assert with_uri.redis.url.get() == "redis://other:1/2"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TOKEN_SECRET", "S" * 31, "TOKEN_SECRET must be exactly 32 bytes, got 31"),
        ("TOKEN_SECRET", "S" * 33, "TOKEN_SECRET must be exactly 32 bytes, got 33"),
        ("TOKEN_IV", "I" * 15, "TOKEN_IV must be exactly 16 bytes, got 15"),
        ("TOKEN_IV", "I" * 17, "TOKEN_IV must be exactly 16 bytes, got 17"),
        # Bytes, not characters: 16 two-byte characters are 32 bytes of key.
        ("TOKEN_IV", "é" * 8 + "x", "TOKEN_IV must be exactly 16 bytes, got 17"),
    ],
)
def test_token_lengths_are_checked_without_showing_the_value(variable, value, expected):
    problems = problems_of("sendmail", {**SENDMAIL_ENV, variable: value})
    assert problems == [expected]
    assert value not in "\n".join(problems)


def test_token_length_counts_bytes():
    loaded = for_command("sendmail", {**SENDMAIL_ENV, "TOKEN_SECRET": "é" * 16})
    assert loaded.tokens is not None
    assert len(loaded.tokens.secret.get().encode()) == 32


def test_invalid_values_are_all_listed():
    env = {**SENDMAIL_ENV, "SMTP_PORT": "seventy", "WORKER_POOL_SIZE": "0",
           "SMTP_SECURE": "maybe", "REDIS_PORT": "99999"}
    problems = "\n".join(problems_of("sendmail", env))
    for name in ("SMTP_PORT", "WORKER_POOL_SIZE", "SMTP_SECURE", "REDIS_PORT"):
        assert name in problems


def test_kafka_conf_variables_pass_through_to_librdkafka():
    env = {**SENDMAIL_ENV, "KAFKA_CONF_SESSION_TIMEOUT_MS": "6000",
           "KAFKA_CONF_HEARTBEAT_INTERVAL_MS": "2000", "KAFKA_CONF_GROUP_PROTOCOL": "classic",
           "KAFKA_CONF_FETCH_MAX_BYTES": "1048576"}
    loaded = for_command("sendmail", env)
    assert loaded.kafka is not None
    conf = loaded.kafka.librdkafka(**{"enable.auto.commit": False})
    assert conf["bootstrap.servers"] == "127.0.0.1:9092"
    assert conf["session.timeout.ms"] == "6000"
    assert conf["heartbeat.interval.ms"] == "2000"
    assert conf["group.protocol"] == "classic"
    assert conf["fetch.max.bytes"] == "1048576"
    assert conf["enable.auto.commit"] is False


def test_unknown_or_invalid_librdkafka_settings_are_config_errors():
    env = {**SENDMAIL_ENV, "KAFKA_CONF_NO_SUCH_PROPERTY": "1",
           "KAFKA_CONF_SESSION_TIMEOUT_MS": "soon"}
    problems = "\n".join(problems_of("sendmail", env))
    assert "KAFKA_CONF_NO_SUCH_PROPERTY" in problems
    assert "KAFKA_CONF_SESSION_TIMEOUT_MS" in problems


def test_sasl_settings_become_librdkafka_properties_and_stay_secret():
    env = {**SENDMAIL_ENV, "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "KAFKA_SASL_USERNAME": "etrans", "KAFKA_SASL_PASSWORD": "sasl-pw-3"}
    loaded = for_command("sendmail", env)
    assert loaded.kafka is not None
    conf = loaded.kafka.librdkafka()
    assert conf["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert conf["security.protocol"] == "SASL_PLAINTEXT"
    assert conf["sasl.username"] == "etrans"
    assert conf["sasl.password"] == "sasl-pw-3"
    assert "sasl-pw-3" not in repr(loaded)
    assert "sasl-pw-3" not in str(loaded)


def test_sasl_password_without_username_is_an_error_that_does_not_quote_it():
    problems = "\n".join(problems_of("sendmail", {**SENDMAIL_ENV,
                                                   "KAFKA_SASL_PASSWORD": "sasl-pw-4"}))
    assert "KAFKA_SASL_USERNAME" in problems
    assert "sasl-pw-4" not in problems


def test_repr_of_settings_shows_no_secret():
    env = {**SERVE_ENV, "REDIS_URI": "redis://:redis-pw-5@127.0.0.1:6379/0",
           "MONGODB_URI": "mongodb://etrans:mongo-pw-6@127.0.0.1:27017",
           "SENTRY_DSN": "https://publickey-7@sentry.example/1"}
    loaded = for_command("serve", env)
    text = repr(loaded)
    for secret in (TOKEN_SECRET, TOKEN_IV, "billing-pw-1", "usend-pw-2", "redis-pw-5",
                   "mongo-pw-6", "publickey-7"):
        assert secret not in text


def test_uri_problems_are_reported_with_the_password_redacted():
    env = {**SERVE_ENV, "DB_URI": "mysql://reader:billing-pw-8@db:3306/billing",
           "USEND_DB_URI": "postgresql://usend:usend-pw-9@db:notaport/usend",
           "MONGODB_URI": "http://u:mongo-pw-10@h", "REDIS_URI": "memcache://:redis-pw-11@h"}
    problems = "\n".join(problems_of("serve", env))
    for name in ("DB_URI", "USEND_DB_URI", "MONGODB_URI", "REDIS_URI"):
        assert name in problems
    for secret in ("billing-pw-8", "usend-pw-9", "mongo-pw-10", "redis-pw-11"):
        assert secret not in problems


def test_redact_uri():
    assert redact_uri("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_uri("postgresql://u:p@ss@h/db") == "postgresql://u:***@h/db"
    assert redact_uri("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_uri("postgresql://u@h/db") == "postgresql://u@h/db"
    assert "pw" not in redact_uri("postgresql://u:pw@h:bad/db")


def test_secret_never_shows_itself():
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret}"
    assert secret.get() == "hunter2"
    assert secret == Secret("hunter2")


def test_env_file_format(tmp_path: Path):
    path = tmp_path / "etrans.env"
    path.write_text(
        "# comment\n"
        "\n"
        "KAFKA_TOPIC=sendmail\n"
        "export KAFKA_GROUP_ID = group-1\n"
        "SMTP_HOST=\"smtp.example\"\n"
        "SKIP_MESSAGE_ID_PATTERN='bizfly.vn'\n"
        "EMPTY=\n"
    )
    assert read_env_file(path) == {
        "KAFKA_TOPIC": "sendmail",
        "KAFKA_GROUP_ID": "group-1",
        "SMTP_HOST": "smtp.example",
        "SKIP_MESSAGE_ID_PATTERN": "bizfly.vn",
        "EMPTY": "",
    }


def test_env_file_syntax_error_names_the_line(tmp_path: Path):
    path = tmp_path / "bad.env"
    path.write_text("KAFKA_TOPIC=sendmail\nthis is not an assignment\n")
    with pytest.raises(ConfigError) as caught:
        read_env_file(path)
    assert f"{path}:2" in caught.value.problems[0]


def test_every_subcommand_has_a_section_list():
    assert set(settings.COMMANDS) == {"serve", "sendmail", "fetchlog", "db", "dev", "webhooks",
                                     "dlq"}


def test_each_kafka_client_gets_only_the_pass_through_properties_it_understands():
    env = {**SENDMAIL_ENV, "KAFKA_CONF_SESSION_TIMEOUT_MS": "6000",
           "KAFKA_CONF_LINGER_MS": "5", "KAFKA_CONF_SOCKET_TIMEOUT_MS": "30000"}
    kafka = for_command("sendmail", env).kafka
    assert kafka is not None
    consumer = kafka.librdkafka()
    assert consumer["session.timeout.ms"] == "6000"
    assert "linger.ms" not in consumer
    producer = kafka.librdkafka("producer")
    assert producer["linger.ms"] == "5"
    assert "session.timeout.ms" not in producer
    admin = kafka.librdkafka("admin")
    assert "linger.ms" not in admin
    assert "session.timeout.ms" not in admin
    for conf in (consumer, producer, admin):  # properties of every client stay everywhere
        assert conf["socket.timeout.ms"] == "30000"
    with pytest.raises(ValueError, match="role"):
        kafka.librdkafka("stream")


def _pem(private) -> str:
    from cryptography.hazmat.primitives import serialization

    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_jwt_claim_settings_defaults_and_values():
    from cryptography.hazmat.primitives.asymmetric import ec

    http = for_command("serve", SERVE_ENV).http
    assert (http.jwt_audience, http.jwt_issuer, http.jwt_leeway_seconds) == ((), None, 5.0)
    pem = _pem(ec.generate_private_key(ec.SECP256R1()))
    http = for_command("serve", {**SERVE_ENV, "JWT_PUBLIC_KEY": pem.replace("\n", "\\n"),
                                 "JWT_AUDIENCE": "etrans-api, other", "JWT_ISSUER": "https://i/",
                                 "JWT_LEEWAY_SECONDS": "0"}).http
    # A PEM written on one line with \n escapes (an env file) is the same key.
    assert http.jwt_public_key.get().strip() == pem.strip()
    assert (http.jwt_audience, http.jwt_issuer, http.jwt_leeway_seconds) == \
        (("etrans-api", "other"), "https://i/", 0.0)


def test_jwt_public_key_and_leeway_are_validated_at_start():
    from cryptography.hazmat.primitives.asymmetric import ec, x25519

    for bad in ("not a key", _pem(x25519.X25519PrivateKey.generate()),
                _pem(ec.generate_private_key(ec.SECP224R1()))):
        problems = "\n".join(problems_of("serve", {**SERVE_ENV, "JWT_PUBLIC_KEY": bad}))
        assert "JWT_PUBLIC_KEY must be a PEM public key" in problems
    for bad in ("-1", "301", "soon"):
        problems = "\n".join(problems_of("serve", {**SERVE_ENV, "JWT_LEEWAY_SECONDS": bad}))
        assert "JWT_LEEWAY_SECONDS" in problems


def test_allowed_origins_are_normalised_and_validated():
    http = for_command("serve", SERVE_ENV).http
    assert http.allowed_origins == ()
    http = for_command("serve", {**SERVE_ENV, "ETRANS_ALLOWED_ORIGINS":
                                 " https://App.Example.test/ ,http://localhost:3000,"}).http
    assert http.allowed_origins == ("https://app.example.test", "http://localhost:3000")
    for bad in ("app.example.test", "ftp://x.test", "https://x.test/path", "https://u@x.test",
                "https://x.test:99999", "*", "https://"):
        problems = "\n".join(problems_of("serve", {**SERVE_ENV, "ETRANS_ALLOWED_ORIGINS": bad}))
        assert "ETRANS_ALLOWED_ORIGINS must be comma-separated origins" in problems, bad


def test_server_limits_defaults_and_validation():
    http = for_command("serve", SERVE_ENV).http
    assert http is not None
    assert (http.read_timeout_seconds, http.keep_alive_timeout_seconds,
            http.body_memory_bytes) == (30, 5.0, 256 * 1024 * 1024)
    http = for_command("serve", {**SERVE_ENV, "ETRANS_READ_TIMEOUT_SECONDS": "7",
                                 "ETRANS_KEEP_ALIVE_TIMEOUT_SECONDS": "2.5",
                                 "ETRANS_BODY_MEMORY_BYTES": str(64 * 1024 * 1024)}).http
    assert http is not None
    assert (http.read_timeout_seconds, http.keep_alive_timeout_seconds,
            http.body_memory_bytes) == (7, 2.5, 64 * 1024 * 1024)
    with pytest.raises(ConfigError) as error:
        for_command("serve", {**SERVE_ENV, "ETRANS_READ_TIMEOUT_SECONDS": "0",
                              "ETRANS_KEEP_ALIVE_TIMEOUT_SECONDS": "soon",
                              "ETRANS_BODY_MEMORY_BYTES": "1000"})
    text = str(error.value)
    for name in ("ETRANS_READ_TIMEOUT_SECONDS", "ETRANS_KEEP_ALIVE_TIMEOUT_SECONDS",
                 "ETRANS_BODY_MEMORY_BYTES"):
        assert name in text



def test_statement_timeout_defaults_to_five_seconds_zero_is_off_negative_refused():
    assert for_command("serve", SERVE_ENV).databases.statement_timeout_seconds == 5.0
    for value, seconds in (("0", 0.0), ("0.25", 0.25)):
        loaded = for_command("serve", {**SERVE_ENV, "DB_STATEMENT_TIMEOUT_SECONDS": value})
        assert loaded.databases.statement_timeout_seconds == seconds
    with pytest.raises(ConfigError, match="DB_STATEMENT_TIMEOUT_SECONDS"):
        for_command("serve", {**SERVE_ENV, "DB_STATEMENT_TIMEOUT_SECONDS": "-1"})

# -- static group membership (issue 12 item 9) -----------------------------------------------------

def test_group_instance_id_defaults_to_hostname_and_subcommand(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "mail-1.example")
    sendmail = for_command("sendmail", SENDMAIL_ENV)
    fetchlog = for_command("fetchlog", FETCHLOG_ENV)
    dev = for_command("dev", {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"})
    serve = for_command("serve", SERVE_ENV)
    assert sendmail.kafka is not None
    assert fetchlog.kafka is not None
    assert dev.kafka is not None
    assert serve.kafka is not None
    assert sendmail.kafka.group_instance_id == "mail-1.example-sendmail"
    assert fetchlog.kafka.group_instance_id == "mail-1.example-fetchlog"
    assert dev.kafka.group_instance_id == "mail-1.example-dev"  # + -sendmail / -fetchlog
    assert serve.kafka.group_instance_id is None  # no consumer


def test_group_instance_id_can_be_set_or_turned_off():
    def instance_id(**extra: str) -> str | None:
        loaded = for_command("sendmail", {**SENDMAIL_ENV, **extra})
        assert loaded.kafka is not None
        return loaded.kafka.group_instance_id

    assert instance_id(KAFKA_GROUP_INSTANCE_ID="host-a-sendmail-2") == "host-a-sendmail-2"
    assert instance_id(KAFKA_GROUP_INSTANCE_ID="none") is None
    assert instance_id(KAFKA_GROUP_INSTANCE_ID="NONE") is None
    # The librdkafka pass-through names the same property: one value, used the same way.
    assert instance_id(KAFKA_CONF_GROUP_INSTANCE_ID="from-conf") == "from-conf"
    assert instance_id(KAFKA_CONF_GROUP_INSTANCE_ID="from-conf",
                       KAFKA_GROUP_INSTANCE_ID="explicit") == "explicit"
    loaded = for_command("sendmail", {**SENDMAIL_ENV, "KAFKA_CONF_GROUP_INSTANCE_ID": "x"})
    assert loaded.kafka is not None
    assert "group.instance.id" not in loaded.kafka.librdkafka("consumer")
    [problem] = problems_of("sendmail", {**SENDMAIL_ENV, "KAFKA_GROUP_INSTANCE_ID": "a b/c"})
    assert problem.startswith("KAFKA_GROUP_INSTANCE_ID must be")


def test_pipeline_gives_the_instance_id_to_its_consumer():
    from etrans.pipeline import PipelineConfig

    static = PipelineConfig(topics=("t",), group_id="g", kafka={}, group_instance_id="h-sendmail")
    assert static.consumer_config()["group.instance.id"] == "h-sendmail"
    assert "group.instance.id" not in PipelineConfig(topics=("t",), group_id="g",
                                                     kafka={}).consumer_config()


def test_process_counts_default_to_one_and_are_read_per_subcommand():
    """ETRANS_SERVE_WORKERS for serve, ETRANS_PROCESSES for the workers (docs/operations.md,
    "Using every core"); each ignores the other's, and 0 or more than 64 is refused."""
    both = {"ETRANS_SERVE_WORKERS": "3", "ETRANS_PROCESSES": "2"}
    assert for_command("serve", SERVE_ENV).processes == 1
    assert for_command("sendmail", SENDMAIL_ENV).processes == 1
    assert for_command("serve", {**SERVE_ENV, **both}).processes == 3
    assert for_command("sendmail", {**SENDMAIL_ENV, **both}).processes == 2
    assert for_command("fetchlog", {**FETCHLOG_ENV, **both}).processes == 2
    assert any("ETRANS_PROCESSES" in p
               for p in problems_of("sendmail", {**SENDMAIL_ENV, "ETRANS_PROCESSES": "0"}))
    assert any("ETRANS_SERVE_WORKERS" in p
               for p in problems_of("serve", {**SERVE_ENV, "ETRANS_SERVE_WORKERS": "65"}))
