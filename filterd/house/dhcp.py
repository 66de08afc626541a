"""DHCP for routers that cannot change the DNS server they hand out: dnsmasq in DHCP-only mode.

Many ISP routers hand out themselves as DNS server and cannot be told otherwise. The parent
then switches the router's DHCP off and lets the filter do it: `filterd dhcp` turns the
`dhcp:` section into a dnsmasq config (`port=0`: no DNS at all, filterd keeps port 53) and
execs dnsmasq with it. Every lease names the filter as the DNS server (option 6). dnsmasq's
lease file is read back by the web UI: the MAC, address and host name a device reported become
the defaults when a parent names it.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from filterd.files import write_atomically

LEASE_FILE_NAME = "dhcp.leases"
DNSMASQ_CONFIG_NAME = "dnsmasq-dhcp.conf"
MIN_LEASE_S = 120            # dnsmasq's own floor
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_INTERFACE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


class DhcpError(Exception):
    """The config cannot be turned into a DHCP server; the message names the YAML path."""


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


@dataclass(frozen=True)
class Lease:
    """One line of dnsmasq's lease file."""

    mac: str
    ip: str
    hostname: str | None
    expires: float | None                 # None: an infinite lease


def parse_duration_s(value) -> int | None:
    """12h, 30m, 1d, 3600 (seconds) → seconds; None when it is not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    match = _DURATION.match(str(value).lower())
    return int(match.group(1)) * _UNITS[match.group(2)] if match else None


def parse_dhcp_config(data, check) -> DhcpConfig:
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
    if interface is not None and (not isinstance(interface, str) or not _INTERFACE.match(interface)):
        check.error("dhcp.interface", f'"{interface}" is not a network interface name (e.g. eth0, wlan0)')
        interface = None
    domain = data.get("domain")
    if domain is not None:
        domain = str(domain).strip().lower().rstrip(".")
        if not _DOMAIN.match(domain):
            check.error("dhcp.domain", f'"{data["domain"]}" is not a domain name (e.g. home)')
            domain = None
    lease_file = data.get("lease_file")
    if lease_file is not None and (not isinstance(lease_file, str) or not os.path.isabs(lease_file)):
        check.error("dhcp.lease_file", f'"{lease_file}" must be an absolute file path')
        lease_file = None
    return DhcpConfig(enabled=enabled, interface=interface, range_start=start, range_end=end, netmask=netmask,
                      router=router, lease_time_s=lease_time, dns_server=dns_server, domain=domain,
                      lease_file=lease_file)


def lease_path(config) -> Path:
    """dnsmasq's lease file: dhcp.lease_file, else data_dir/dhcp.leases."""
    dhcp = config.dhcp or DhcpConfig()
    return Path(dhcp.lease_file) if dhcp.lease_file else Path(config.data_dir) / LEASE_FILE_NAME


def dns_server_of(config) -> str:
    """The DNS server every lease names: dhcp.dns_server, else the filter's web.address."""
    address = config.dhcp.dns_server or config.rules.web.address
    if not address:
        raise DhcpError("dhcp.dns_server: not set, and neither is web.address — write the filter's "
                        "LAN address (e.g. 192.168.1.2) in one of them")
    return address


def dnsmasq_config(config) -> str:
    """dnsmasq's config for the `dhcp:` section: DHCP only, leases in the data dir."""
    dhcp = config.dhcp
    if dhcp is None or not dhcp.enabled:
        raise DhcpError("dhcp.enabled: is not true — set it (with dhcp.range and dhcp.router) to serve DHCP")
    source = f" from {config.path}" if config.path else ""
    range_parts = [dhcp.range_start, dhcp.range_end] + ([dhcp.netmask] if dhcp.netmask else [])
    lines = [
        f"# Written by `filterd dhcp`{source} (the dhcp: section); changes here are overwritten.",
        "# No DNS: filterd answers on port 53. Logs go to stderr (the journal).",
        "port=0",
        "no-resolv",
        "no-hosts",
        "keep-in-foreground",
        "log-facility=-",
        "pid-file=",
        "# The only DHCP server of the network: answer at once, even for leases it has not seen.",
        "dhcp-authoritative",
        f"dhcp-leasefile={lease_path(config)}",
        f"dhcp-range={','.join(range_parts)},{dhcp.lease_time_s}",
        f"dhcp-option=option:router,{dhcp.router}",
        f"dhcp-option=option:dns-server,{dns_server_of(config)}",
    ]
    if dhcp.interface:
        lines += [f"interface={dhcp.interface}", "bind-dynamic"]
    else:
        lines.append("except-interface=lo")
    if dhcp.domain:
        lines += [f"domain={dhcp.domain}", f"dhcp-option=option:domain-name,{dhcp.domain}"]
    return "\n".join(lines) + "\n"


def write_dnsmasq_config(config, folder: Path) -> Path:
    """Write dnsmasq's config into `folder` (atomically: dnsmasq never reads half a file)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DNSMASQ_CONFIG_NAME
    write_atomically(path, dnsmasq_config(config).encode("utf-8"))
    return path


def dnsmasq_command(dnsmasq: str, config_file: Path) -> list[str]:
    return [dnsmasq, f"--conf-file={config_file}"]


def read_leases(path: Path, now: float) -> list[Lease]:
    """The current leases (expired ones left out); none when there is no lease file yet.

    dnsmasq writes one lease per line: `EXPIRY MAC IP HOSTNAME CLIENT-ID`, `*` for an unknown
    host name, expiry 0 for an infinite lease. A line that does not read so is skipped.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    leases = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or not fields[0].isdigit():
            continue   # e.g. dnsmasq's "duid …" line for DHCPv6
        expiry = int(fields[0])
        if expiry and expiry < now:
            continue
        try:
            ip = str(ipaddress.ip_address(fields[2]))
        except ValueError:
            continue
        hostname = fields[3] if fields[3] != "*" and len(fields[3]) <= 63 else None
        leases.append(Lease(mac=fields[1].lower(), ip=ip, hostname=hostname, expires=float(expiry) or None))
    return leases


def current_leases(config, now: float) -> list[Lease]:
    """The leases of the filter's own DHCP server; none when it is off."""
    if config.dhcp is None or not config.dhcp.enabled:
        return []
    return read_leases(lease_path(config), now)
