"""sd_notify: the datagrams systemd reads, sent over real AF_UNIX sockets, and the real daemon's
READY=1 (only once it answers DNS) and watchdog pings."""
from __future__ import annotations

import os
import socket
import sqlite3
import time

import pytest

from conftest import Daemon, free_port, wait_until
from filterd.dns import sdnotify


class NotifyListener:
    """A stand-in for systemd's notification socket: collects every datagram it receives."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def poll(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def abstract_name():
    return f"filterd-test-{os.getpid()}-{time.monotonic_ns()}"


def test_socket_address_reads_a_path_an_abstract_name_and_nothing():
    assert sdnotify.socket_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert sdnotify.socket_address({"NOTIFY_SOCKET": "@abc"}) == b"\0abc"
    assert sdnotify.socket_address({}) is None
    assert sdnotify.socket_address({"NOTIFY_SOCKET": "vsock:2:1234"}) is None


def test_notify_sends_one_datagram_to_a_socket_path(tmp_path):
    listener = NotifyListener(str(tmp_path / "notify"))
    try:
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert wait_until(listener.poll, timeout=2, message="a datagram") == ["READY=1"]
    finally:
        listener.close()


def test_notify_sends_to_an_abstract_socket(abstract_name):
    listener = NotifyListener(b"\0" + abstract_name.encode())
    try:
        assert sdnotify.notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + abstract_name})
        assert wait_until(listener.poll, timeout=2, message="a datagram") == ["WATCHDOG=1"]
    finally:
        listener.close()


def test_notify_without_systemd_sends_nothing_and_says_so(tmp_path):
    assert sdnotify.notify("READY=1", {}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")}) is False


def test_watchdog_pings_at_half_the_interval_for_the_watched_process_only():
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "20000000"}, pids=(42,)) == 10.0
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "42"}, pids=(42, 1)) == 10.0
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "7"}, pids=(42, 1)) is None
    assert sdnotify.watchdog_interval_s({}, pids=(42,)) is None
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "0"}, pids=(42,)) is None
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "soon"}, pids=(42,)) is None


def test_probe_of_a_wildcard_listener_goes_to_loopback():
    assert sdnotify.probe_address("0.0.0.0") == "127.0.0.1"  # nosec B104
    assert sdnotify.probe_address("::") == "::1"
    assert sdnotify.probe_address("192.168.1.2") == "192.168.1.2"


@pytest.mark.parametrize("workers", [1, 2])
def test_daemon_says_ready_once_it_answers_and_keeps_pinging_the_watchdog(
        tmp_path, standin, monkeypatch, abstract_name, workers):
    listener = NotifyListener(b"\0" + abstract_name.encode())
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + abstract_name)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")   # a ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    daemon = Daemon(tmp_path / "d", {"upstreams": [f"udp://127.0.0.1:{standin.port}"], "workers": workers},
                    port=free_port())
    try:
        daemon.launch()
        ready = wait_until(lambda: [m for m in listener.poll() if m.startswith("READY=1")], timeout=15,
                           message="READY=1 from the daemon")
        assert f"STATUS=answering DNS on 127.0.0.1:{daemon.port}" in ready[0]
        # Ready means answering: the first query after READY=1 is answered, no waiting.
        reply = daemon.ask("sdnotify-ready.example", timeout=2)
        assert reply.rr, daemon.stderr()
        wait_until(lambda: listener.poll().count("WATCHDOG=1") >= 3, timeout=10, message="watchdog pings")
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
        listener.close()
    assert [m for m in listener.messages if m.startswith("READY=1")] == ready[:1], "READY=1 sent once"
    # The readiness probe is refused before the policy: it never shows up in the query log.
    db = sqlite3.connect(tmp_path / "d" / "var" / "state.db")
    names = {row[0] for row in db.execute("SELECT name FROM queries")}
    db.close()
    assert "sdnotify-ready.example" in names and not any("ready.filterd" in n for n in names if n)

