"""Conformance of FastSocketStream (etrans.adapters._net.fast_stream) with trio.SocketStream:
every test runs on both, over real loopback TCP sockets, and expects the same behaviour from
each: data intact in both directions (larger than the socket buffers, ``max_bytes`` honoured),
``b""`` at the peer's EOF, ``send_eof`` half-closing, ``ClosedResourceError`` after ``aclose``
(also for a task blocked in ``receive_some``), ``BrokenResourceError`` on a reset connection, and
``trio.SSLStream`` on top.  ``receive_reply`` (ours only) waits for data that is not there yet.
"""

from __future__ import annotations

import socket
import ssl
import struct
from typing import TYPE_CHECKING, Any

import pytest
import trio

from etrans.adapters._net.fast_stream import FastSocketStream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

BIG = bytes(range(256)) * (40 * 1024)  # 10 MB: many times the socket buffers


async def _open_trio(host: str, port: int) -> trio.abc.HalfCloseableStream:
    return await trio.open_tcp_stream(host, port)


@pytest.fixture(params=["FastSocketStream", "trio.SocketStream"])
def open_stream(request: pytest.FixtureRequest) -> Any:
    return FastSocketStream.open_tcp if request.param == "FastSocketStream" else _open_trio


@pytest.fixture
async def pair(open_stream: Any) -> AsyncIterator[tuple[Any, trio.SocketStream]]:
    """(client stream under test, the server's end as a trio.SocketStream)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        client = await open_stream("127.0.0.1", port)
        server = await listeners[0].accept()
        nursery.cancel_scope.cancel()
    try:
        yield client, server
    finally:
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(server)
        await listeners[0].aclose()


async def _receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some()
        assert chunk, "EOF before all the data arrived"
        data += chunk
    return bytes(data)


async def test_data_both_ways_larger_than_the_buffers(pair: Any) -> None:
    client, server = pair
    got: dict[str, bytes] = {}

    async def server_side() -> None:
        got["server"] = await _receive_exactly(server, len(BIG))
        await server.send_all(BIG[::-1])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_side)
        await client.send_all(BIG)
        got["client"] = await _receive_exactly(client, len(BIG))
    assert got == {"server": BIG, "client": BIG[::-1]}
    await server.send_all(b"0123456789")
    await trio.sleep(0.05)
    assert await client.receive_some(4) == b"0123"  # max_bytes is a maximum
    assert await client.receive_some() == b"456789"


async def test_eof_from_the_peer_and_send_eof(pair: Any) -> None:
    client, server = pair
    await client.send_all(b"request")
    await client.send_eof()  # half-close: we can still read the answer
    assert await _receive_exactly(server, 7) == b"request"
    assert await server.receive_some() == b""
    await server.send_all(b"answer")
    await server.aclose()
    assert await _receive_exactly(client, 6) == b"answer"
    assert await client.receive_some() == b""
    assert await client.receive_some() == b""  # and again


async def test_a_closed_stream_raises_closed_resource_error(pair: Any) -> None:
    client, _ = pair
    await client.aclose()
    for call in (client.send_all(b"x"), client.receive_some(), client.send_eof()):
        with pytest.raises(trio.ClosedResourceError):
            await call
    await client.aclose()  # closing twice is fine


async def test_closing_wakes_a_task_blocked_in_receive(pair: Any) -> None:
    client, _ = pair
    outcome: list[BaseException] = []

    async def blocked() -> None:
        try:
            await client.receive_some()
        except trio.ClosedResourceError as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked)
        await trio.sleep(0.05)
        await client.aclose()
    assert len(outcome) == 1


async def test_a_reset_connection_is_broken(pair: Any) -> None:
    client, server = pair
    # Close with SO_LINGER 0: the peer gets a RST instead of a FIN.
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await server.aclose()
    await trio.sleep(0.05)
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"x" * 65536)


async def test_tls_on_top(open_stream: Any, smtp_certificates: Any) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    server_context = smtp_certificates.server_context()
    client_context = ssl.create_default_context(cafile=smtp_certificates.ca_file)

    async def echo_once(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        raw = await listeners[0].accept()
        async with trio.SSLStream(raw, server_context, server_side=True) as tls:
            await tls.send_all(await _receive_exactly(tls, len(BIG)))

    async with trio.open_nursery() as nursery:
        await nursery.start(echo_once)
        raw = await open_stream("127.0.0.1", port)
        tls = trio.SSLStream(raw, client_context, server_hostname="127.0.0.1")
        async with tls, trio.open_nursery() as inner:
            inner.start_soon(tls.send_all, BIG)
            assert await _receive_exactly(tls, len(BIG)) == BIG
    await listeners[0].aclose()


async def test_receive_reply_waits_for_the_reply() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await FastSocketStream.open_tcp("127.0.0.1", port)
    server = await listeners[0].accept()
    try:
        async with trio.open_nursery() as nursery:

            async def answer_later() -> None:
                assert await server.receive_some() == b"PING\r\n"
                await trio.sleep(0.1)
                await server.send_all(b"+PONG\r\n")

            nursery.start_soon(answer_later)
            await client.send_all(b"PING\r\n")
            with trio.fail_after(5):
                assert await client.receive_reply() == b"+PONG\r\n"
        await server.aclose()
        assert await client.receive_reply() == b""  # EOF
    finally:
        await client.aclose()
        await listeners[0].aclose()
