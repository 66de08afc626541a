"""Who a device is: its client ID (encrypted DNS), else its source IP (and MAC, when the
neighbour table knows it) → device → profile.

A client ID is what the device itself says over DoT (SNI) or DoH (the path): it survives the
private MACs and changing addresses that phones use. A known ID wins over the address; an
unknown one is an unknown device (default profile), not the device its address would name.

Pure: the daemon passes the MAC it read from the kernel's neighbour table (`dns/clients.py`);
`explain` and the web UI pass the same, so all of them name the same device.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from filterd.rules.model import Rules


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
        self.by_client_id = {d.client_id: d for d in rules.devices if d.client_id}
        # Most specific network first, so a /32 inside a guest /24 wins.
        self.by_network = sorted((d for d in rules.devices if d.cidr), key=lambda d: -d.cidr.prefixlen)

    def identify(self, ip: str, mac: str | None = None, client_id: str | None = None) -> Identity:
        if client_id is not None:
            device = self.by_client_id.get(client_id)
            if device is None:
                return Identity(None, self.default_profile, mac)
            return Identity(device.name, device.profile, mac)
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


def is_private_mac(mac: str | None) -> bool:
    """Randomised ("private") addresses set the locally administered bit: 2nd hex digit 2, 6, A, E."""
    return bool(mac) and len(mac) >= 2 and mac[1].lower() in "26ae"
