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
from dataclasses import dataclass
from pathlib import Path

from filterd.files import write_atomically
from filterd.rules.dhcp_settings import DhcpConfig

LEASE_FILE_NAME = "dhcp.leases"
DNSMASQ_CONFIG_NAME = "dnsmasq-dhcp.conf"
class DhcpError(Exception):
    """The config cannot be turned into a DHCP server; the message names the YAML path."""


@dataclass(frozen=True)
class Lease:
    """One line of dnsmasq's lease file."""

    mac: str
    ip: str
    hostname: str | None
    expires: float | None                 # None: an infinite lease


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
    # Every value was checked when the config was read; this is the last guard against a value
    # that would add a directive of its own (dhcp-script=, conf-file=, a rogue DNS server).
    for line in lines:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in line):
            raise DhcpError(f"refusing to write a dnsmasq line with a control character: {line!r}")
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
