"""filterd.lists.urlcheck: the SSRF guard of list downloads, alone and driving fetch_list against a
real HTTP server on 127.0.0.1 (never the internet: names are resolved by a resolver passed in)."""
from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from filterd.lists.fetch import fetch_list
from filterd.lists.urlcheck import RefusedURL, UrlGuard, forbidden_reason, own_addresses

LIST = b"example.com\nads.example.net\n"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        self.server.seen.append((self.path, self.headers.get("Host")))
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, headers, body = route
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes, httpd.seen = {}, []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def port_of(server: ThreadingHTTPServer) -> int:
    return server.server_address[1]


def resolver_for(table: dict[str, list[str]]):
    """A name → addresses table standing in for DNS (what a rebinding server would answer)."""
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(-2, "Name or service not known")
        return table[host]
    return resolve


# ---------------------------------------------------------------- which addresses


@pytest.mark.parametrize("text", ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "0.0.0.0", "0.1.2.3", "::",
                                  "169.254.169.254", "fe80::1", "224.0.0.251", "ff02::1", "240.0.0.1",
                                  "255.255.255.255"])
def test_loopback_link_local_unspecified_multicast_and_reserved_are_forbidden(text):
    assert forbidden_reason(ipaddress.ip_address(text)) is not None


@pytest.mark.parametrize("text", ["93.184.216.34", "2606:4700::6810:85e5", "203.0.113.9"])
def test_public_addresses_are_allowed(text):
    assert forbidden_reason(ipaddress.ip_address(text)) is None


@pytest.mark.parametrize("text", ["192.168.1.5", "10.0.0.7", "172.20.1.1", "100.64.0.9", "fd00::5",
                                  "::ffff:192.168.1.5"])
def test_private_addresses_are_forbidden_unless_the_list_allows_them(text):
    address = ipaddress.ip_address(text)
    assert "private" in forbidden_reason(address)
    assert forbidden_reason(address, allow_private=True) is None


def test_allow_private_never_opens_loopback_link_local_or_this_machine():
    lan = ipaddress.ip_address("192.168.1.2")
    for text in ("127.0.0.1", "169.254.169.254", "0.0.0.0", "::1"):
        assert forbidden_reason(ipaddress.ip_address(text), allow_private=True) is not None
    assert forbidden_reason(lan, {lan}, allow_private=True) == "an address of this machine"


def test_a_trusted_mirror_prefix_skips_the_check_but_not_for_other_urls():
    guard = UrlGuard(resolver=resolver_for({"mirror.lan": ["192.168.1.9"], "evil.example": ["10.0.0.1"]}),
                     trusted_prefix="http://mirror.lan/lists/")
    assert guard("http://mirror.lan/lists/raw.githubusercontent.com/a/b") == ["192.168.1.9"]
    with pytest.raises(RefusedURL, match="private"):
        guard("http://mirror.lan/other")
    with pytest.raises(RefusedURL, match="private"):
        guard("http://evil.example/lists/x")


def test_this_machines_own_addresses_are_forbidden():
    own = own_addresses()
    assert ipaddress.ip_address("127.0.0.1") in own
    lan = ipaddress.ip_address("192.168.1.2")
    assert forbidden_reason(lan, own | {lan}) == "an address of this machine"
    for address in own:
        assert forbidden_reason(address, own) is not None, address


def test_guard_refuses_a_name_resolving_to_loopback_and_names_the_address():
    guard = UrlGuard(resolver=resolver_for({"rebind.example": ["203.0.113.9", "127.0.0.1"]}))
    with pytest.raises(RefusedURL, match=r"rebind\.example \(127\.0\.0\.1\) is a loopback address"):
        guard("https://rebind.example/list.txt")


def test_guard_refuses_web_address_given_as_own():
    guard = UrlGuard(extra_own=["192.168.1.2"], resolver=resolver_for({}))
    with pytest.raises(RefusedURL, match="an address of this machine"):
        guard("http://192.168.1.2:8080/")


