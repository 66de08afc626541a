"""The HTTPS block page in the web UI (webui/certificate.py, webui/https_server.py): the parents'
certificate page, the open downloads of the CA certificate, the trust check, and the HTTPS
server itself over real TLS sockets on 127.0.0.1 (in this process; tests/e2e has the real
`filterd-webui`)."""
from __future__ import annotations

import http.client
import logging
import os
import plistlib
import re
import socket
import ssl
import stat
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from standin import free_port
from test_webui_pages import inline_code
from webui_fixtures import CONFIG_TEXT, Env, admin, env, is_block_page, location_path  # noqa: F401

from filterd.rules.config import ConfigError, load_config
from webui.certificate import start_https

BLOCKED = "blocked.example"
TABLET, PARENT = "127.0.0.2", "127.0.0.1"


def ca_config(data_dir, https_port: int, mode: str = "ca", address: str = "192.168.1.2") -> str:
    """The web UI tests' config with the HTTPS block page in `mode`, the tablet at 127.0.0.2 and
    blocked.example blocked for its profile."""
    return (CONFIG_TEXT.format(data_dir=data_dir)
            .replace("address: 192.168.1.2",
                     f"address: {address}\n  blockpage_https: {mode}\n  https_port: {https_port}")
            .replace("ip: 192.168.1.23", f"ip: {TABLET}")
            .replace("allow: [khanacademy.org]", f"allow: [khanacademy.org]\n    block: [{BLOCKED}]"))


@pytest.fixture
def ca_env(tmp_path) -> Env:
    """web.blockpage_https: ca, on 192.168.1.2 (never bound: the pages only)."""
    environment = Env(tmp_path, ca_config(tmp_path / "var", 8443))
    environment.set_password()
    return environment


@pytest.fixture
def served(tmp_path):
    """The HTTPS server of a `ca` config on 127.0.0.1 at a free port: (env, server, port)."""
    port = free_port()
    environment = Env(tmp_path, ca_config(tmp_path / "var", port, address="127.0.0.1"))
    environment.set_password()
    server = start_https(environment.app, load_config(environment.config_path))
    assert server is not None and server.bound == [("127.0.0.1", port)]
    yield environment, server, port
    server.stop()


def house_ca_pem(environment: Env) -> str:
    return (environment.data_dir / "ca" / "ca.crt").read_text()


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to `name` (SNI and Host) at a fixed address, from a chosen source address, as a
    device whose DNS answered the filter's address for that name."""

    def __init__(self, address: str, port: int, name: str, context: ssl.SSLContext, source: str = "127.0.0.1",
                 timeout: float = 5.0):
        super().__init__(name, port, context=context, timeout=timeout, source_address=(source, 0))
        self.address = address

    def connect(self):
        raw = socket.create_connection((self.address, self.port), self.timeout, self.source_address)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def https_get(port: int, name: str, ca_pem: str, source: str = PARENT, path: str = "/", address: str = "127.0.0.1"):
    """(status, body, peer certificate) of one GET over HTTPS, trusting only `ca_pem`."""
    connection = PinnedHTTPSConnection(address, port, name, ssl.create_default_context(cadata=ca_pem), source)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        peer = x509.load_der_x509_certificate(connection.sock.getpeercert(binary_form=True))
        return response.status, body.decode(), peer
    finally:
        connection.close()


# ---------------------------------------------------------------- the parents' page


def test_certificate_page_needs_a_login(ca_env):
    response = ca_env.client().get("/settings/certificate")
    assert response.status_code == 302 and location_path(response) == "/login"


def test_certificate_page_shows_the_fingerprint_downloads_and_steps_for_every_platform(ca_env):
    response = ca_env.logged_in().get("/settings/certificate")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    fingerprint = re.search(r"<code>([0-9A-F:]{95})</code>", html)
    assert fingerprint is not None
    pem = house_ca_pem(ca_env)
    digest = x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256())
    assert digest.hex(":").upper() == fingerprint.group(1)
    for needed in ("/ca.crt", "/ca.mobileconfig", "/certificate/check", "Certificate Trust Settings",
                   "Android", "Windows", "Mac", "Chromebook", "iPhone"):
        assert needed in html, needed
    assert inline_code(html) == []
    assert "PRIVATE KEY" not in html
    assert "HTTPS server is not running" in html       # the config says ca, but nothing was started here


def test_certificate_page_knows_when_the_https_server_runs(served):
    environment, server, port = served
    html = environment.logged_in().get("/settings/certificate").get_data(as_text=True)
    assert "HTTPS server is not running" not in html and f"port {port}" in html


def test_certificate_page_says_it_is_off_in_reset_mode_and_makes_no_ca(env, admin):
    html = admin.get("/settings/certificate").get_data(as_text=True)
    assert "blockpage_https: ca" in html and "/ca.crt" not in html
    assert not (env.data_dir / "ca").exists()


# ---------------------------------------------------------------- downloads (open without login)


