"""Which device sent a query: the kernel's neighbour table (IP → MAC) for `rules.devices.ClientMap`.

The daemon reads it off the hot path every few seconds; identifying (IP → device, exact IP, then
MAC, then network) is pure and lives with the rules. The table is dumped over rtnetlink (RTM_GETNEIGH), which
has IPv6 neighbours too — a phone on IPv6 is still known by its MAC — with /proc/net/arp
(IPv4 only) as the fallback where netlink is not allowed.
"""
from __future__ import annotations

import ipaddress
import socket
import struct

ARP_TABLE = "/proc/net/arp"


def parse_arp_table(text: str) -> dict[str, str]:
    """IP → MAC from the text of /proc/net/arp (complete entries only)."""
    table = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[2] != "0x0" and fields[3] != "00:00:00:00:00:00":
            table[fields[0]] = fields[3].lower()
    return table


def read_neighbours(path: str = ARP_TABLE, netlink: bool = True) -> dict[str, str]:
    """IP → MAC of the hosts the kernel knows on the LAN (IPv4 and IPv6; from `path`, IPv4
    only, when netlink is off or refused)."""
    if netlink:
        try:
            return dump_neighbours()
        except OSError:
            pass
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return parse_arp_table(f.read())
    except OSError:
        return {}


# rtnetlink (linux/rtnetlink.h, linux/neighbour.h)
_NETLINK_ROUTE = 0
_RTM_NEWNEIGH, _RTM_GETNEIGH = 28, 30
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NDA_DST, _NDA_LLADDR = 1, 2
_NUD_INCOMPLETE, _NUD_FAILED, _NUD_NOARP = 0x01, 0x20, 0x40
_HEADER = struct.Struct("=IHHII")       # nlmsghdr
_NDMSG = struct.Struct("=BxxxiHBB")     # ndmsg: family, ifindex, state, flags, type


def dump_neighbours(timeout_s: float = 1.0) -> dict[str, str]:
    """The kernel's neighbour table over rtnetlink; raises OSError when netlink is refused."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE) as sock:
        sock.settimeout(timeout_s)
        sock.bind((0, 0))
        request = _NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        sock.send(_HEADER.pack(_HEADER.size + len(request), _RTM_GETNEIGH, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
                  + request)
        table: dict[str, str] = {}
        while True:
            data = sock.recv(65536)
            done = parse_neighbour_messages(data, table)
            if done:
                return table


def parse_neighbour_messages(data: bytes, table: dict[str, str]) -> bool:
    """Add the complete entries of one netlink read to `table`; True at the end of the dump.

    IPv6 link-local addresses are entered also with their zone ("fe80::1%eth0"), the form a
    socket reports for such a peer."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size or offset + length > len(data):
            return True                       # malformed: stop rather than misread
        if kind == _NLMSG_DONE:
            return True
        if kind == _NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, offset + _HEADER.size)
            if code:
                raise OSError(-code, "netlink neighbour dump refused")
            return True
        if kind == _RTM_NEWNEIGH and length >= _HEADER.size + _NDMSG.size:
            family, ifindex, state, _, _ = _NDMSG.unpack_from(data, offset + _HEADER.size)
            attributes = _attributes(data, offset + _HEADER.size + _NDMSG.size, offset + length)
            dst, mac = attributes.get(_NDA_DST), attributes.get(_NDA_LLADDR)
            usable = not state & (_NUD_INCOMPLETE | _NUD_FAILED | _NUD_NOARP)
            if usable and dst and mac and len(mac) == 6 and any(mac):
                mac_text = ":".join(f"{b:02x}" for b in mac)
                if family == socket.AF_INET and len(dst) == 4:
                    table[str(ipaddress.IPv4Address(dst))] = mac_text
                elif family == socket.AF_INET6 and len(dst) == 16:
                    address = ipaddress.IPv6Address(dst)
                    table[str(address)] = mac_text
                    if address.is_link_local:
                        try:
                            table[f"{address}%{socket.if_indextoname(ifindex)}"] = mac_text
                        except OSError:
                            pass
        offset += (length + 3) & ~3
    return False


def _attributes(data: bytes, start: int, end: int) -> dict[int, bytes]:
    found = {}
    while start + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, start)
        if length < 4 or start + length > end:
            break
        found[kind & 0x7FFF] = data[start + 4:start + length]
        start += (length + 3) & ~3
    return found
