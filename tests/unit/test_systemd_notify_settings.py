"""NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID read as sd_notify(3) and sd_watchdog_enabled(3)
say (etrans.systemd_notify); sending is tested on real sockets in
tests/integration/test_systemd_notify.py."""

from __future__ import annotations

import pytest

from etrans.systemd_notify import SystemdNotify


def test_no_notify_socket_means_no_notifications_and_no_watchdog():
    notify = SystemdNotify.from_environment({"WATCHDOG_USEC": "30000000"}, pid=42)
    assert notify == SystemdNotify()
    assert not notify.enabled


@pytest.mark.parametrize(("value", "address"), [
    ("/run/systemd/notify", "/run/systemd/notify"),
    ("@/org/freedesktop/systemd1/notify/123", "\0/org/freedesktop/systemd1/notify/123"),
])
def test_socket_paths_and_the_abstract_namespace(value, address):
    assert SystemdNotify.from_environment({"NOTIFY_SOCKET": value}, pid=42).address == address


@pytest.mark.parametrize("value", ["vsock:2:1234", "relative/path", "@"])
def test_an_address_that_is_not_af_unix_disables_notifications(value):
    assert not SystemdNotify.from_environment({"NOTIFY_SOCKET": value}, pid=42).enabled


@pytest.mark.parametrize(("environ", "interval"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),  # WatchdogSec=30s: a ping every 15 s
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "42"}, 0.5),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "41"}, None),  # another process's
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_the_watchdog_pings_every_half_of_watchdog_usec_when_it_is_ours(environ, interval):
    notify = SystemdNotify.from_environment({"NOTIFY_SOCKET": "/run/notify", **environ}, pid=42)
    assert notify.watchdog_interval == interval