def test_ca_certificate_download_is_the_certificate_and_never_the_key(ca_env):
    response = ca_env.client().get("/ca.crt")          # no login: it goes onto the children's devices
    assert response.status_code == 200
    assert response.mimetype == "application/x-x509-ca-cert"
    assert "attachment" in response.headers["Content-Disposition"]
    body = response.get_data()
    assert body == (ca_env.data_dir / "ca" / "ca.crt").read_bytes()
    assert x509.load_pem_x509_certificate(body).extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key_pem = (ca_env.data_dir / "ca" / "ca.key").read_bytes()
    key_body = b"".join(key_pem.splitlines()[1:-1])
    assert b"PRIVATE KEY" not in body and key_body not in body.replace(b"\n", b"")
    assert stat.S_IMODE(os.stat(ca_env.data_dir / "ca" / "ca.key").st_mode) == 0o600


def test_mobileconfig_is_a_plist_carrying_the_ca_with_stable_uuids(ca_env, tmp_path):
    response = ca_env.client().get("/ca.mobileconfig")
    assert response.status_code == 200 and response.mimetype == "application/x-apple-aspen-config"
    profile = plistlib.loads(response.get_data())
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    (payload,) = profile["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.security.root"
    pem = (ca_env.data_dir / "ca" / "ca.crt").read_bytes()
    assert x509.load_der_x509_certificate(payload["PayloadContent"]) == x509.load_pem_x509_certificate(pem)
    uuids = (profile["PayloadUUID"], payload["PayloadUUID"])
    assert all(uuid.UUID(value) for value in uuids) and uuids[0] != uuids[1]
    assert b"PRIVATE KEY" not in response.get_data()
    # The same CA gives the same profile after a restart; another install's CA another one.
    again = plistlib.loads(ca_env.client(ca_env.new_app()).get("/ca.mobileconfig").get_data())
    assert (again["PayloadUUID"], again["PayloadContent"][0]["PayloadUUID"]) == uuids
    other = Env(tmp_path / "other", ca_config(tmp_path / "other" / "var", 8443))
    other.set_password()
    elsewhere = plistlib.loads(other.client().get("/ca.mobileconfig").get_data())
    assert elsewhere["PayloadUUID"] not in uuids


def test_downloads_are_absent_when_the_https_block_page_is_off(env):
    client = env.client()
    assert client.get("/ca.crt").status_code == 404
    assert client.get("/ca.mobileconfig").status_code == 404
    assert not (env.data_dir / "ca").exists()


def test_downloads_are_served_on_admin_host_names_only(ca_env):
    response = ca_env.client().get("/ca.crt", headers={"Host": "tiktok.com"})
    assert is_block_page(response) and b"BEGIN CERTIFICATE" not in response.get_data()


def test_open_downloads_take_no_other_method(ca_env):
    client = ca_env.client()
    for path in ("/ca.crt", "/ca.mobileconfig", "/certificate/check"):
        for method in ("POST", "PUT", "DELETE"):
            assert client.open(path, method=method).status_code in (302, 303, 405), (method, path)


# ---------------------------------------------------------------- the trust check


def test_trust_check_is_open_and_loads_a_picture_from_the_https_port(ca_env):
    response = ca_env.client().get("/certificate/check", headers={"Host": "filter.home"})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'src="https://filter.home:8443/__trust_check__.png"' in html
    assert inline_code(html) == []
    csp = response.headers["Content-Security-Policy"]
    assert "img-src 'self' data: https://filter.home:8443;" in csp
    assert "script-src 'self';" in csp and "object-src 'none'" in csp and "unsafe" not in csp
    script = re.search(r'<script src="([^"]+)"', html).group(1)
    assert ca_env.client().get(script).status_code == 200


def test_trust_check_uses_the_name_the_page_was_opened_with(ca_env):
    html = ca_env.client().get("/certificate/check", headers={"Host": "192.168.1.2:8080"}).get_data(as_text=True)
    assert 'src="https://192.168.1.2:8443/__trust_check__.png"' in html
    html = ca_env.client().get("/certificate/check").get_data(as_text=True)   # 127.0.0.1: not served
    assert 'src="https://filter.home:8443/__trust_check__.png"' in html


def test_trust_picture_is_served_over_https_only(ca_env):
    client = ca_env.client()
    assert client.get("/__trust_check__.png", headers={"Host": "filter.home"}).status_code == 404
    response = ca_env.client(base_url="https://filter.home").get("/__trust_check__.png")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.get_data().startswith(b"\x89PNG\r\n\x1a\n")


# ---------------------------------------------------------------- the HTTPS server, over real sockets


def test_https_block_page_for_a_blocked_name_with_a_certificate_for_that_name(served):
    environment, server, port = served
    status, body, peer = https_get(port, BLOCKED, house_ca_pem(environment), source=TABLET)
    assert status == 403 and BLOCKED in body
    names = peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == [BLOCKED]
    # The parent's device (another profile) is not blocked from it: no certificate for that name is
    # minted for it (the house CA vouches only for blocked names), so its browser refuses the filter.
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(port, BLOCKED, house_ca_pem(environment), source=PARENT)


def test_no_sni_gets_the_filters_own_certificate(served):
    environment, server, port = served
    status, _, peer = https_get(port, "127.0.0.1", house_ca_pem(environment))   # an address: no SNI
    addresses = peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.IPAddress)
    assert [str(a) for a in addresses] == ["127.0.0.1"]
    status, _, _ = https_get(port, "filter.home", house_ca_pem(environment))
    assert status in (200, 302)          # the admin UI's login, not the block page


