"""DHCP for routers that cannot change the DNS server they hand out: dnsmasq in DHCP-only mode.

(Being built: the `dhcp:` config section, dnsmasq's generated config, and its leases.)
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DhcpConfig:
    enabled: bool = False


def parse_dhcp_config(data, check) -> DhcpConfig:
    if data is None:
        return DhcpConfig()
    check.mapping(data, "dhcp", {"enabled"})
    return DhcpConfig()
