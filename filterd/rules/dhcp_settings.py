"""The `dhcp:` section: dnsmasq as the house's DHCP server (off by default).

Parsed with the rules (reading a config never imports the dnsmasq writer); `house/dhcp.py`
turns it into dnsmasq's config file.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from filterd.rules.checking import show

MIN_LEASE_S = 120            # dnsmasq's own floor
_DURATION = re.compile(r" *(\d+) *([smhd]?) *")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_INTERFACE = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")
_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


@dataclass(frozen=True)
class DhcpConfig:
    enabled: bool = False
    interface: str | None = None          # None: every interface but loopback
    range_start: str | None = None
    range_end: str | None = None
    netmask: str | None = None            # None: the interface's own
    router: str | None = None             # option 3, the gateway (usually the ISP router)
    lease_time_s: int = 43_200
    dns_server: str | None = None         # option 6; None: web.address (the filter's LAN address)
    domain: str | None = None             # option 15, e.g. "home"
    lease_file: str | None = None         # None: data_dir/dhcp.leases


def parse_duration_s(value) -> int | None:
    """12h, 30m, 1d, 3600 (seconds) → seconds; None when it is not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    match = _DURATION.fullmatch(str(value).lower())
    return int(match.group(1)) * _UNITS[match.group(2)] if match else None


def parse_dhcp_config(data, check, data_dir=None) -> DhcpConfig:
    """The `dhcp:` section. Every value ends up in a dnsmasq config file, so each is matched in
    full: a newline in one would add a directive of its own (a rogue DNS server for the house)."""
    known = {"enabled", "interface", "range", "netmask", "router", "lease_time", "dns_server", "domain",
             "lease_file"}
    data = check.mapping(data, "dhcp", known)
    if not data:
        return DhcpConfig()
    enabled = data.get("enabled", False)
    if not isinstance(enabled, bool):
        check.error("dhcp.enabled", f"{enabled!r} must be true or false")
        enabled = False

    def ipv4(key: str, required: bool) -> str | None:
        value = data.get(key)
        if value is None:
            if required and enabled:
                check.error(f"dhcp.{key}", "is needed when dhcp.enabled is true")
            return None
        try:
            return str(ipaddress.IPv4Address(str(value).strip()))
        except ValueError:
            check.error(f"dhcp.{key}", f'"{value}" is not an IPv4 address (e.g. 192.168.1.1)')
            return None

    start = end = None
    value = data.get("range")
    if value is None:
        if enabled:
            check.error("dhcp.range", 'is needed when dhcp.enabled is true (e.g. "192.168.1.100-192.168.1.200")')
    else:
        parts = value if isinstance(value, list) else str(value).split("-")
        try:
            if len(parts) != 2:
                raise ValueError
            first, last = (ipaddress.IPv4Address(str(p).strip()) for p in parts)
            if first > last:
                check.error("dhcp.range", f'"{value}" starts after it ends')
            else:
                start, end = str(first), str(last)
        except ValueError:
            check.error("dhcp.range", f'"{value}" must be two IPv4 addresses, "FIRST-LAST" '
                        '(e.g. "192.168.1.100-192.168.1.200")')
    router = ipv4("router", required=True)
    dns_server = ipv4("dns_server", required=False)
    netmask = None
    if data.get("netmask") is not None:
        try:
            network = ipaddress.IPv4Network(f"0.0.0.0/{data['netmask']}")
            netmask = str(network.netmask)
        except ValueError:
            check.error("dhcp.netmask", f'"{data["netmask"]}" is not a netmask (e.g. 255.255.255.0)')
    if netmask and start and end and router:
        subnet = ipaddress.IPv4Network(f"{router}/{netmask}", strict=False)
        for key, address in (("range", start), ("range", end)):
            if ipaddress.IPv4Address(address) not in subnet:
                check.error(f"dhcp.{key}", f"{address} is outside the router's network {subnet}")
                break
    lease_time = parse_duration_s(data.get("lease_time", "12h"))
    if lease_time is None or not MIN_LEASE_S <= lease_time <= 365 * 86400:
        check.error("dhcp.lease_time", f'"{data.get("lease_time")}" must be a duration from 2m to 365d '
                    '(e.g. 12h, 30m, 1d)')
        lease_time = 43_200
    interface = data.get("interface")
    if interface is not None and (not isinstance(interface, str) or not _INTERFACE.fullmatch(interface)):
        check.error("dhcp.interface", f'{show(interface)} is not a network interface name (e.g. eth0, wlan0)')
        interface = None
    domain = data.get("domain")
    if domain is not None:
        domain = str(domain).strip().lower().rstrip(".")
        if not _DOMAIN.fullmatch(domain):
            check.error("dhcp.domain", f'"{data["domain"]}" is not a domain name (e.g. home)')
            domain = None
    lease_file = data.get("lease_file")
    if lease_file is not None and (not isinstance(lease_file, str) or not os.path.isabs(lease_file)):
        check.error("dhcp.lease_file", f"{show(lease_file)} must be an absolute file path")
        lease_file = None
    elif lease_file is not None and _has_control_character(lease_file):
        check.error("dhcp.lease_file", f"{lease_file!r} must not contain control characters")
        lease_file = None
    elif lease_file is not None and data_dir is not None and not _inside(Path(lease_file), Path(data_dir)):
        check.error("dhcp.lease_file", f'"{lease_file}" must be inside the data directory ({data_dir})')
        lease_file = None
    return DhcpConfig(enabled=enabled, interface=interface, range_start=start, range_end=end, netmask=netmask,
                      router=router, lease_time_s=lease_time, dns_server=dns_server, domain=domain,
                      lease_file=lease_file)


def _has_control_character(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` (made absolute, `..` resolved) lies inside `folder`."""
    try:
        Path(os.path.normpath(path)).relative_to(os.path.normpath(folder.absolute()))
        return True
    except ValueError:
        return False
