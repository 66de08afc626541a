"""Where a list download may connect: the guard against SSRF through "add a list by URL".

A URL typed into the web UI must not make the filter talk to itself or to addresses no list
server has: loopback, link-local (cloud metadata, router fallbacks), unspecified, multicast,
reserved ranges, or any address of this machine (its web UI, its DNS port). The host is
resolved once here, every address it resolves to is checked, and the download connects to
those checked addresses only (fetch.py pins them): a DNS answer that changes between the
check and the connection (DNS rebinding) cannot slip through. Redirects come back here too,
since fetch_list calls the guard for every hop.

Private LAN addresses (192.168.x.x, 10.x.x.x, fc00::/7, 100.64/10…) are refused too, unless the
list entry says `allow_private: true` (a parent who keeps a list on the house's NAS). The
operator's `lists_mirror:` is trusted: an address they wrote themselves may be anywhere, even on
this machine; a redirect from it to elsewhere is checked as usual. Nothing a download fetches is
shown back beyond a one-line status with counts.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")   # Linux connects 0.x.y.z to this machine
# Local networks: RFC 1918, carrier-grade NAT (an ISP's private range), IPv6 unique-local and
# the old site-local.
_PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fec0::/10"))


class RefusedURL(ValueError):
    """A URL the filter will not download from; the message says why in plain words."""


def forbidden_reason(address: Address, own: Iterable[Address] = (), allow_private: bool = False) -> str | None:
    """Why a list server may not have this address (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:                      # ::ffff:127.0.0.1 is 127.0.0.1
            return forbidden_reason(mapped, own, allow_private)
    if address.is_loopback:
        return "a loopback address (this machine)"
    if address.is_unspecified or (isinstance(address, ipaddress.IPv4Address) and address in _THIS_NETWORK):
        return "the unspecified address (this machine)"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:
        return "a reserved address"
    if address in set(own):
        return "an address of this machine"
    if not allow_private and any(address.version == network.version and address in network
                                 for network in _PRIVATE):
        return "a private (local network) address (allow_private: true on the list allows it)"
    return None


def own_addresses() -> set[Address]:
    """Every address this machine answers on: its interfaces' (from /proc on Linux, which
    OpenWrt and Raspberry Pi OS are) and what its host name resolves to."""
    found: set[Address] = set()
    # IPv4: the kernel's local routing table names each local address "/32 host LOCAL".
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for previous, line in zip(lines, lines[1:]):
        if "/32 host LOCAL" in line:
            text = previous.strip().lstrip("|-+ ").strip()
            try:
                found.add(ipaddress.IPv4Address(text))
            except ValueError:
                pass
    # IPv6: one line per address, 32 hex digits first.
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            hex_address = line.split()[0] if line.split() else ""
            if len(hex_address) == 32:
                found.add(ipaddress.IPv6Address(int(hex_address, 16)))
    except (OSError, ValueError):
        pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(ipaddress.ip_address(info[4][0].split("%", 1)[0]))
    except (OSError, ValueError):
        pass
    return found


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (in its order of preference)."""
    out: list[str] = []
    for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = info[4][0].split("%", 1)[0]
        if address not in out:
            out.append(address)
    return out


class UrlGuard:
    """fetch_list's `check_url`: refuses a URL whose host resolves to a forbidden address,
    and returns the checked addresses for the download to connect to.

    `allow_private`: the list entry's `allow_private: true`. `trusted_prefix`: URLs starting
    with it (the operator's `lists_mirror`) connect wherever their host resolves.
    `allow_loopback` exists for the test suite only (its stand-in list servers live on
    127.0.0.1); nothing in the config or the web UI can set it.
    """

    def __init__(self, *, extra_own: Iterable[str] = (), resolver: Resolver = system_resolver,
                 allow_loopback: bool = False, allow_private: bool = False,
                 trusted_prefix: str | None = None):
        self._extra_own = {ipaddress.ip_address(a) for a in extra_own if a}
        self._resolver = resolver
        self._allow_loopback = allow_loopback
        self._allow_private = allow_private
        self._trusted_prefix = trusted_prefix

    def __call__(self, url: str) -> list[str]:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            raise RefusedURL("only http:// and https:// addresses can be downloaded")
        host = parts.hostname
        if not host:
            raise RefusedURL("the address has no host name")
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            raise RefusedURL("the address has an invalid port") from None
        try:
            literal = ipaddress.ip_address(host.split("%", 1)[0])
            addresses = [str(literal)]
        except ValueError:
            try:
                addresses = self._resolver(host, port)
            except (OSError, UnicodeError) as exc:
                raise RefusedURL(f"cannot find the server {host} ({getattr(exc, 'strerror', None) or exc})") from None
        if not addresses:
            raise RefusedURL(f"cannot find the server {host} (no address)")
        if self._trusted_prefix and url.startswith(self._trusted_prefix):
            return addresses
        own = own_addresses() | self._extra_own
        for text in addresses:
            address = ipaddress.ip_address(text)
            if self._allow_loopback and address.is_loopback:
                continue
            reason = forbidden_reason(address, own, self._allow_private)
            if reason is not None:
                shown = host if host == text else f"{host} ({text})"
                raise RefusedURL(f"{shown} is {reason}: lists are only downloaded from other servers")
        return addresses
