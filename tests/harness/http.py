"""Serve an ASGI app with hypercorn's trio worker in a thread, for tests that need real HTTP
(keep-alive, streamed bodies, schemathesis) rather than Quart's in-process test client."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve


@contextlib.contextmanager
def served(app: Any = None, *,
           open_app: Callable[[], AbstractAsyncContextManager[Any]] | None = None
           ) -> Iterator[int]:
    """Serve ``app`` on a free loopback port until the block ends; yields the port.

    ``open_app``: the app is built inside the server's own Trio loop (``async with open_app()
    as app``), for apps whose clients belong to one loop (the Redis client)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    stop = threading.Event()

    async def main() -> None:
        async def trigger() -> None:
            await trio.to_thread.run_sync(stop.wait)

        if open_app is None:
            await serve(app, config, shutdown_trigger=trigger)
            return
        async with open_app() as opened:
            await serve(opened, config, shutdown_trigger=trigger)

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        yield port
    finally:
        stop.set()
        thread.join(timeout=10)
