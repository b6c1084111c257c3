"""The webhook transport (:class:`etrans.app.webhook_delivery_ports.WebhookTransport`): one
httpcore connection pool (HTTP/1.1 on Trio) POSTing signed bodies to customers' endpoints.

* Timeouts: connecting, writing and reading each at most ``timeout`` seconds (WEBHOOKS_TIMEOUT_
  SECONDS); redirects are not followed (a 3xx is a failed attempt).
* Where it connects: the host is resolved at every attempt and every address must be public
  (:func:`etrans.domain.webhook_urls.is_public_ip`, the rule the API applies when a URL is
  saved) unless ``allow_private`` (WEBHOOKS_ALLOW_
  PRIVATE_URLS); the request then goes to the address that was checked - the URL's host stays
  in ``Host`` and in TLS (SNI and certificate verification) - so a name that resolves to a
  public address when the webhook was created and to 127.0.0.1 now (DNS rebinding) cannot
  reach the inside.
* Answers: the status code is what counts; at most 64 KiB of the body is read (so the
  connection can be kept), the rest is not waited for.
* The request goes straight to httpcore's keep-alive connection pool (reused per address): none
  of the httpx client layers webhooks have no use for.  No cookie is kept (a ``Set-Cookie`` of
  one endpoint is never sent back, to it or to another customer's endpoint on the same host),
  no redirect, no auth, no proxy from the environment (the attempt goes to the address that was
  checked).  An endpoint's URL is parsed once (:class:`_Target`, remembered per URL).
* A request's head and body leave in one write (:class:`_CoalescingStream`): httpcore writes
  them separately, two ``send`` calls per request, which were the largest item of the Trio
  thread's time in a profile of ``bench/webhooks.py``.

Measured with ``bench/webhooks.py``: the Trio thread's CPU for 3,000 events fell from 2.1 to
1.7 s (one run each) without the httpx client layer.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpcore
import httpx
import trio

from etrans.app.webhook_delivery_ports import PostResult
from etrans.domain.webhook_urls import is_public_ip

if TYPE_CHECKING:
    import ssl
    from collections.abc import Iterable, Mapping

MAX_ANSWER_BYTES = 64 * 1024
_TARGETS_KEPT = 10_000  # parsed URLs remembered (then forgotten all at once, refilled on demand)
_FAILED = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol,
           httpcore.ConnectionNotAvailable, httpx.InvalidURL, OSError)


class AddressRefused(Exception):
    """The URL's host is not one the worker may connect to."""


@dataclass(frozen=True, slots=True)
class _Target:
    """An endpoint's URL, parsed: where to connect and what to say."""

    scheme: bytes
    host: str  # as in the URL (resolved and checked at every attempt), the TLS server name
    port: int
    path: bytes  # the request target: path and query
    host_header: bytes

    @classmethod
    def parse(cls, url: str) -> _Target:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise AddressRefused(f"not an http(s) URL: {parsed.scheme}")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        host_header = parsed.netloc.rpartition(b"@")[2]
        return cls(parsed.raw_scheme, parsed.host, port, parsed.raw_path, host_header)


class _CoalescingStream(httpcore.AsyncNetworkStream):
    """Keeps what httpcore writes until it reads: the request's head and body go out in one
    ``send`` (HTTP/1.1 without pipelining always reads the answer after writing a request).
    A failed or timed-out write surfaces at that read, as httpcore's WriteError/WriteTimeout."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._pending: list[bytes] = []
        self._write_timeout: float | None = None

    # The ``timeout`` parameters are httpcore's interface (ASYNC109).
    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if buffer:
            self._pending.append(buffer)
            self._write_timeout = timeout

    async def _flush(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending = []
            await self._stream.write(data, self._write_timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        await self._flush()
        return await self._stream.read(max_bytes, timeout)

    async def aclose(self) -> None:
        self._pending = []
        await self._stream.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None,  # noqa: ASYNC109
                        ) -> httpcore.AsyncNetworkStream:
        await self._flush()
        return _CoalescingStream(await self._stream.start_tls(ssl_context, server_hostname,
                                                              timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _CoalescingBackend(httpcore.AsyncNetworkBackend):
    """httpcore's Trio backend, its streams wrapped in :class:`_CoalescingStream`."""

    def __init__(self) -> None:
        self._backend = httpcore.TrioBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        return _CoalescingStream(await self._backend.connect_tcp(
            host, port, timeout=timeout, local_address=local_address,
            socket_options=socket_options))

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[Any] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        return _CoalescingStream(await self._backend.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class WebhookClient:
    def __init__(self, *, timeout: float = 10.0, allow_private: bool = False,
                 max_connections: int = 200) -> None:
        self.allow_private = allow_private
        self._timeout = {"connect": timeout, "read": timeout, "write": timeout,
                         "pool": timeout}
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=max_connections,
            max_keepalive_connections=max_connections, network_backend=_CoalescingBackend())
        self._targets: dict[str, _Target] = {}

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult:
        started = time.monotonic()
        try:
            target = self._target(url)
            address = await self._checked_address(target.host, target.port)
            status = await self._send(target, address, body, headers)
        except AddressRefused as exc:
            return PostResult(None, str(exc), _elapsed_ms(started))
        except httpcore.TimeoutException as exc:
            return PostResult(None, f"timeout ({type(exc).__name__})", _elapsed_ms(started))
        except _FAILED as exc:
            return PostResult(None, f"{type(exc).__name__}: {exc}", _elapsed_ms(started))
        return PostResult(status, None, _elapsed_ms(started))

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            target = _Target.parse(url)
            if len(self._targets) >= _TARGETS_KEPT:
                self._targets.clear()
            self._targets[url] = target
        return target

    async def _send(self, target: _Target, address: str, body: bytes,
                    headers: Mapping[str, str]) -> int:
        extensions: dict[str, Any] = {"timeout": self._timeout}
        if target.scheme == b"https":
            extensions["sni_hostname"] = target.host
        request = httpcore.Request(
            b"POST", httpcore.URL(scheme=target.scheme, host=address.encode("ascii"),
                                  port=target.port, target=target.path),
            headers=[(b"host", target.host_header), (b"user-agent", b"etrans-webhooks"),
                     (b"accept", b"*/*"), (b"content-length", str(len(body)).encode()),
                     *((k.encode(), v.encode()) for k, v in headers.items())],
            content=body, extensions=extensions)
        response = await self._pool.handle_async_request(request)
        try:
            read = 0
            async for chunk in response.aiter_stream():
                read += len(chunk)
                if read > MAX_ANSWER_BYTES:
                    break
        finally:
            await response.aclose()
        return response.status

    async def _checked_address(self, host: str, port: int) -> str:
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise AddressRefused(f"cannot resolve {host}: {exc}") from None
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise AddressRefused(f"{host} has no address")
        if not self.allow_private:
            refused = [a for a in addresses if not is_public_ip(a)]
            if refused:
                raise AddressRefused(f"{host} resolves to a non-public address ({refused[0]})")
        return addresses[0]


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
