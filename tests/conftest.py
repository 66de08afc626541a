"""Shared fixtures: stand-in upstreams, the real daemon as a subprocess, and a small DNS client.

Everything here makes real things on 127.0.0.1: stand-in upstream servers (`standin.py`), a
temporary config file, the daemon started with `python -m filterd run`, waited for by polling
until it answers and stopped with SIGTERM. Tests wait by polling with a deadline, never by
sleeping a fixed time.
"""
from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import http.server
from pathlib import Path
from typing import Callable

import pytest
import yaml
from dnslib import EDNS0, DNSRecord

sys.path.insert(0, str(Path(__file__).parent))

from standin import StandIn, free_port, make_certificate  # noqa: E402

DAEMON_START_TIMEOUT_S = 15.0


# ---------------------------------------------------------------- waiting


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02,
               message: str = "condition") -> object:
    """Poll `predicate` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def wait_seconds(seconds: float) -> None:
    """Let at least `seconds` pass on the monotonic clock (for TTLs that must run down)."""
    start = time.monotonic()
    wait_until(lambda: time.monotonic() - start >= seconds, timeout=seconds + 5,
               message=f"{seconds} s to pass")


def count_todays_use(conn, limit, subject: tuple[str, str], minutes: int, timezone: str) -> None:
    """`minutes` of use of a daily `limit` today by `subject`, counted as the daemon counts them
    (one query a minute) and merged into the state DB. The last `minutes` before now, or from
    midnight just after it (then some lie ahead of now, on the same day)."""
    import datetime
    from zoneinfo import ZoneInfo

    from filterd.family import limits

    now = datetime.datetime.now(ZoneInfo(timezone))
    start = max(now - datetime.timedelta(minutes=minutes), now.replace(hour=0, minute=0, second=0, microsecond=0))
    counter = limits.UsageCounter(gap_s=60)
    for minute in range(minutes):
        counter.count([(limit, subject)], start + datetime.timedelta(minutes=minute))
    counter.flush(conn)


# ---------------------------------------------------------------- a small DNS client


def exchange(packet: bytes, port: int, tcp: bool = False, source: str = "127.0.0.1",
             timeout: float = 3.0) -> bytes | None:
    """Send one raw message to 127.0.0.1:port; the reply with the same ID, or None on timeout."""
    if tcp:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                      source_address=(source, 0)) as sock:
            sock.sendall(struct.pack(">H", len(packet)) + packet)
            try:
                return read_tcp_message(sock)
            except (socket.timeout, ConnectionError):
                return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.sendto(packet, ("127.0.0.1", port))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            try:
                data = sock.recv(65535)
            except socket.timeout:
                return None
            if data[:2] == packet[:2]:
                return data


def read_tcp_message(sock: socket.socket) -> bytes | None:
    """One length-prefixed DNS message from a TCP socket; None when the peer closed."""
    head = recv_exact(sock, 2)
    if head is None:
        return None
    return recv_exact(sock, struct.unpack(">H", head)[0])


def recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def make_query(name: str, qtype: str = "A", edns: int | None = None, qclass: str = "IN",
               edns_version: int = 0, dnssec_ok: bool = False) -> DNSRecord:
    query = DNSRecord.question(name, qtype, qclass)
    if edns is not None:
        query.add_ar(EDNS0(udp_len=edns, version=edns_version, flags="do" if dnssec_ok else ""))
    return query


def ask(name: str, qtype: str = "A", port: int = 0, tcp: bool = False, edns: int | None = None,
        source: str = "127.0.0.1", qclass: str = "IN", edns_version: int = 0,
        timeout: float = 3.0) -> DNSRecord:
    """Ask the daemon on 127.0.0.1:port and return the parsed reply; fail on no answer."""
    packet = make_query(name, qtype, edns, qclass, edns_version).pack()
    reply = exchange(packet, port, tcp, source, timeout)
    if reply is None:
        raise AssertionError(f"no answer for {name} {qtype} from 127.0.0.1:{port} "
                             f"({'TCP' if tcp else 'UDP'}, source {source})")
    return DNSRecord.parse(reply)


# ---------------------------------------------------------------- the daemon as a process


class Daemon:
    """`python -m filterd run` on a free port with a config file written from a dict."""

    def __init__(self, folder: Path, dns: dict, extra: dict | None = None, port: int | None = None):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config_path = folder / "filterd.yaml"
        self.stderr_path = folder / "stderr.log"
        self.config = self.config_for(dns, extra)
        self.write_config(self.config)
        self.process: subprocess.Popen | None = None
        self.env: dict[str, str] | None = None     # the process's environment (None: this one's)

    def config_for(self, dns: dict, extra: dict | None = None) -> dict:
        """A full config: these `dns` settings on top of the test defaults (our port, no limit)."""
        settings = {"listen": [f"127.0.0.1:{self.port}"], "workers": 1, "rate_limit": 0,
                    "upstream_timeout": 1.0}
        settings.update(dns)
        return {"timezone": "UTC", "data_dir": str(self.folder / "var"), "dns": settings, **(extra or {})}

    def write_config(self, config: dict | str) -> None:
        """Replace the config file atomically (a new inode), as an editor or a deploy would."""
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        temporary = self.config_path.with_suffix(".tmp")
        temporary.write_text(text)
        os.replace(temporary, self.config_path)

    def launch(self) -> "Daemon":
        """Start the process without waiting for it to answer."""
        self.stderr_file = open(self.stderr_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "filterd", "--log-level", "debug", "run", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=self.stderr_file, stderr=self.stderr_file,
            cwd=self.folder, start_new_session=True, env=self.env)
        return self

    def start(self) -> "Daemon":
        """Start the process and poll until it answers."""
        self.launch()
        wait_until(self._ready, timeout=DAEMON_START_TIMEOUT_S, interval=0.02, message="the daemon to answer")
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the daemon exited with {self.process.returncode}:\n{self.stderr()}")
        # The TCP listener opens after the UDP one; until then a connection is refused at once.
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        # ANY is answered locally (RFC 8482): no upstream question, nothing cached.
        probe = make_query("ready.probe.invalid", "ANY").pack()
        return exchange(probe, self.port, timeout=0.5) is not None

    def ask(self, name: str, qtype: str = "A", **options) -> DNSRecord:
        return ask(name, qtype, self.port, **options)

    def exchange(self, packet: bytes, **options) -> bytes | None:
        return exchange(packet, self.port, **options)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait for the process to exit; its exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.stderr_file.close()

    def stop(self) -> None:
        """Teardown: SIGTERM, and SIGKILL the whole process group if it does not go."""
        if self.process is None:
            return
        try:
            self.terminate()
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class DaemonFactory:
    """Starts daemons in a temporary folder; stops every one it started at teardown."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.started: list[Daemon] = []

    def __call__(self, upstreams: list[str], extra: dict | None = None, start: bool = True,
                 port: int | None = None, **dns) -> Daemon:
        """A daemon forwarding to `upstreams` with these `dns` settings; started unless start=False."""
        daemon = Daemon(self.folder / f"daemon{len(self.started)}", {"upstreams": upstreams, **dns}, extra, port)
        self.started.append(daemon)
        return daemon.start() if start else daemon

    def stop_all(self) -> None:
        for daemon in self.started:
            daemon.stop()