def test_trust_picture_loads_over_the_https_server(served):
    environment, server, port = served
    connection = PinnedHTTPSConnection("127.0.0.1", port, "filter.home",
                                       ssl.create_default_context(cadata=house_ca_pem(environment)))
    connection.request("GET", "/__trust_check__.png")
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "image/png"
    assert response.read().startswith(b"\x89PNG")
    connection.close()


def test_one_connection_carries_several_requests_and_a_form_body(served):
    environment, server, port = served
    connection = PinnedHTTPSConnection("127.0.0.1", port, BLOCKED,
                                       ssl.create_default_context(cadata=house_ca_pem(environment)), TABLET)
    connection.request("POST", "/anything", body="message=" + "x" * 5000,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    first = connection.getresponse()
    first.read()
    first_socket = connection.sock
    connection.request("HEAD", "/")
    head = connection.getresponse()
    assert head.status == 403 and head.read() == b"" and int(head.getheader("Content-Length")) > 0
    connection.request("GET", "/")
    again = connection.getresponse()
    assert again.status == 403 and BLOCKED in again.read().decode()
    assert connection.sock is first_socket      # kept alive: no second handshake
    assert first.getheader("Server") is None and again.getheader("Server") is None
    connection.close()


def test_malformed_and_oversized_requests_get_an_error_that_echoes_nothing(served):
    environment, server, port = served
    context = ssl.create_default_context(cadata=house_ca_pem(environment))

    def exchange(data: bytes) -> bytes:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(TABLET, 0))
        with context.wrap_socket(raw, server_hostname=BLOCKED) as tls:
            tls.sendall(data)
            received = b""
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    return received
                received += chunk

    garbage = exchange(b"<script>alert(1)</script> / HTTP/1.1\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400") and b"<script>" not in garbage
    flood = exchange(b"GET / HTTP/1.1\r\nHost: " + BLOCKED.encode() + b"\r\n" + b"X-Pad: " + b"a" * 40000 + b"\r\n\r\n")
    assert flood.startswith(b"HTTP/1.1 431")
    chunked = exchange(b"POST / HTTP/1.1\r\nHost: blocked.example\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert chunked.startswith(b"HTTP/1.1 501")
    http2 = exchange(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert http2.startswith(b"HTTP/1.1 505")


def test_connections_are_bounded_per_client_and_others_are_still_served(served):
    environment, server, port = served
    idle = [socket.create_connection(("127.0.0.1", port), source_address=(PARENT, 0), timeout=5)
            for _ in range(server.max_per_client)]
    try:
        from conftest import wait_until
        wait_until(lambda: server.open_connections() == server.max_per_client, message="the idle connections")
        extra = socket.create_connection(("127.0.0.1", port), source_address=(PARENT, 0), timeout=5)
        try:
            assert extra.recv(1) == b""          # closed by the server at once: over the limit
        except ConnectionResetError:
            pass
        finally:
            extra.close()
        status, body, _ = https_get(port, BLOCKED, house_ca_pem(environment), source=TABLET)
        assert status == 403 and BLOCKED in body
    finally:
        for connection in idle:
            connection.close()


# ---------------------------------------------------------------- starting


def test_https_port_is_read_and_checked_like_the_other_ports(tmp_path):
    assert load_config(Env(tmp_path / "a", ca_config(tmp_path / "a" / "var", 8443)).config_path).rules.web.https_port \
        == 8443
    default = Env(tmp_path / "b").config_path
    assert load_config(default).rules.web.https_port == 443
    bad = tmp_path / "c" / "filterd.yaml"
    bad.parent.mkdir()
    bad.write_text(ca_config(tmp_path / "c" / "var", 8443).replace("https_port: 8443", "https_port: 70000"))
    with pytest.raises(ConfigError) as refused:
        load_config(bad)
    assert any(problem.startswith("web.https_port: 70000 must be a whole number") for problem in refused.value.problems)


def test_start_https_in_reset_mode_listens_nowhere(tmp_path):
    port = free_port()
    environment = Env(tmp_path, ca_config(tmp_path / "var", port, mode="reset", address="127.0.0.1"))
    assert start_https(environment.app, load_config(environment.config_path)) is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert not (environment.data_dir / "ca").exists()


def test_start_https_logs_and_carries_on_when_the_port_is_taken(tmp_path, caplog):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        environment = Env(tmp_path, ca_config(tmp_path / "var", port, address="127.0.0.1"))
        with caplog.at_level(logging.ERROR, logger="filterd.webui.https"):
            assert start_https(environment.app, load_config(environment.config_path)) is None
        assert any("cannot listen on 127.0.0.1:%d" % port in record.getMessage() for record in caplog.records)
    finally:
        taken.close()
