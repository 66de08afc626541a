"""DNS over TLS and HTTPS end to end: the real daemon, real TLS on loopback, `kdig +tls` and an
HTTP/1.1 DoH client, the device told apart by its client ID only.

Every query here comes from 127.0.0.1, which the config names as the parents' desk (profile
`adults`, which blocks nothing): a block seen over DoT/DoH can only come from the client ID.
`kid-tablet` (profile `kids`) blocks kids-only.test; the default profile blocks guest-only.test.
"""
from __future__ import annotations

import base64
import http.client
import shutil
import socket
import sqlite3
import ssl
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from conftest import wait_until
from standin import make_wildcard_certificate

from filterd.store import state

LOG_DEADLINE_S = 15.0
KDIG = shutil.which("kdig")


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def house_config(dot_port: int, doh_port: int, **dns) -> dict:
    return {
        "dns": {"tls_listen": [f"127.0.0.1:{dot_port}"], "https_listen": [f"127.0.0.1:{doh_port}"],
                "block_mode": "null", **dns},
        "web": {"hostnames": ["filter.home"], "address": "192.168.1.2"},
        "profiles": {"default": {"block": ["guest-only.test"]},
                     "adults": {},
                     "kids": {"block": ["kids-only.test"]}},
        "default_profile": "default",
        "devices": [{"name": "desk", "ip": "127.0.0.1", "profile": "adults"},
                    {"name": "kid-tablet", "client_id": "kid-tablet", "profile": "kids"}],
    }


@pytest.fixture(scope="module")
def house(module_daemons, standin):
    dot_port, doh_port = _free_tcp_port(), _free_tcp_port()
    config = house_config(dot_port, doh_port)
    daemon = module_daemons([f"udp://127.0.0.1:{standin.port}"], extra={k: v for k, v in config.items() if k != "dns"},
                            **config["dns"])
    daemon.dot_port, daemon.doh_port = dot_port, doh_port
    daemon.ca = Path(daemon.config["data_dir"]) / "ca" / "ca.crt"
    wait_until(lambda: _connects(doh_port), timeout=10, message="the DoH port to open")
    return daemon


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- clients


def kdig(house, name: str, sni: str, qtype: str = "A") -> str:
    """kdig over TLS, the certificate checked against the house CA for the SNI's name."""
    result = subprocess.run(
        [KDIG, "-p", str(house.dot_port), "@127.0.0.1", "+tls", f"+tls-sni={sni}", f"+tls-hostname={sni}",
         f"+tls-ca={house.ca}", "+short", "+time=3", "+retry=0", name, qtype],
        capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def tls_context(house) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(house.ca))


def doh(house, path: str, method: str = "POST", body: bytes | None = None, headers: dict | None = None,
        connection: http.client.HTTPSConnection | None = None) -> tuple[int, bytes]:
    own = connection is None
    if own:
        connection = http.client.HTTPSConnection("127.0.0.1", house.doh_port, timeout=5, context=_for("filter.home", house))
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        if own:
            connection.close()


def _for(server_name: str, house) -> ssl.SSLContext:
    """A context that checks the certificate for `server_name` while connecting to 127.0.0.1."""
    context = tls_context(house)
    original = context.wrap_socket

    def wrap(sock, server_hostname=None, **options):
        return original(sock, server_hostname=server_name, **options)
    context.wrap_socket = wrap
    return context


def doh_query(house, name: str, path: str = "/dns-query/kid-tablet", get: bool = False) -> DNSRecord:
    query = DNSRecord.question(name, "A")
    query.header.id = 0     # RFC 8484 §4.1: 0, so GET answers cache well
    wire = query.pack()
    if get:
        encoded = base64.urlsafe_b64encode(wire).rstrip(b"=").decode()
        status, body = doh(house, f"{path}?dns={encoded}", "GET", headers={"Accept": "application/dns-message"})
    else:
        status, body = doh(house, path, "POST", wire, {"Content-Type": "application/dns-message",
                                                        "Accept": "application/dns-message"})
    assert status == 200, body
    return DNSRecord.parse(body)


