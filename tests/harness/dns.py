"""A small authoritative DNS server on loopback, for tests of DNS verification.

It answers UDP and TCP queries on 127.0.0.1 (a free port, the same for both) from an in-memory
zone that tests fill with :meth:`LoopbackDnsServer.set_records`.  Messages are parsed and built
with dnspython (``dns.message.from_wire`` / ``make_response``), so the resolver under test talks
real DNS over real sockets: nothing is patched.

Answers: the records of the asked (name, type); NOERROR with an empty answer when the name holds
other types (NODATA); NXDOMAIN when the name holds nothing; responses larger than the client's
UDP payload are truncated (TC) and the resolver retries over TCP.

Fixture ``dns_server`` (session scope).  Tests use unique domain names (uuid) so they can share it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest


class LoopbackDnsServer:
    """Authoritative UDP+TCP DNS server on 127.0.0.1, zone data settable at run time."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._records: dict[tuple[dns.name.Name, int], list[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._udp, self._tcp = self._bind_same_port(host)
        self.port: int = self._udp.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self.queries = 0

    @staticmethod
    def _bind_same_port(host: str) -> tuple[socket.socket, socket.socket]:
        # UDP and TCP on the same port, as a real server; retry if the TCP side is taken.
        for _ in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((host, 0))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((host, udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            return udp, tcp
        raise RuntimeError("could not bind UDP and TCP on one free port")

    @property
    def address(self) -> str:
        """``host:port``, the form DNS_NAMESERVERS accepts."""
        return f"{self.host}:{self.port}"

    # -- zone data -------------------------------------------------------------------------

    def set_records(self, name: str, rdtype: str, values: Sequence[str]) -> None:
        """Replace the (name, type) records with ``values`` in zone-file text form.

        ``set_records("example.test", "MX", ["5 mx.example.net."])``;
        TXT values are given quoted: ``['"v=spf1 include:x ~all"']`` (long strings may be
        split into several quoted parts, as in a zone file).
        """
        key = (dns.name.from_text(name), dns.rdatatype.from_text(rdtype))
        with self._lock:
            if values:
                self._records[key] = list(values)
            else:
                self._records.pop(key, None)

    def clear(self, name: str) -> None:
        owner = dns.name.from_text(name)
        with self._lock:
            for key in [k for k in self._records if k[0] == owner]:
                del self._records[key]

    # -- serving ---------------------------------------------------------------------------

    def _answer(self, wire: bytes) -> dns.message.Message | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # a malformed packet is dropped, like a real server does
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        with self._lock:
            self.queries += 1
            values = self._records.get((question.name, question.rdtype))
            name_exists = any(owner == question.name for owner, _ in self._records)
        if values:
            rrset = dns.rrset.from_text_list(
                question.name, 60, dns.rdataclass.IN, question.rdtype, values
            )
            response.answer.append(rrset)
        elif not name_exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response

    def _serve_udp(self) -> None:
        self._udp.settimeout(0.2)
        while not self._stop.is_set():
            try:
                wire, peer = self._udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            response = self._answer(wire)
            if response is None:
                continue
            limit = 512
            if response.edns >= 0:
                limit = max(512, response.payload)
            try:
                data = response.to_wire(max_size=limit)
            except dns.exception.TooBig:
                response.answer.clear()
                response.flags |= dns.flags.TC
                data = response.to_wire()
            self._udp.sendto(data, peer)

    def _serve_tcp(self) -> None:
        self._tcp.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2.0)
                with contextlib.suppress(OSError, struct.error):
                    while True:
                        header = self._recv_exact(conn, 2)
                        if header is None:
                            break
                        (length,) = struct.unpack("!H", header)
                        wire = self._recv_exact(conn, length)
                        if wire is None:
                            break
                        response = self._answer(wire)
                        if response is None:
                            break
                        data = response.to_wire()
                        conn.sendall(struct.pack("!H", len(data)) + data)

    @staticmethod
    def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
        chunks = b""
        while len(chunks) < size:
            chunk = conn.recv(size - len(chunks))
            if not chunk:
                return None
            chunks += chunk
        return chunks

    def start(self) -> LoopbackDnsServer:
        for target in (self._serve_udp, self._serve_tcp):
            thread = threading.Thread(target=target, name=f"dns-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        self._udp.close()
        self._tcp.close()


@pytest.fixture(scope="session")
def dns_server() -> Iterator[LoopbackDnsServer]:
    """A running loopback DNS server; ``.address`` is "127.0.0.1:PORT"."""
    server = LoopbackDnsServer().start()
    try:
        yield server
    finally:
        server.stop()