def test_guard_returns_the_checked_addresses_of_an_allowed_name():
    guard = UrlGuard(resolver=resolver_for({"lists.example": ["203.0.113.9", "2001:db8::9"]}))
    assert guard("https://lists.example/a.txt") == ["203.0.113.9", "2001:db8::9"]


def test_guard_refuses_unknown_names_and_other_schemes():
    guard = UrlGuard(resolver=resolver_for({}))
    with pytest.raises(RefusedURL, match="cannot find the server"):
        guard("https://nowhere.example/")
    with pytest.raises(RefusedURL, match="only http"):
        guard("file:///etc/passwd")


# ---------------------------------------------------------------- driving real downloads


def test_download_from_loopback_is_refused_before_any_request(server, tmp_path: Path):
    server.routes["/list.txt"] = (200, {}, LIST)
    result = fetch_list("l", f"http://127.0.0.1:{port_of(server)}/list.txt", tmp_path, check_url=UrlGuard())
    assert result.status == "failed" and result.path is None
    assert "loopback" in (result.error or "")
    assert server.seen == []
    assert not (tmp_path / "l.txt").exists()


def test_download_from_localhost_by_name_is_refused(server, tmp_path: Path):
    result = fetch_list("l", f"http://localhost:{port_of(server)}/list.txt", tmp_path, check_url=UrlGuard())
    assert result.status == "failed" and "loopback" in (result.error or "")
    assert server.seen == []


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://[::ffff:127.0.0.1]:{port}/list.txt",
                                    "http://0.0.0.0:{port}/list.txt", "http://[fe80::1]/x"])
def test_redirect_to_a_forbidden_address_is_refused(server, tmp_path: Path, target: str):
    port = port_of(server)
    server.routes["/start"] = (302, {"Location": target.format(port=port)}, b"")
    server.routes["/list.txt"] = (200, {}, LIST)
    # The stand-in server itself is on loopback: the first hop is let through, every redirect
    # meets the real guard.
    guard = UrlGuard(resolver=resolver_for({}))
    result = fetch_list("l", f"http://lists.test:{port}/start", tmp_path, check_url=_first_hop_free(guard))
    assert result.status == "failed", result
    assert (result.error or "").startswith("refused ")
    assert [path for path, _ in server.seen] == ["/start"]


def _first_hop_free(guard: UrlGuard):
    """The guard for every hop but the first (the stand-in server on loopback)."""
    calls = []

    def check(url: str):
        calls.append(url)
        if len(calls) == 1:
            return ["127.0.0.1"]
        return guard(url)
    return check


def test_redirect_to_this_machines_own_lan_address_is_refused(server, tmp_path: Path):
    own = sorted(str(a) for a in own_addresses() if not a.is_loopback and a.version == 4)
    if not own:
        pytest.skip("this machine has no non-loopback IPv4 address")
    port = port_of(server)
    server.routes["/start"] = (302, {"Location": f"http://{own[0]}:{port}/list.txt"}, b"")
    result = fetch_list("l", f"http://lists.test:{port}/start", tmp_path, check_url=_first_hop_free(UrlGuard()))
    assert result.status == "failed"
    assert "an address of this machine" in (result.error or "")
    assert [path for path, _ in server.seen] == ["/start"]


def test_connection_goes_to_the_checked_address_not_a_second_lookup(server, tmp_path: Path):
    """`lists.test` exists only in the guard's resolver: the download can only succeed by
    connecting to the address the guard checked (a rebinding DNS gets no second chance)."""
    port = port_of(server)
    server.routes["/list.txt"] = (200, {}, LIST)
    guard = UrlGuard(resolver=resolver_for({"lists.test": ["127.0.0.1"]}), allow_loopback=True)
    result = fetch_list("l", f"http://lists.test:{port}/list.txt", tmp_path, check_url=guard)
    assert result.status == "updated", result.error
    assert (tmp_path / "l.txt").read_bytes() == LIST
    assert server.seen == [("/list.txt", f"lists.test:{port}")]
