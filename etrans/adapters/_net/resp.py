"""RESP2, the Redis protocol: commands encoded as arrays of bulk strings, replies parsed from a
buffer, and the two errors of a Redis client (:mod:`etrans.adapters._net.redis_trio`)."""

from __future__ import annotations

from typing import Any

_CRLF = b"\r\n"


class RedisUnavailable(Exception):
    """The connection failed or did not answer in time; the command may or may not have run."""


class RedisReplyError(Exception):
    """Redis answered with an error reply (``-ERR ...``)."""


def _argument(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, int | float) and not isinstance(arg, bool):
        return str(arg).encode()
    raise TypeError(f"cannot send {type(arg).__name__} to Redis")


def encode_command(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        kind = type(arg)  # exact types first: the common case, several per message
        if kind is str:
            data = arg.encode()
        elif kind is bytes:
            data = arg
        elif kind is int:
            data = b"%d" % arg
        else:
            data = _argument(arg)
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


INCOMPLETE = object()


def parse_reply(buffer: bytearray | bytes, start: int) -> tuple[Any, int]:
    """One RESP2 reply from ``buffer[start:]``: (value, next position), or (INCOMPLETE, start).

    Error replies are returned as :class:`RedisReplyError` instances (not raised)."""
    end = buffer.find(_CRLF, start)
    if end < 0:
        return INCOMPLETE, start
    kind = buffer[start]
    body = bytes(buffer[start + 1:end])
    after = end + 2
    if kind == 43:  # '+'
        return body.decode(), after
    if kind == 45:  # '-'
        return RedisReplyError(body.decode("utf-8", "replace")), after
    if kind == 58:  # ':'
        return int(body), after
    if kind == 36:  # '$'
        length = int(body)
        if length < 0:
            return None, after
        if len(buffer) < after + length + 2:
            return INCOMPLETE, start
        return bytes(buffer[after:after + length]), after + length + 2
    if kind == 42:  # '*'
        count = int(body)
        if count < 0:
            return None, after
        items = []
        position = after
        for _ in range(count):
            item, position = parse_reply(buffer, position)
            if item is INCOMPLETE:
                return INCOMPLETE, start
            items.append(item)
        return items, position
    raise RedisUnavailable(f"unexpected byte {kind!r} in a Redis reply")
