"""`filterd/rules/devices.py`: who a device is — source IP (and MAC, when the neighbour table knows
it) → device → profile. Exact IP beats MAC beats network; the most specific network wins; anyone
else gets the default profile. Configs parsed from real YAML."""
from __future__ import annotations

import pytest

from filterd.rules.config import parse_config, read_yaml
from filterd.rules.devices import ClientMap, Identity, is_private_mac

CONFIG = """
timezone: Europe/London
dns: {upstreams: ["udp://127.0.0.1:53"]}
profiles:
  kids: {}
  teens: {}
  guests: {}
  adults: {}
  lab: {}
devices:
  - {name: alice-tablet, ip: 192.168.1.23, profile: kids}
  - {name: bob-phone, mac: "AA-BB-CC-DD-EE-FF", profile: teens}
  - {name: guest-wifi, cidr: 192.168.50.0/24, profile: guests}
  - {name: guest-printer, cidr: 192.168.50.7/32, profile: lab}
  - {name: house, cidr: 192.168.0.0/16, profile: kids}
  - {name: dad-v6, ip: "2001:DB8::10", profile: adults}
  - {name: lab-v6, cidr: "2001:db8:1::/48", profile: lab}
  - {name: emma-phone, client_id: Emma-Phone, profile: teens}
  - {name: kid-laptop, client_id: kid-laptop, ip: 192.168.1.40, profile: kids}
default_profile: adults
"""


@pytest.fixture(scope="module")
def clients() -> ClientMap:
    data, lines = read_yaml(CONFIG)
    return ClientMap(parse_config(data, lines).rules)


@pytest.mark.parametrize("ip, mac, device, profile", [
    ("192.168.1.23", None, "alice-tablet", "kids"),                   # exact IP
    ("192.168.1.23", "aa:bb:cc:dd:ee:ff", "alice-tablet", "kids"),    # exact IP beats MAC
    ("192.168.50.20", "aa:bb:cc:dd:ee:ff", "bob-phone", "teens"),     # MAC beats CIDR
    ("192.168.1.77", "aa:bb:cc:dd:ee:ff", "bob-phone", "teens"),      # MAC, config written with dashes
    ("192.168.50.20", "11:22:33:44:55:66", "guest-wifi", "guests"),   # unknown MAC → CIDR
    ("192.168.50.20", None, "guest-wifi", "guests"),                  # the /24 beats the /16
    ("192.168.50.7", None, "guest-printer", "lab"),                   # the /32 beats the /24
    ("192.168.7.7", None, "house", "kids"),                           # only the /16
    ("10.0.0.5", None, None, "adults"),                               # unknown → default_profile
    ("2001:db8::10", None, "dad-v6", "adults"),                       # IPv6, config written upper case
    ("2001:db8:1::99", None, "lab-v6", "lab"),
    ("2001:db8:2::1", None, None, "adults"),
    ("fe80::1%eth0", None, None, "adults"),                            # scoped link-local: no crash
    ("not an address", None, None, "adults"),
])
def test_identify(clients, ip, mac, device, profile):
    assert clients.identify(ip, mac) == Identity(device, profile, mac)


def test_devices_are_found_by_name_whatever_the_case():
    data, lines = read_yaml(CONFIG)
    rules = parse_config(data, lines).rules
    assert rules.device("alice-tablet").ip == "192.168.1.23"
    assert rules.device("Alice-TABLET").name == "alice-tablet"
    assert rules.device("nobody") is None and rules.device(None) is None
    assert rules.profile_of("BOB-phone") == "teens" and rules.profile_of("nobody") == "adults"


def test_without_devices_everyone_gets_the_default_profile():
    data, lines = read_yaml('dns: {upstreams: ["udp://127.0.0.1:53"]}\nprofiles: {family: {}}\n')
    clients = ClientMap(parse_config(data, lines).rules)
    assert clients.identify("192.168.1.23", "aa:bb:cc:dd:ee:ff") == \
        Identity(None, "family", "aa:bb:cc:dd:ee:ff")


def test_a_device_known_by_mac_only_keeps_its_profile_when_its_address_changes(clients):
    """DHCP hands out another address: the device is still found by its MAC."""
    first = clients.identify("192.168.1.77", "aa:bb:cc:dd:ee:ff")
    second = clients.identify("192.168.1.78", "aa:bb:cc:dd:ee:ff")
    assert (first.device, first.profile) == (second.device, second.profile) == ("bob-phone", "teens")


def test_the_mac_read_is_passed_through_even_for_an_unknown_client(clients):
    assert clients.identify("10.0.0.5", "3a:bb:cc:dd:ee:01") == Identity(None, "adults", "3a:bb:cc:dd:ee:01")


@pytest.mark.parametrize("mac, private", [
    ("3a:bb:cc:dd:ee:01", True),     # 2nd hex digit A: locally administered (a phone's private address)
    ("02:42:ac:11:00:02", True),
    ("F6:00:00:00:00:01", True),     # upper case
    ("de:ad:be:ef:00:01", True),     # E
    ("00:1b:63:00:00:02", False),    # a vendor's (global) address
    ("d8:07:b6:12:34:56", False),
    ("AB:00:00:00:00:00", False),
    (None, False),
    ("", False),
    ("3", False),
])
def test_a_private_mac_is_one_with_the_locally_administered_bit(mac, private):
    assert is_private_mac(mac) is private


@pytest.mark.parametrize("ip, client_id, device, profile", [
    ("192.168.1.23", "emma-phone", "emma-phone", "teens"),    # a known ID beats the address's device
    ("10.0.0.5", "emma-phone", "emma-phone", "teens"),
    ("192.168.1.40", None, "kid-laptop", "kids"),             # beside an ip: the address still names it
    ("10.0.0.5", "kid-laptop", "kid-laptop", "kids"),
    ("192.168.1.23", "stranger", None, "adults"),             # unknown ID: an unknown device, not the address's
    ("192.168.1.23", None, "alice-tablet", "kids"),           # no ID: the address, as before
])
def test_a_client_id_names_its_device_wherever_it_asks_from(clients, ip, client_id, device, profile):
    assert clients.identify(ip, None, client_id) == Identity(device, profile, None)