class StandInFactory:
    """Fresh stand-in upstreams, stopped at teardown."""

    def __init__(self):
        self.started: list[StandIn] = []

    def __call__(self, mode: str = "answer", ttl: int = 300, **start_options) -> tuple[StandIn, int]:
        server = StandIn(ttl=ttl)
        server.mode = mode
        port = server.start(**start_options)
        self.started.append(server)
        return server, port

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


@pytest.fixture(scope="session")
def standin() -> StandIn:
    """One stand-in upstream (UDP and TCP) shared by the session; tests use names of their own.

    `standin.port` is its port. A test that changes its mode or delay must restore them.
    """
    server = StandIn()
    server.port = server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_standins() -> StandInFactory:
    factory = StandInFactory()
    yield factory
    factory.stop_all()


@pytest.fixture
def standins() -> StandInFactory:
    factory = StandInFactory()
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def module_daemons(tmp_path_factory) -> DaemonFactory:
    """Daemons that live for the whole test module (one per config, not per test)."""
    factory = DaemonFactory(tmp_path_factory.mktemp("daemons"))
    yield factory
    factory.stop_all()


@pytest.fixture
def daemons(tmp_path) -> DaemonFactory:
    """Daemons for one test only."""
    factory = DaemonFactory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def certificates(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(ca, cert, key) PEM paths: a test CA and a certificate for localhost and 127.0.0.1."""
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (UDP gets ICMP unreachable, TCP a reset)."""
    return free_port()


class BlackHole:
    """A UDP socket that receives queries and never answers; counts what it got."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.received = 0

    def count(self) -> int:
        """How many datagrams arrived so far."""
        while True:
            try:
                self.sock.recv(65535)
            except BlockingIOError:
                return self.received
            self.received += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def black_hole() -> BlackHole:
    hole = BlackHole()
    yield hole
    hole.close()


# ---------------------------------------------------------------- an HTTP receiver (webhooks, ntfy)


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread that records every POST (path, headers, body)."""

    def __init__(self, status: int = 200):
        self.status = status
        self.received: list[tuple[str, dict, bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append((self.path, dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


# ---------------------------------------------------------------- fixture configs


POLICY_FIXTURES = Path(__file__).parent / "fixtures" / "policy"


def write_fixture_config(template: str, folder: Path) -> Path:
    """A config from tests/fixtures/policy with its list paths and data_dir made absolute."""
    text = (POLICY_FIXTURES / template).read_text().replace("@FIXTURES@", str(POLICY_FIXTURES)) \
        .replace("@DATA_DIR@", str(folder / "var"))
    path = folder / template
    path.write_text(text)
    return path
