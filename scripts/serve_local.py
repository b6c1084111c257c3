"""Run ``etrans serve`` on this machine with everything it talks to.

Uses config/etrans.local.env.  PostgreSQL and Redis: the local ones (or private instances when
none answers).  Kafka (127.0.0.1:9092) and MongoDB (127.0.0.1:27017): used when something listens
there, else tansu and secantus (from the test extras) are started on those ports and stopped on
exit.  Creates the ``etrans_local`` database and runs ``etrans db upgrade`` first.
Ctrl-C / SIGTERM stops etrans (graceful drain) and then the servers started here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import servers  # noqa: E402

ENV_FILE = ROOT / "config" / "etrans.local.env"
DATABASE = "etrans_local"


def main() -> int:
    started: list[servers.ManagedServer] = []
    try:
        overrides: dict[str, str] = {}
        postgres_url, postgres = servers.ensure_postgres()
        redis_url, redis_server = servers.ensure_redis()
        started += [s for s in (postgres, redis_server) if s is not None]
        with contextlib.suppress(Exception):  # already there
            servers.create_database(postgres_url, DATABASE)
        database_url = servers.database_url(postgres_url, DATABASE)
        overrides |= {"DB_URI": database_url, "USEND_DB_URI": database_url, "REDIS_URI": redis_url}
        if not servers.port_open("127.0.0.1", 9092):
            started.append(servers.TansuBroker(port=9092).start())
        if not servers.port_open("127.0.0.1", 27017):
            started.append(servers.SecantusServer(port=27017).start())
        env = {**os.environ, **overrides}
        etrans = [str(Path(sys.executable).with_name("etrans")), "--env-file", str(ENV_FILE)]
        subprocess.run([*etrans, "db", "upgrade"], env=env, check=True)
        print(f"etrans serve with {ENV_FILE.name} (Ctrl-C to stop)", flush=True)
        process = subprocess.Popen([*etrans, "serve", *sys.argv[1:]], env=env)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: process.send_signal(signum))
        return process.wait()
    except servers.ServiceUnavailable as exc:
        print(f"serve-local: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in reversed(started):
            server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
