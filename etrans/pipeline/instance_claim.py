"""A host-wide claim on a static group member id (``group.instance.id``), held by the consumer.

Two consumers joining one group with the same ``group.instance.id`` are a configuration mistake
with bad consequences: Kafka fences the older one (a fatal error), and tansu lets both consume
the same partitions (measured: two processes, one id, 400 messages processed twice in 35 s).
The default id, ``<hostname>-<subcommand>``, makes that the mistake of a host running two workers
of one group without giving each its own ``KAFKA_GROUP_INSTANCE_ID``.  So before joining, a
consumer binds a Unix socket in Linux's abstract namespace named after (group, id): a second
process of the host that tries the same fails at start, with a message saying what to set.

Why an abstract socket: it is host-wide (per network namespace: containers have their own, and
their own hostname too), needs no writable directory (systemd units here have a private /tmp and
a read-only file system), and the kernel releases it when the process dies, even by ``kill -9``,
so a restart is never blocked by a stale claim.  Other systems: no claim (nothing is checked).
"""

from __future__ import annotations

import errno
import hashlib
import socket
import sys

from etrans.errors import ConfigError


class GroupInstanceIdTaken(ConfigError):
    """Another process of this host is a member of the group with the same instance id (the
    process exits with status 2, as for any invalid configuration)."""

    def __init__(self, message: str) -> None:
        super().__init__([message])


def claim_group_instance_id(group_id: str, instance_id: str) -> socket.socket | None:
    """Claim (group, id) for this process until the returned socket is closed (or the process
    ends); raise :class:`GroupInstanceIdTaken` when another process holds it."""
    if not sys.platform.startswith("linux"):
        return None
    digest = hashlib.sha256(f"{group_id}\n{instance_id}".encode()).hexdigest()[:40]
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(f"\0etrans-group-member-{digest}")
    except OSError as exc:
        claim.close()
        if exc.errno != errno.EADDRINUSE:
            return None  # no abstract namespace here: nothing to check against
        raise GroupInstanceIdTaken(
            f"another process on this host is already a member of consumer group {group_id} "
            f"with group.instance.id {instance_id}: give each process its own "
            "KAFKA_GROUP_INSTANCE_ID (or none)") from None
    return claim
