"""``GET /metrics`` on a HOST:PORT of its own (``--metrics-bind`` / ETRANS_METRICS_BIND).

A small Trio server rather than prometheus-client's ``start_http_server``: that one answers from
a thread of its own, where reading ``Pipeline.statistics()`` would race the Trio thread that
owns the pipeline's state; here the scrape runs on the Trio thread (one consistent reading, no
lock), and the server is one task of the process's nursery, cancelled with it at shutdown.  A
scrape is one short request per connection: HTTP/1.0 answers, the connection closed after each.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import trio

from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = get_logger(__name__)


_MAX_HEAD = 8192
_READ_SECONDS = 10.0


def split_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9101`` for IPv6) -> (host, port)."""
    host, _, port = bind.rpartition(":")
    return host.strip("[]"), int(port)


async def serve_metrics(bind: str, render: Callable[[], Awaitable[tuple[bytes, str]]], *,
                        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``render()`` on ``GET /metrics`` at ``bind`` until cancelled; ``task_status``
    gets the port (useful with port 0)."""
    host, port = split_bind(bind)
    listeners = await trio.open_tcp_listeners(port, host=host or None)
    bound = listeners[0].socket.getsockname()[1]
    log.info("metrics listening", bind=f"{host}:{bound}")
    task_status.started(bound)
    await trio.serve_listeners(partial(_answer, render), listeners)


async def _answer(render: Callable[[], Awaitable[tuple[bytes, str]]],
                  stream: trio.SocketStream) -> None:
    # serve_listeners lets a handler's exception end the server: none escapes this one.
    try:
        async with stream:
            with trio.move_on_after(_READ_SECONDS):
                head = await _read_head(stream)
                if head is None:
                    return
                status, body, content_type = await _route(head, render)
                await stream.send_all(
                    b"HTTP/1.0 " + status + b"\r\nContent-Type: " + content_type.encode()
                    + b"\r\nContent-Length: " + str(len(body)).encode()
                    + b"\r\nConnection: close\r\n\r\n" + body)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    except Exception as exc:
        log.error("metrics request failed", exc_info=exc)


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        if len(data) > _MAX_HEAD:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        data += chunk
    return data


async def _route(head: bytes, render: Callable[[], Awaitable[tuple[bytes, str]]]
                 ) -> tuple[bytes, bytes, str]:
    parts = head.split(b"\n", 1)[0].split()
    method, target = (parts[0], parts[1]) if len(parts) >= 2 else (b"", b"")
    if target.split(b"?", 1)[0] != b"/metrics":
        return b"404 Not Found", b"Not Found\n", "text/plain; charset=utf-8"
    if method not in (b"GET", b"HEAD"):
        return b"405 Method Not Allowed", b"Method Not Allowed\n", "text/plain; charset=utf-8"
    body, content_type = await render()
    return b"200 OK", b"" if method == b"HEAD" else body, content_type
