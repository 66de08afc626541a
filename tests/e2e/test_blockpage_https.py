"""The block page over HTTPS with the real web UI process (`filterd-webui`, as in production):
with `web.blockpage_https: ca` it makes the house CA, hands its certificate out at /ca.crt, and
answers a blocked name over TLS with the block page under a certificate for that name that
verifies against that CA alone; with `reset` the HTTPS port refuses connections at once.

Everything is real: the web UI subprocess, TCP/TLS sockets on loopback addresses (the web UI's
block address is 127.0.0.3, the tablet talks from 127.0.0.2, a parent's device from 127.0.0.1).
"""
from __future__ import annotations

import os
import socket
import ssl
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import wait_until
from standin import free_port
from test_webui_certificate import PinnedHTTPSConnection
from webui_fixtures import password_hash

from filterd.store import state

from .browser import WebUI

BLOCK_ADDRESS = "127.0.0.3"      # web.address: what blocked names resolve to; the HTTPS server listens there
TABLET, PARENT = "127.0.0.2", "127.0.0.1"
BLOCKED = "blocked.example"


def write_config(folder: Path, mode: str) -> tuple[Path, int, int]:
    """A config for the web UI alone (no daemon needed): the tablet's profile blocks BLOCKED."""
    folder.mkdir(parents=True, exist_ok=True)
    web_port, https_port = free_port(), free_port()
    config = {
        "timezone": "UTC", "data_dir": str(folder / "var"),
        "dns": {"listen": [f"127.0.0.1:{free_port()}"], "upstreams": ["udp://127.0.0.1:1"]},
        "web": {"listen": f"127.0.0.1:{web_port}", "address": BLOCK_ADDRESS, "hostnames": ["filter.home"],
                "blockpage_https": mode, "https_port": https_port},
        "profiles": {"kids": {"block": [BLOCKED]}, "adults": {}},
        "devices": [{"name": "tablet", "ip": TABLET, "profile": "kids"}],
        "default_profile": "adults",
    }
    path = folder / "filterd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    set_password(folder / "var")
    return path, web_port, https_port


def set_password(data_dir: Path) -> None:
    """The admin account, as after /setup (before it, every admin page leads to /setup)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    db = state.connect(state.db_path(data_dir))
    try:
        now = time.time()
        db.execute("INSERT INTO admin (id, password_hash, created, changed) VALUES (1, ?, ?, ?)",
                   (password_hash(), now, now))
    finally:
        db.close()


@pytest.fixture(scope="module")
def ca_webui(tmp_path_factory):
    """filterd-webui with blockpage_https: ca; (server, https_port, data_dir)."""
    folder = tmp_path_factory.mktemp("https-ca")
    config_path, web_port, https_port = write_config(folder, "ca")
    server = WebUI(config_path, web_port, folder).start()
    try:
        wait_until(lambda: _accepts(BLOCK_ADDRESS, https_port) or _exited(server), timeout=20,
                   message="the HTTPS block page to listen")
        assert server.process.poll() is None, server.log()
        yield server, https_port, folder / "var"
    finally:
        server.stop()


def _accepts(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
        return True
    except OSError:
        return False


def _exited(server: WebUI) -> bool:
    return server.process.poll() is not None


def download_ca(server: WebUI) -> bytes:
    """GET http://filter.home/ca.crt, as a parent's or child's device would (no login)."""
    request = urllib.request.Request(server.url + "/ca.crt", headers={"Host": "filter.home"})
    with urllib.request.urlopen(request, timeout=5) as response:   # nosec B310 - a loopback http:// URL
        assert response.headers.get_content_type() == "application/x-x509-ca-cert"
        return response.read()


def https_get(port: int, name: str, ca_pem: bytes, source: str, timeout: float = 5.0):
    """(status, body, TLS version) of GET / over HTTPS to BLOCK_ADDRESS, trusting `ca_pem` only."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    connection = PinnedHTTPSConnection(BLOCK_ADDRESS, port, name, context, source, timeout)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        return response.status, response.read().decode(), connection.sock.version()
    finally:
        connection.close()


def test_the_blocked_name_gets_the_block_page_over_https_with_a_certificate_from_the_house_ca(ca_webui):
    server, https_port, data_dir = ca_webui
    ca_pem = download_ca(server)
    assert b"BEGIN CERTIFICATE" in ca_pem and b"PRIVATE KEY" not in ca_pem
    status, body, version = https_get(https_port, BLOCKED, ca_pem, source=TABLET)
    assert status == 403 and BLOCKED in body
    assert version in ("TLSv1.2", "TLSv1.3")
    # The certificate is worked out for the device at the TLS peer's address: the parent's is not
    # blocked from the name, so the house CA does not vouch for it there (the filter's own certificate).
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(https_port, BLOCKED, ca_pem, source=PARENT)


def test_the_ca_key_stays_private_on_disk(ca_webui):
    server, https_port, data_dir = ca_webui
    key = data_dir / "ca" / "ca.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(data_dir / "ca").st_mode) == 0o700
    assert key.read_bytes() not in download_ca(server)


def test_a_client_that_stalls_the_handshake_does_not_stop_others(ca_webui):
    server, https_port, data_dir = ca_webui
    ca_pem = download_ca(server)
    silent = socket.create_connection((BLOCK_ADDRESS, https_port), timeout=5, source_address=(PARENT, 0))
    trickle = socket.create_connection((BLOCK_ADDRESS, https_port), timeout=5, source_address=(PARENT, 0))
    trickle.sendall(b"\x16\x03\x01\x02\x00\x01")       # the start of a ClientHello, then nothing
    try:
        # Both stalled connections hold the handshake for seconds (the server's timeout is 10 s);
        # meanwhile the tablet is served, well within its own 5 s socket timeout.
        for _ in range(3):
            status, body, _ = https_get(https_port, BLOCKED, ca_pem, source=TABLET)
            assert status == 403 and BLOCKED in body
    finally:
        silent.close()
        trickle.close()


def test_reset_mode_refuses_https_connections_at_once(tmp_path):
    config_path, web_port, https_port = write_config(tmp_path, "reset")
    server = WebUI(config_path, web_port, tmp_path).start()    # up: it answers HTTP
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((BLOCK_ADDRESS, https_port), timeout=5).close()
        assert not (tmp_path / "var" / "ca").exists()
        request = urllib.request.Request(server.url + "/ca.crt", headers={"Host": "filter.home"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)   # nosec B310 - a loopback http:// URL
        assert refused.value.code == 404
    finally:
        server.stop()


def test_the_web_ui_carries_on_when_the_https_port_is_taken(tmp_path):
    config_path, web_port, https_port = write_config(tmp_path, "ca")
    taken = socket.socket()
    taken.bind((BLOCK_ADDRESS, https_port))
    taken.listen(1)
    try:
        server = WebUI(config_path, web_port, tmp_path).start()
        try:
            wait_until(lambda: "cannot listen" in server.log(), timeout=10, message="the log line")
            assert server.process.poll() is None
            assert download_ca(server).startswith(b"-----BEGIN CERTIFICATE")
        finally:
            server.stop()
    finally:
        taken.close()
