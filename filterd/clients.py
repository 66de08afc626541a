"""Which device sent a query: source IP → device (exact IP, then MAC, then network) → profile.

The MAC comes from the kernel's neighbour table (/proc/net/arp), read off the hot path by the
daemon every few seconds; `identify` itself is pure.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .rules import Rules

ARP_TABLE = "/proc/net/arp"


@dataclass(frozen=True)
class Identity:
    device: str | None      # the configured device name, None for an unknown client
    profile: str
    mac: str | None = None


class ClientMap:
    def __init__(self, rules: Rules):
        self.default_profile = rules.default_profile
        self.by_ip = {d.ip: d for d in rules.devices if d.ip}
        self.by_mac = {d.mac: d for d in rules.devices if d.mac}
        # Most specific network first, so a /32 inside a guest /24 wins.
        self.by_network = sorted((d for d in rules.devices if d.cidr), key=lambda d: -d.cidr.prefixlen)
        self.by_name = {d.name.lower(): d for d in rules.devices}

    def identify(self, ip: str, mac: str | None = None) -> Identity:
        device = self.by_ip.get(ip)
        if device is None and mac:
            device = self.by_mac.get(mac)
        if device is None and self.by_network:
            try:
                address = ipaddress.ip_address(ip.split("%", 1)[0])
            except ValueError:
                address = None
            if address is not None:
                device = next((d for d in self.by_network
                               if d.cidr.version == address.version and address in d.cidr), None)
        if device is None:
            return Identity(None, self.default_profile, mac)
        return Identity(device.name, device.profile, mac)


def parse_arp_table(text: str) -> dict[str, str]:
    """IP → MAC from the text of /proc/net/arp (complete entries only)."""
    table = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[2] != "0x0" and fields[3] != "00:00:00:00:00:00":
            table[fields[0]] = fields[3].lower()
    return table


def read_neighbours(path: str = ARP_TABLE) -> dict[str, str]:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return parse_arp_table(f.read())
    except OSError:
        return {}
