"""filterd.rules.explain: one way to find who asked and why, for the CLI, the log's "why?" and the
block page — the same device the daemon would identify, by name in any case, by IP or by MAC."""
from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest
from dnslib import QTYPE

from filterd.lists.index import DomainIndex
from filterd.rules.config import parse_config, read_yaml
from filterd.rules.explain import UnknownDevice, Who, explain, who_is
from filterd.rules.policy import Override, Policy

CONFIG = """
timezone: Europe/London
dns: {upstreams: ["udp://127.0.0.1:53"]}
profiles:
  kids: {block: [games.example]}
  adults: {}
devices:
  - {name: Mia-Tablet, ip: 192.168.1.23, profile: kids}
  - {name: leo-phone, mac: "aa:bb:cc:dd:ee:ff", profile: kids}
default_profile: adults
"""
NOON = datetime.datetime(2026, 12, 5, 12, 0, tzinfo=ZoneInfo("Europe/London"))


@pytest.fixture(scope="module")
def policy() -> Policy:
    data, lines = read_yaml(CONFIG)
    config = parse_config(data, lines)
    return Policy(config.rules, config.catalog, DomainIndex.empty(), config.timezone)


def test_a_device_known_by_its_mac_is_found_from_its_address_through_the_neighbour_table(policy):
    who, decision = explain(policy, "games.example", QTYPE.A, NOON, ip="192.168.1.80",
                            neighbours={"192.168.1.80": "aa:bb:cc:dd:ee:ff"})
    assert who == Who("leo-phone", "kids", "192.168.1.80", "aa:bb:cc:dd:ee:ff")
    assert decision.blocked and decision.rule == "profile_block"


def test_an_address_nobody_named_gets_the_default_profile(policy):
    who, decision = explain(policy, "games.example", QTYPE.A, NOON, ip="192.168.1.80", neighbours={})
    assert (who.device, who.profile) == (None, "adults") and not decision.blocked
    assert who.describe() == "profile adults"


def test_a_device_name_is_found_whatever_its_case(policy):
    who, decision = explain(policy, "games.example", QTYPE.A, NOON, device="mia-tablet")
    assert who.device == "Mia-Tablet" and who.describe() == "device Mia-Tablet (profile kids)"
    assert decision.blocked


def test_an_unknown_device_name_is_refused_naming_the_known_ones(policy):
    with pytest.raises(UnknownDevice, match=r"no device named 'mia' \(devices: Mia-Tablet, leo-phone\)"):
        who_is(policy.rules, device="mia")


def test_overrides_for_the_device_found_apply(policy):
    allow = (Override("allow", "device", "leo-phone", until=NOON.timestamp() + 3600, value="games.example"),)
    _, decision = explain(policy, "games.example", QTYPE.A, NOON, allow, ip="192.168.1.80",
                          neighbours={"192.168.1.80": "aa:bb:cc:dd:ee:ff"})
    assert decision.rule == "temporary_allow" and not decision.blocked


def test_a_temporary_allow_also_says_what_would_block_the_site_otherwise(policy):
    from filterd.rules.explain import weaker

    allow = (Override("allow", "device", "Mia-Tablet", until=NOON.timestamp() + 3600, value="games.example"),)
    who, decision = explain(policy, "games.example", QTYPE.A, NOON, allow, device="mia-tablet")
    (words, other), = weaker(policy, who, "games.example", QTYPE.A, NOON, decision, allow)
    assert words == "otherwise" and other.blocked and other.rule == "profile_block"
    assert "games.example" in other.reason


def test_a_pause_also_says_what_the_rules_would_say_without_it(policy):
    from filterd.rules.explain import weaker

    pause = (Override("pause", "device", "Mia-Tablet", until=None),)
    who, decision = explain(policy, "news.example", QTYPE.A, NOON, pause, device="mia-tablet")
    assert decision.rule == "pause"
    (words, other), = weaker(policy, who, "news.example", QTYPE.A, NOON, decision, pause)
    assert words == "without the pause" and not other.blocked
    # A decision with nothing behind it says nothing more.
    who, decision = explain(policy, "news.example", QTYPE.A, NOON, (), device="mia-tablet")
    assert weaker(policy, who, "news.example", QTYPE.A, NOON, decision, ()) == []