def addresses(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def logged(house, where: str, args=()) -> list[tuple]:
    path = state.db_path(Path(house.config["data_dir"]))
    if not path.exists():
        return []
    conn = state.connect(path, readonly=True)
    try:
        return conn.execute(f"SELECT device, client, name, action, profile FROM queries WHERE {where} ORDER BY id",
                            args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


# ---------------------------------------------------------------- who is asking


def test_plain_dns_from_this_address_is_the_desk_that_blocks_nothing(house):
    assert addresses(house.ask("kids-only.test")) != ["0.0.0.0"]


def test_a_devices_dot_host_name_resolves_to_the_filter_over_plain_dns(house):
    """Android looks its Private DNS host name up over plain DNS before it connects."""
    assert addresses(house.ask("kid-tablet.filter.home")) == ["192.168.1.2"]
    assert addresses(house.ask("emma-phone.filter.home")) == ["192.168.1.2"]


@pytest.mark.skipif(KDIG is None, reason="kdig (knot-dnsutils) is not installed")
def test_kdig_over_tls_with_the_tablets_client_id_gets_the_kids_block_and_is_logged_as_the_tablet(house):
    assert kdig(house, "kids-only.test", "kid-tablet.filter.home") == "0.0.0.0"
    assert kdig(house, "dot-allowed.test", "kid-tablet.filter.home") not in ("", "0.0.0.0")
    rows = wait_until(lambda: logged(house, "name IN ('kids-only.test', 'dot-allowed.test') AND device IS NOT NULL"
                                           " AND device != 'desk'"),
                      timeout=LOG_DEADLINE_S, message="the DoT queries in the log")
    assert {(device, name, action, profile) for device, _, name, action, profile in rows} == {
        ("kid-tablet", "kids-only.test", "block", "kids"), ("kid-tablet", "dot-allowed.test", "allow", "kids")}


@pytest.mark.skipif(KDIG is None, reason="kdig (knot-dnsutils) is not installed")
def test_kdig_with_the_bare_name_is_the_address_s_device(house):
    assert kdig(house, "kids-only.test", "filter.home") != "0.0.0.0"


def test_doh_post_and_get_to_the_tablets_path_get_the_kids_block_and_are_logged_as_the_tablet(house):
    assert addresses(doh_query(house, "doh-post.kids-only.test")) == ["0.0.0.0"]
    assert addresses(doh_query(house, "doh-get.kids-only.test", get=True)) == ["0.0.0.0"]
    allowed = doh_query(house, "doh-allowed.test", get=True)
    assert allowed.header.rcode == RCODE.NOERROR and addresses(allowed) not in ([], ["0.0.0.0"])
    rows = wait_until(lambda: (lambda r: r if len(r) == 3 else None)(
        logged(house, "name IN ('doh-post.kids-only.test', 'doh-get.kids-only.test', 'doh-allowed.test')")),
        timeout=LOG_DEADLINE_S, message="the DoH queries in the log")
    assert sorted((device, name, action) for device, _, name, action, _ in rows) == [
        ("kid-tablet", "doh-allowed.test", "allow"), ("kid-tablet", "doh-get.kids-only.test", "block"),
        ("kid-tablet", "doh-post.kids-only.test", "block")]


def test_doh_without_a_client_id_is_the_address_s_device(house):
    assert addresses(doh_query(house, "plain-path.kids-only.test", path="/dns-query")) != ["0.0.0.0"]


def test_an_unknown_client_id_gets_the_default_profile_and_is_seen_as_a_new_device(house):
    assert addresses(doh_query(house, "guest-only.test", path="/dns-query/emma-phone")) == ["0.0.0.0"]
    assert addresses(doh_query(house, "stranger.kids-only.test", path="/dns-query/emma-phone")) != ["0.0.0.0"]
    rows = wait_until(lambda: logged(house, "client = 'emma-phone'"), timeout=LOG_DEADLINE_S,
                      message="the unknown client's queries in the log")
    assert {(device, profile) for device, _, _, _, profile in rows} == {(None, "default")}
    path = state.db_path(Path(house.config["data_dir"]))
    conn = state.connect(path, readonly=True)
    try:
        seen = conn.execute("SELECT device FROM clients_seen WHERE client = 'emma-phone'").fetchall()
    finally:
        conn.close()
    assert seen == [(None,)]


# ---------------------------------------------------------------- the protocols


def test_dot_pipelines_queries_on_one_connection_and_answers_each(house):
    """RFC 7858: several queries sent at once on one connection, every one answered (in any order)."""
    names = [f"pipe{i}.test" for i in range(5)] + ["pipe.kids-only.test"]
    queries = []
    for i, name in enumerate(names):
        query = DNSRecord.question(name, "A")
        query.header.id = 1000 + i
        queries.append(query.pack())
    with socket.create_connection(("127.0.0.1", house.dot_port), timeout=5) as raw:
        with _for("kid-tablet.filter.home", house).wrap_socket(raw) as sock:
            sock.sendall(b"".join(struct.pack(">H", len(q)) + q for q in queries))
            answers = {}
            while len(answers) < len(queries):
                size = struct.unpack(">H", _read(sock, 2))[0]
                reply = DNSRecord.parse(_read(sock, size))
                answers[reply.header.id] = reply
    assert sorted(answers) == list(range(1000, 1000 + len(names)))
    assert addresses(answers[1005]) == ["0.0.0.0"]
    assert all(addresses(answers[1000 + i]) not in ([], ["0.0.0.0"]) for i in range(5))


def _read(sock, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the connection closed early"
        data += chunk
    return data


def test_doh_keeps_the_connection_alive_across_queries(house):
    connection = http.client.HTTPSConnection("127.0.0.1", house.doh_port, timeout=5, context=_for("filter.home", house))
    try:
        for i in range(3):
            wire = DNSRecord.question(f"keep{i}.kids-only.test", "A").pack()
            status, body = doh(house, "/dns-query/kid-tablet", "POST", wire,
                               {"Content-Type": "application/dns-message"}, connection)
            assert status == 200 and addresses(DNSRecord.parse(body)) == ["0.0.0.0"]
        first_socket = connection.sock
        assert first_socket is not None     # never reconnected: the same socket served all three
    finally:
        connection.close()


@pytest.mark.parametrize("method, path, body, headers, status", [
    ("GET", "/dns-query?dns=not*base64!", None, {}, 400),
    ("GET", "/dns-query?dns=AAAB", None, {}, 400),                       # decodes, but no DNS message
    ("GET", "/dns-query", None, {}, 400),                                # no dns= at all
    ("POST", "/dns-query", DNSRecord.question("x.test").pack(), {"Content-Type": "text/plain"}, 415),
    ("POST", "/dns-query", b"\0" * 70_000, {"Content-Type": "application/dns-message"}, 413),
    ("PUT", "/dns-query", b"", {}, 405),
    ("GET", "/dns-query/not_an.id?dns=AAAB", None, {}, 404),
    ("GET", "/admin", None, {}, 404),
])
def test_malformed_doh_gets_its_4xx_and_the_worker_keeps_serving(house, method, path, body, headers, status):
    got, _ = doh(house, path, method, body, headers)
    assert got == status
    assert house.alive()
    assert addresses(doh_query(house, "after-bad.kids-only.test")) == ["0.0.0.0"]


def test_garbage_and_a_half_request_do_not_stop_the_doh_worker(house):
    with socket.create_connection(("127.0.0.1", house.doh_port), timeout=5) as raw:
        with _for("filter.home", house).wrap_socket(raw) as sock:
            sock.sendall(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400")
    with socket.create_connection(("127.0.0.1", house.doh_port), timeout=5) as raw:
        with _for("filter.home", house).wrap_socket(raw) as sock:
            sock.sendall(b"POST /dns-query HTTP/1.1\r\nContent-Length: 500\r\n\r\nshort")
    with socket.create_connection(("127.0.0.1", house.doh_port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\n\r\n")     # plain HTTP on the TLS port: the handshake fails
    assert addresses(doh_query(house, "after-garbage.kids-only.test")) == ["0.0.0.0"]


# ---------------------------------------------------------------- the parent's own certificate


def _served_certificate(port: int, ca: Path, server_name: str) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as sock:
            return sock.getpeercert(binary_form=True)


def test_a_parents_certificate_serves_client_ids_under_its_names_and_is_reloaded_when_renewed(
        daemons, standin, tmp_path):
    first = make_wildcard_certificate(tmp_path / "acme1", "dns.family.test")
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(first[1], live / "fullchain.pem")
    shutil.copy(first[2], live / "privkey.pem")
    dot_port, doh_port = _free_tcp_port(), _free_tcp_port()
    config = house_config(dot_port, doh_port, tls_cert=str(live / "fullchain.pem"), tls_key=str(live / "privkey.pem"))
    daemon = daemons([f"udp://127.0.0.1:{standin.port}"], extra={k: v for k, v in config.items() if k != "dns"},
                     **config["dns"])
    wait_until(lambda: _connects(dot_port), timeout=10, message="the DoT port to open")
    # The names come from the certificate: the tablet's ID is the label under dns.family.test.
    with socket.create_connection(("127.0.0.1", dot_port), timeout=5) as raw:
        context = ssl.create_default_context(cafile=str(first[0]))
        with context.wrap_socket(raw, server_hostname="kid-tablet.dns.family.test") as sock:
            query = DNSRecord.question("acme.kids-only.test", "A").pack()
            sock.sendall(struct.pack(">H", len(query)) + query)
            reply = DNSRecord.parse(_read(sock, struct.unpack(">H", _read(sock, 2))[0]))
    assert addresses(reply) == ["0.0.0.0"]
    # Renewed: key first, then the chain (as certbot's deploy would swap them); the next
    # handshake gets the new certificate, the daemon never restarted.
    second = make_wildcard_certificate(tmp_path / "acme2", "dns.family.test")
    shutil.copy(second[2], live / "privkey.pem")
    shutil.copy(second[1], live / "fullchain.pem")
    expected = ssl.PEM_cert_to_DER_cert(second[1].read_text())
    wait_until(lambda: _served_certificate(dot_port, second[0], "dns.family.test") == expected
               if _try_served(dot_port, second[0]) else False,
               timeout=20, interval=0.2, message="the renewed certificate to be served")
    assert daemon.alive()


def _try_served(port: int, ca: Path) -> bool:
    try:
        _served_certificate(port, ca, "dns.family.test")
        return True
    except (ssl.SSLError, OSError):
        return False


def _check(config_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "filterd", "check", "--config", str(config_path)],
                          capture_output=True, text=True, timeout=60)


def test_filterd_check_refuses_a_missing_certificate_and_a_key_that_is_not_its_own(daemons, standin, tmp_path):
    one = make_wildcard_certificate(tmp_path / "one", "dns.family.test")
    other = make_wildcard_certificate(tmp_path / "other", "dns.family.test")
    daemon = daemons([f"udp://127.0.0.1:{standin.port}"], start=False,
                     tls_listen=["127.0.0.1:8853"], tls_cert=str(tmp_path / "missing.pem"), tls_key=str(one[2]))
    result = _check(daemon.config_path)
    assert result.returncode == 2
    assert f'dns.tls_cert: "{tmp_path / "missing.pem"}" is not a readable file' in result.stderr
    config = daemon.config
    config["dns"]["tls_cert"] = str(one[1])
    config["dns"]["tls_key"] = str(other[2])
    daemon.write_config(config)
    result = _check(daemon.config_path)
    assert result.returncode == 2
    assert "dns.tls_key:" in result.stderr and "is not the key of the certificate" in result.stderr
    config["dns"]["tls_key"] = str(one[2])
    daemon.write_config(config)
    assert _check(daemon.config_path).returncode == 0


def test_a_daemon_with_an_unusable_certificate_does_not_start(daemons, standin, tmp_path):
    one = make_wildcard_certificate(tmp_path / "one", "dns.family.test")
    other = make_wildcard_certificate(tmp_path / "other", "dns.family.test")
    daemon = daemons([f"udp://127.0.0.1:{standin.port}"], start=False,
                     tls_listen=[f"127.0.0.1:{_free_tcp_port()}"], tls_cert=str(one[1]), tls_key=str(other[2]))
    daemon.launch()
    assert daemon.process.wait(timeout=30) != 0
    assert "is not the key of the certificate" in daemon.stderr()

