"""The kernel's neighbour table (`filterd/dns/clients.py`): the MAC behind a source address, read from
/proc/net/arp or over netlink, so a device known by MAC is found (who it is: test_devices.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_devices import clients  # noqa: F401  (a fixture: the devices of test_devices.CONFIG)

from filterd.dns.clients import parse_arp_table, parse_neighbour_messages, read_neighbours

# A /proc/net/arp as a Raspberry Pi on a home network shows it: complete entries (flags 0x2),
# a permanent one (0x6), an incomplete one (0x0, zero MAC) and a failed one (0x0, stale MAC).
ARP_TABLE = """\
IP address       HW type     Flags       HW address            Mask     Device
192.168.1.1      0x1         0x2         d8:07:b6:12:34:56     *        eth0
192.168.1.23     0x1         0x2         AA:BB:CC:DD:EE:FF     *        wlan0
192.168.1.40     0x1         0x6         02:42:ac:11:00:02     *        eth0
192.168.1.66     0x1         0x0         00:00:00:00:00:00     *        eth0
192.168.1.67     0x1         0x0         3c:22:fb:00:00:01     *        wlan0
192.168.50.9     0x1         0x2         11:22:33:44:55:66     *        wlan0
"""


def test_parse_arp_table_keeps_complete_entries_with_lowercase_macs():
    assert parse_arp_table(ARP_TABLE) == {
        "192.168.1.1": "d8:07:b6:12:34:56",
        "192.168.1.23": "aa:bb:cc:dd:ee:ff",
        "192.168.1.40": "02:42:ac:11:00:02",
        "192.168.50.9": "11:22:33:44:55:66",
    }


def test_parse_arp_table_of_an_empty_table_or_garbage():
    assert parse_arp_table("IP address       HW type     Flags       HW address            Mask     Device\n") == {}
    assert parse_arp_table("") == {}
    assert parse_arp_table("header\nshort line\n\n") == {}


def test_read_neighbours_from_a_file_and_a_missing_one(tmp_path):
    path = tmp_path / "arp"
    path.write_text(ARP_TABLE)
    assert read_neighbours(str(path), netlink=False)["192.168.1.23"] == "aa:bb:cc:dd:ee:ff"
    assert read_neighbours(str(tmp_path / "missing"), netlink=False) == {}


def test_a_device_known_by_mac_is_found_through_the_neighbour_table(clients):  # noqa: F811
    neighbours = parse_arp_table(ARP_TABLE.replace("192.168.1.23 ", "192.168.1.77 "))
    ip = "192.168.1.77"
    assert clients.identify(ip, neighbours.get(ip)).device == "bob-phone"


NEIGHBOURS_IN_A_NAMESPACE = """
set -e
ip link set lo up
ip link add fdtest0 type veth peer name fdtest1
ip link set fdtest1 up
ip link set fdtest0 address 02:00:00:00:00:01 up
ip addr add 192.0.2.1/24 dev fdtest0
ip -6 addr add 2001:db8::1/64 dev fdtest0 nodad
ip neigh add 192.0.2.23 lladdr AA:BB:CC:DD:EE:01 dev fdtest0 nud permanent
ip neigh add 192.0.2.24 dev fdtest0 nud incomplete 2>/dev/null || true
ip -6 neigh add 2001:db8::23 lladdr aa:bb:cc:dd:ee:02 dev fdtest0 nud reachable
ip -6 neigh add fe80::23 lladdr aa:bb:cc:dd:ee:03 dev fdtest0 nud stale
exec "$PYTHON" -c 'import json; from filterd.dns.clients import dump_neighbours; print(json.dumps(dump_neighbours()))'
"""


def test_the_neighbour_table_over_netlink_has_ipv4_and_ipv6_devices_in_a_private_namespace():
    """A real kernel table: a veth interface with neighbours, in a network namespace of its own."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip to make a private network namespace")
    result = subprocess.run(["unshare", "--net", "sh", "-c", NEIGHBOURS_IN_A_NAMESPACE],
                            capture_output=True, text=True, timeout=30,
                            env={**os.environ, "PYTHON": sys.executable}, cwd=Path(__file__).parent.parent)
    if result.returncode != 0 and "Operation not permitted" in result.stderr:
        pytest.skip(f"cannot make a network namespace here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert table["192.0.2.23"] == "aa:bb:cc:dd:ee:01"
    assert table["2001:db8::23"] == "aa:bb:cc:dd:ee:02"
    assert table["fe80::23"] == table["fe80::23%fdtest0"] == "aa:bb:cc:dd:ee:03"
    assert "192.0.2.24" not in table          # incomplete: no MAC to trust


def test_a_truncated_or_refused_netlink_reply_is_not_misread():
    import struct
    header = struct.Struct("=IHHII")
    table: dict[str, str] = {}
    assert parse_neighbour_messages(header.pack(200, 28, 0, 1, 0) + b"\0" * 20, table) is True
    assert table == {}
    refused = header.pack(header.size + 4, 2, 0, 1, 0) + struct.pack("=i", -1)
    with pytest.raises(OSError):
        parse_neighbour_messages(refused, table)
